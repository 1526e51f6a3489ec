/**
 * The recsvc HTTP API's request and response types, written by hand from the OpenAPI document the service
 * serves at `/openapi.json` (components.schemas; DESIGN section 7).
 *
 * Field names, required-ness and nullability follow the document exactly. {@link SCHEMA_FIELDS} spells the
 * same facts out as runtime values; the compiler checks them against these interfaces and the client's tests
 * compare them with the live document, so the types cannot silently drift from the API.
 */

/** `PostMetadata`: what the feed tells the backend about a post. */
export interface PostMetadata {
  tags: string[];
  communityId: string;
}

/** `Recommendation`: one post of a feed page. */
export interface Recommendation {
  post_id: string;
  /**
   * Why the post is where it is, on a scale that depends on the page's `strategy`: for `personalized` and
   * `features`, LightFM's raw prediction (any real number, such as 3.9 or -44.3, scaled by each trained
   * model; 0 for a `fresh` post the model cannot score); for `popular`, the number of distinct users who
   * interacted with the post (such as 114.0). Order by `rank`. Not comparable across users, strategies or
   * model versions; not a probability, not bounded.
   */
  score: number;
  /** 1-based position in the whole feed. */
  rank: number;
  /** true for a post written after the model's data were read (scored from its tags and community). */
  fresh: boolean;
  metadata: PostMetadata;
}

/** `Pagination` of a feed page. */
export interface Pagination {
  /** Number of posts in the whole feed (at most MAX_FEED_POSTS). */
  total: number;
  limit: number;
  offset: number;
  has_more: boolean;
  /** null on the last page. */
  next_offset: number | null;
}

/** `Recommendations`: the body of `GET /recommendations/{user_id}`. */
export interface RecommendationsPage {
  user_id: string;
  /** The model version the page comes from. */
  model_version: string;
  /**
   * Pass back as `token` to keep paging on this scroll: it pins the model version, the live pool and the
   * user's exclusions as of the first page, so no post is shown twice or skipped. Opaque.
   */
  token: string;
  /**
   * `personalized`: a user the model knows; `features`: a user new since the last training, ranked from its
   * role and follows; `popular`: a user with neither.
   */
  strategy: 'personalized' | 'features' | 'popular';
  /**
   * The model family that ranked the page, chosen by the service's model search: `lightfm` (the default), `als`
   * or `blend`. With `strategy` `popular` the page is ranked by popularity whatever the family.
   */
  model_family: 'lightfm' | 'als' | 'blend';
  /** `cache`: the precomputed list; `model`: computed by the web worker. */
  source: 'cache' | 'model';
  /** true when the pin (`token` or `version`) could not be honoured and a fresh scroll was served instead. */
  version_fallback: boolean;
  recommendations: Recommendation[];
  pagination: Pagination;
  /** The running A/B experiment (the service's EXPERIMENT), or null. */
  experiment: string | null;
  /** The user's variant in it (a hash of the experiment and the user id: sticky), or null. */
  variant: string | null;
  /** true when the variant's own model is not served and the production model answered. */
  variant_fallback: boolean;
}

/** `SimilarPost`: one post of a similar-posts page. */
export interface SimilarPost {
  post_id: string;
  /**
   * `similar`: the cosine of the two posts' representations in the model, -1 to 1. `community_popular`: the
   * number of distinct users who interacted with the post (0 for a `fresh` one). Order by `rank`: with
   * `user_id` the best neighbours are re-ordered for the user and keep their cosine.
   */
  score: number;
  /** 1-based position in the whole list. */
  rank: number;
  /** true for a post written after the model's data were read (placed by its tags and community). */
  fresh: boolean;
  metadata: PostMetadata;
}

/** `SimilarPosts`: the body of `GET /posts/{post_id}/similar`. */
export interface SimilarPostsPage {
  /** The post whose neighbours these are (never one of them). */
  post_id: string;
  /** The user they were re-ranked for, or null. */
  user_id: string | null;
  model_version: string;
  /** Pass back as `token` to keep paging on this list. Opaque. */
  token: string;
  /**
   * `similar`: by cosine with the post; `community_popular`: the model cannot place the post (a fresh post none
   * of whose tags or community it knows), so these are the popular posts of its community.
   */
  strategy: 'similar' | 'community_popular';
  source: 'model';
  /** true when the token's list could not be kept and a fresh one began. */
  version_fallback: boolean;
  recommendations: SimilarPost[];
  pagination: Pagination;
}

/** `ModelCheck` of the health answer. */
export interface ModelCheck {
  ok: boolean;
  required: boolean;
  version?: string | null;
  /** Seconds since the model was trained. */
  age_seconds?: number | null;
  error?: string | null;
}

/** `Dependency`: the state of Redis or PostgreSQL in the health answer. */
export interface Dependency {
  ok: boolean;
  /** Whether serving depends on it. */
  required: boolean;
  latency_ms?: number | null;
  error?: string | null;
}

/** `HealthChecks`. */
export interface HealthChecks {
  model: ModelCheck;
  redis: Dependency;
  /** Information only: PostgreSQL is needed by training, not by serving. */
  postgres: Dependency;
}

/** `Health`: the body of `GET /health` (200 when the service can serve, 503 when it cannot). */
export interface Health {
  /** `degraded`: serving from the model without Redis; `unavailable`: no model. */
  status: 'ok' | 'degraded' | 'unavailable';
  checks: HealthChecks;
}

/** `ReloadDetails`. */
export interface ReloadDetails {
  reloaded: boolean;
  reason: string;
  previous_version?: string | null;
  current_version?: string | null;
  /** ISO 8601. */
  previous_reload_time?: string | null;
  /** ISO 8601. */
  current_reload_time?: string | null;
  num_users?: number | null;
  num_items?: number | null;
}

/** `Reload`: the body of `POST /admin/reload-model` (200, or 500 with `success: false`). */
export interface Reload {
  success: boolean;
  message: string;
  details: ReloadDetails;
}

/** `ModelStatus`: the body of `GET /admin/model-status` (answered by one web worker). */
export interface ModelStatus {
  /** The web worker that answered. */
  worker_pid: number;
  version?: string | null;
  created_at?: string | null;
  loaded_at?: string | null;
  age_seconds?: number | null;
  num_users?: number | null;
  num_items?: number | null;
  /** Offline evaluation of this model. */
  metrics?: Record<string, unknown> | null;
  /** The current version in Redis. */
  cache_version?: string | null;
  /** The last failed load, if any. */
  last_load_error?: Record<string, unknown> | null;
  last_training_outcome?: Record<string, unknown> | null;
  /** The model family of the held version: `lightfm`, `als` or `blend`. */
  model_family?: string | null;
  /**
   * The last model search (tasks.search) without its trials: `searched_at`, `seconds`, `budget`, `pinned`,
   * `trials` (counts by state), `adopted`, `reason`, `chosen`, `best_family`, `best_holdout`,
   * `current_holdout`, `families`; null before the first.
   */
  search?: Record<string, unknown> | null;
  /**
   * Online click-through of the production model: `daily` [{day, impressions, clicks, ctr}], `ctr_today`,
   * `ctr_trailing_week`, `drop_fraction`, `alert`; null until the first online report.
   */
  online?: Record<string, unknown> | null;
}

/** `VariantSpec`: one declared variant of the running experiment. */
export interface VariantSpec {
  name: string;
  share: number;
  ranking: 'production' | 'popular' | 'model';
  /** Training variables of a `model` variant (empty for the others). */
  training: Record<string, string>;
}

/** `ExperimentSpec`: the running experiment as declared. */
export interface ExperimentSpec {
  name: string;
  control: string;
  variants: VariantSpec[];
}

/** `Experiments`: the body of `GET /admin/experiments`. */
export interface Experiments {
  /** The running experiment, or null. */
  configured?: ExperimentSpec | null;
  /**
   * The last report: `name`, `control` and `days` (newest first) of {day, variants: [{variant, impressions,
   * users, clicks, ctr, vs_control}]}; `clicks`/`ctr` by `view`, `like`, `comment` and `any`; `vs_control` by
   * type: {relative_difference, ci_low, ci_high, p_value, p_value_pooled} or null. null before the first report.
   */
  report?: Record<string, unknown> | null;
  /** When the report was computed (ISO 8601). */
  computed_at?: string | null;
  attribution_window_hours?: number | null;
  /** Served pages in Redis not yet moved to PostgreSQL. */
  served_backlog?: number | null;
}

/** `Error`: the inside of every error answer. */
export interface ApiError {
  /** Machine-readable error code, e.g. `invalid_arguments`, `model_unavailable`, `admin_disabled`. */
  code: string;
  /** What went wrong, for humans. */
  message: string;
  /** Structured details, e.g. `{"fields": {"query": {"limit": ["..."]}}}`. */
  details: Record<string, unknown>;
}

/** `ErrorResponse`: the one shape of every error answer. */
export interface ErrorResponse {
  error: ApiError;
}

/** Query of `GET /recommendations/{user_id}`. */
export interface PageQuery {
  /** Page size, 1..MAX_PAGE_LIMIT (the server's default page size when omitted). */
  limit?: number;
  /** Position of the page's first item (default 0); past the end gives an empty page. */
  offset?: number;
  /** Keep paging on the scroll of an earlier page (its `token`). */
  token?: string;
  /** Keep paging on this model version only (earlier clients; `token` pins more). With `token`, the same version. */
  version?: string;
  /**
   * Posts the client already shows (up to 200 ids, none holding a comma): skipped, their positions kept, so
   * `next_offset` stays exact. Sent comma-separated.
   */
  exclude?: string[];
  /**
   * Only posts of these communities (ids; any of them): up to 20 values of 1 to 128 characters, none holding a
   * comma. Sent comma-separated. An unknown community matches nothing (an empty feed, not an error).
   */
  community?: string[];
  /** Only posts carrying one of these tags (bounds as `community`). With `community`, a post must pass both. */
  tag?: string[];
}

/** Query of `GET /posts/{post_id}/similar`. */
export interface SimilarQuery {
  /** Page size, 1..MAX_PAGE_LIMIT (the server's default page size when omitted). */
  limit?: number;
  /** Position of the page's first item (default 0). */
  offset?: number;
  /** Keep paging on the list of an earlier page (its `token`). */
  token?: string;
  /** Re-rank the neighbours for this user and leave out the posts it interacted with. */
  user_id?: string;
}

/** `Event`: something a user did with a post, reported with `POST /events`. */
export interface FeedEvent {
  user_id: string;
  post_id: string;
  /** `view`, `like`, `comment`: the post leaves the user's next feeds; `impression`: demoted or hidden. */
  type: 'view' | 'like' | 'comment' | 'impression';
  /** ISO 8601. */
  created_at: string;
}

/** `EventBatch`: the body of `POST /events` (1 to 1,000 events, recorded all together or not at all). */
export interface EventBatch {
  events: FeedEvent[];
}

/** `EventsRecorded`: the answer of `POST /events`. */
export interface EventsRecorded {
  recorded: number;
  /** When they arrived (ISO 8601). */
  arrived_at: string;
}

// --- the same facts as values, checked against the interfaces above by the compiler ---

type RequiredKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? never : K }[keyof T];
type NullableKeys<T> = { [K in keyof T]-?: null extends T[K] ? K : never }[keyof T];
/** `A` if its elements are exactly the union `U` (none missing, none extra), else `never`. */
type ExactlyAll<U, A extends readonly unknown[]> = [U] extends [A[number]]
  ? [A[number]] extends [U]
    ? A
    : never
  : never;

/** The property names, the required ones and the nullable ones of a schema, as the OpenAPI document states them. */
export interface SchemaFields {
  readonly properties: readonly string[];
  readonly required: readonly string[];
  readonly nullable: readonly string[];
}

/**
 * Builds a {@link SchemaFields} for interface `T`: it compiles only if each list names exactly the keys of `T`
 * (all of them / the non-optional ones / the ones that admit null).
 */
function schemaFields<T>() {
  return <
    const P extends readonly (keyof T & string)[],
    const R extends readonly (keyof T & string)[],
    const N extends readonly (keyof T & string)[],
  >(
    properties: ExactlyAll<keyof T, P>,
    required: ExactlyAll<RequiredKeys<T>, R>,
    nullable: ExactlyAll<NullableKeys<T>, N>,
  ): SchemaFields => ({ properties, required, nullable });
}

/** Every schema of the OpenAPI document this client uses, by its name in `components.schemas`. */
export const SCHEMA_FIELDS: Readonly<Record<string, SchemaFields>> = {
  PostMetadata: schemaFields<PostMetadata>()(['tags', 'communityId'], ['tags', 'communityId'], []),
  Recommendation: schemaFields<Recommendation>()(
    ['post_id', 'score', 'rank', 'fresh', 'metadata'],
    ['post_id', 'score', 'rank', 'fresh', 'metadata'],
    [],
  ),
  Pagination: schemaFields<Pagination>()(
    ['total', 'limit', 'offset', 'has_more', 'next_offset'],
    ['total', 'limit', 'offset', 'has_more', 'next_offset'],
    ['next_offset'],
  ),
  Recommendations: schemaFields<RecommendationsPage>()(
    [
      'user_id',
      'model_version',
      'model_family',
      'token',
      'strategy',
      'source',
      'version_fallback',
      'recommendations',
      'pagination',
      'experiment',
      'variant',
      'variant_fallback',
    ],
    [
      'user_id',
      'model_version',
      'model_family',
      'token',
      'strategy',
      'source',
      'version_fallback',
      'recommendations',
      'pagination',
      'experiment',
      'variant',
      'variant_fallback',
    ],
    ['experiment', 'variant'],
  ),
  SimilarPost: schemaFields<SimilarPost>()(
    ['post_id', 'score', 'rank', 'fresh', 'metadata'],
    ['post_id', 'score', 'rank', 'fresh', 'metadata'],
    [],
  ),
  SimilarPosts: schemaFields<SimilarPostsPage>()(
    [
      'post_id',
      'user_id',
      'model_version',
      'token',
      'strategy',
      'source',
      'version_fallback',
      'recommendations',
      'pagination',
    ],
    [
      'post_id',
      'user_id',
      'model_version',
      'token',
      'strategy',
      'source',
      'version_fallback',
      'recommendations',
      'pagination',
    ],
    ['user_id'],
  ),
  Event: schemaFields<FeedEvent>()(
    ['user_id', 'post_id', 'type', 'created_at'],
    ['user_id', 'post_id', 'type', 'created_at'],
    [],
  ),
  EventBatch: schemaFields<EventBatch>()(['events'], ['events'], []),
  EventsRecorded: schemaFields<EventsRecorded>()(['recorded', 'arrived_at'], ['recorded', 'arrived_at'], []),
  ModelCheck: schemaFields<ModelCheck>()(
    ['ok', 'required', 'version', 'age_seconds', 'error'],
    ['ok', 'required'],
    ['version', 'age_seconds', 'error'],
  ),
  Dependency: schemaFields<Dependency>()(
    ['ok', 'required', 'latency_ms', 'error'],
    ['ok', 'required'],
    ['latency_ms', 'error'],
  ),
  HealthChecks: schemaFields<HealthChecks>()(['model', 'redis', 'postgres'], ['model', 'redis', 'postgres'], []),
  Health: schemaFields<Health>()(['status', 'checks'], ['status', 'checks'], []),
  ReloadDetails: schemaFields<ReloadDetails>()(
    [
      'reloaded',
      'reason',
      'previous_version',
      'current_version',
      'previous_reload_time',
      'current_reload_time',
      'num_users',
      'num_items',
    ],
    ['reloaded', 'reason'],
    ['previous_version', 'current_version', 'previous_reload_time', 'current_reload_time', 'num_users', 'num_items'],
  ),
  Reload: schemaFields<Reload>()(['success', 'message', 'details'], ['success', 'message', 'details'], []),
  ModelStatus: schemaFields<ModelStatus>()(
    [
      'worker_pid',
      'version',
      'created_at',
      'loaded_at',
      'age_seconds',
      'num_users',
      'num_items',
      'metrics',
      'cache_version',
      'last_load_error',
      'last_training_outcome',
      'model_family',
      'search',
      'online',
    ],
    ['worker_pid'],
    [
      'version',
      'created_at',
      'loaded_at',
      'age_seconds',
      'num_users',
      'num_items',
      'metrics',
      'cache_version',
      'last_load_error',
      'last_training_outcome',
      'model_family',
      'search',
      'online',
    ],
  ),
  VariantSpec: schemaFields<VariantSpec>()(
    ['name', 'share', 'ranking', 'training'],
    ['name', 'share', 'ranking', 'training'],
    [],
  ),
  ExperimentSpec: schemaFields<ExperimentSpec>()(['name', 'control', 'variants'], ['name', 'control', 'variants'], []),
  Experiments: schemaFields<Experiments>()(
    ['configured', 'report', 'computed_at', 'attribution_window_hours', 'served_backlog'],
    [],
    ['configured', 'report', 'computed_at', 'attribution_window_hours', 'served_backlog'],
  ),
  Error: schemaFields<ApiError>()(['code', 'message', 'details'], ['code', 'message', 'details'], []),
  ErrorResponse: schemaFields<ErrorResponse>()(['error'], ['error'], []),
};

/** Enumerated string fields, by `schema.property`, as the OpenAPI document lists them. */
export const SCHEMA_ENUMS: Readonly<Record<string, readonly string[]>> = {
  'Recommendations.strategy': ['personalized', 'features', 'popular'] satisfies RecommendationsPage['strategy'][],
  'Event.type': ['view', 'like', 'comment', 'impression'] satisfies FeedEvent['type'][],
  'VariantSpec.ranking': ['production', 'popular', 'model'] satisfies VariantSpec['ranking'][],
  'Recommendations.source': ['cache', 'model'] satisfies RecommendationsPage['source'][],
  'Recommendations.model_family': ['lightfm', 'als', 'blend'] satisfies RecommendationsPage['model_family'][],
  'Health.status': ['ok', 'degraded', 'unavailable'] satisfies Health['status'][],
  'SimilarPosts.strategy': ['similar', 'community_popular'] satisfies SimilarPostsPage['strategy'][],
  'SimilarPosts.source': ['model'] satisfies SimilarPostsPage['source'][],
};

/** The query parameters of `GET /recommendations/{user_id}`, checked against {@link PageQuery} by the compiler. */
export const PAGE_QUERY_PARAMS: readonly string[] = (<const A extends readonly (keyof PageQuery)[]>(
  names: ExactlyAll<keyof PageQuery, A>,
) => names)(['limit', 'offset', 'token', 'version', 'exclude', 'community', 'tag']);

/** The query parameters of `GET /posts/{post_id}/similar`, checked against {@link SimilarQuery} by the compiler. */
export const SIMILAR_QUERY_PARAMS: readonly string[] = (<const A extends readonly (keyof SimilarQuery)[]>(
  names: ExactlyAll<keyof SimilarQuery, A>,
) => names)(['limit', 'offset', 'token', 'user_id']);
