/**
 * `RecommendationsService`: the recsvc HTTP API as typed methods, on @nestjs/axios' `HttpService`.
 *
 * Every request has a deadline (`timeoutMs`). A 503 (no model yet, or a worker briefly unable to serve) is
 * retried with exponential backoff, honouring `Retry-After`, and so are GETs that timed out or could not
 * connect; once the retries are spent, or for any other error status, the DESIGN error payload becomes a typed
 * exception (see errors.ts). Scrolling a whole feed passes each page's `token` back, so every page comes from
 * one scroll even when a model is published, the live feed refreshed or events reported mid-scroll.
 */

import { HttpService } from '@nestjs/axios';
import { Inject, Injectable, Logger } from '@nestjs/common';
import { AxiosError, type AxiosResponse, type Method } from 'axios';
import { firstValueFrom } from 'rxjs';

import {
  RecsvcBadRequestError,
  RecsvcClientError,
  RecsvcConnectionError,
  RecsvcError,
  type RecsvcErrorInit,
  RecsvcForbiddenError,
  RecsvcNotFoundError,
  RecsvcRateLimitedError,
  RecsvcReloadFailedError,
  RecsvcServerError,
  RecsvcTimeoutError,
  RecsvcUnauthorizedError,
  RecsvcUnavailableError,
} from './errors';
import { RECOMMENDATIONS_OPTIONS, type ResolvedRecommendationsOptions } from './options';
import type {
  ErrorResponse,
  EventsRecorded,
  Experiments,
  FeedEvent,
  Health,
  ModelStatus,
  PageQuery,
  Recommendation,
  RecommendationsPage,
  Reload,
  SimilarPostsPage,
  SimilarQuery,
} from './types';

/** Per-call options every method accepts. */
export interface CallOptions {
  /** Sent as `X-Request-ID`, so the call can be found in the service's logs (the service makes one up otherwise). */
  requestId?: string;
}

/** Options of {@link RecommendationsService.scrollFeed} and {@link RecommendationsService.fetchFeed}. */
export interface ScrollOptions extends CallOptions {
  /** Items per request (default: the module's `pageSize`). */
  pageSize?: number;
  /** Stop after this many items (default: the whole feed, at most the service's MAX_FEED_POSTS). */
  maxItems?: number;
  /** Continue the scroll of this token (default: a new scroll, pinned by its first page's token). */
  token?: string;
  /** Where to start: with `token`, the `next_offset` the scroll stopped at (a Feed's `next_offset`); default 0. */
  offset?: number;
  /** Posts the client already shows: left out of every page (positions kept). */
  exclude?: string[];
  /** Only posts of these communities (a community's feed). */
  community?: string[];
  /** Only posts carrying one of these tags (a tag's feed). */
  tag?: string[];
}

/** Options of {@link RecommendationsService.scrollSimilar}. */
export interface SimilarScrollOptions extends CallOptions {
  /** Items per request (default: the module's `pageSize`). */
  pageSize?: number;
  /** Stop after this many items (default: the whole list, at most the service's MAX_FEED_POSTS). */
  maxItems?: number;
  /** Continue the list of this token (default: a new one, pinned by its first page's token). */
  token?: string;
  /** Where to start: with `token`, the `next_offset` the list stopped at; default 0. */
  offset?: number;
  /** Re-rank the neighbours for this user and leave out what it interacted with. */
  userId?: string;
}

/** A whole feed, as {@link RecommendationsService.fetchFeed} collects it. */
export interface Feed {
  user_id: string;
  /** The version of the last page (the first page's, unless its pin expired mid-scroll). */
  model_version: string;
  /** The token of the last page: pass it as `token`, with `next_offset` as `offset`, to continue this scroll later. */
  token: string;
  /** Where the scroll goes on (the last page's `pagination.next_offset`; null at the feed's end). */
  next_offset: number | null;
  strategy: RecommendationsPage['strategy'];
  /** The last page's model family and source. */
  model_family: RecommendationsPage['model_family'];
  source: RecommendationsPage['source'];
  /** The running experiment and the user's variant (null when none): log them with the user's clicks. */
  experiment: string | null;
  variant: string | null;
  /** true if any page was served by the production model instead of the variant's own. */
  variant_fallback: boolean;
  /** true if the pin expired mid-scroll and later pages came from a fresh scroll. */
  version_fallback: boolean;
  /** Every post once, in feed order (a post met again after a version fallback is skipped). */
  recommendations: Recommendation[];
}

const MAX_ID_LENGTH = 128; // DESIGN section 3

interface RequestSpec {
  method: Method;
  path: string;
  params?: Record<string, string | number | undefined>;
  /** A JSON body. */
  body?: unknown;
  /** Which bearer token to send. */
  auth?: 'admin' | 'events';
  /** Whether a 503 is worth retrying (not for /health, whose 503 is an answer). */
  retry503?: boolean;
  call?: CallOptions;
}

@Injectable()
export class RecommendationsService {
  private readonly logger = new Logger(RecommendationsService.name);

  constructor(
    private readonly http: HttpService,
    @Inject(RECOMMENDATIONS_OPTIONS) private readonly options: ResolvedRecommendationsOptions,
  ) {}

  /**
   * One page of a user's feed: `GET /recommendations/{user_id}?limit&offset[&token][&version][&exclude]`, or of
   * its community or tag feed with `community` / `tag` (`[&community=C1,C2][&tag=T1,T2]`).
   */
  async getRecommendations(userId: string, query: PageQuery = {}, call?: CallOptions): Promise<RecommendationsPage> {
    checkPathId('user_id', userId);
    const response = await this.request<RecommendationsPage>({
      method: 'GET',
      path: `/recommendations/${encodeURIComponent(userId)}`,
      params: {
        limit: query.limit,
        offset: query.offset,
        token: query.token,
        version: query.version,
        exclude: query.exclude?.length ? query.exclude.join(',') : undefined,
        community: query.community?.length ? query.community.join(',') : undefined,
        tag: query.tag?.length ? query.tag.join(',') : undefined,
      },
      call,
    });
    return expectOk(response);
  }

  /**
   * One page of the posts most similar to a post: `GET /posts/{post_id}/similar?limit&offset[&token][&user_id]`.
   * An unknown post is a typed 404 (`post_not_found`).
   */
  async getSimilarPosts(postId: string, query: SimilarQuery = {}, call?: CallOptions): Promise<SimilarPostsPage> {
    checkPathId('post_id', postId);
    if (query.user_id !== undefined) {
      checkPathId('user_id', query.user_id);
    }
    const response = await this.request<SimilarPostsPage>({
      method: 'GET',
      path: `/posts/${encodeURIComponent(postId)}/similar`,
      params: { limit: query.limit, offset: query.offset, token: query.token, user_id: query.user_id },
      call,
    });
    return expectOk(response);
  }

  /**
   * Every page of a post's similar posts, in order ("more like this" with infinite scroll): each page's `token`
   * is passed back, so no post repeats or is skipped whatever is trained or refreshed meanwhile.
   */
  async *scrollSimilar(
    postId: string,
    options: SimilarScrollOptions = {},
  ): AsyncGenerator<SimilarPostsPage, void, undefined> {
    yield* this.scrollPages(
      (page) => this.getSimilarPosts(postId, { ...page, user_id: options.userId }, options),
      options,
    );
  }

  /**
   * Every page of a user's feed, in order, for infinite scroll. Each page's `token` is passed back on the next
   * request, so no post is shown twice or skipped whatever is trained, refreshed or reported mid-scroll. If
   * the pin expired (the page says `version_fallback: true`), the scroll continues on the fresh scroll the
   * service switched to. Positions count excluded posts, so the scroll follows `next_offset`, not `limit`.
   */
  async *scrollFeed(userId: string, options: ScrollOptions = {}): AsyncGenerator<RecommendationsPage, void, undefined> {
    const filters = { exclude: options.exclude, community: options.community, tag: options.tag };
    yield* this.scrollPages((page) => this.getRecommendations(userId, { ...page, ...filters }, options), options);
  }

  /**
   * The pages of one scroll, fetched by `fetchPage`: each request passes back the previous page's `token` and
   * starts at its `next_offset`, until the list ends, stops advancing, or `maxItems` posts were yielded.
   */
  private async *scrollPages<P extends RecommendationsPage | SimilarPostsPage>(
    fetchPage: (page: { limit: number; offset: number; token?: string }) => Promise<P>,
    options: { pageSize?: number; maxItems?: number; token?: string; offset?: number },
  ): AsyncGenerator<P, void, undefined> {
    const pageSize = options.pageSize ?? this.options.pageSize;
    const maxItems = options.maxItems ?? Number.POSITIVE_INFINITY;
    let token = options.token;
    let offset = options.offset ?? 0;
    let items = 0;
    while (items < maxItems) {
      const page = await fetchPage({ limit: Math.min(pageSize, maxItems - items), offset, token });
      yield page;
      items += page.recommendations.length;
      token = page.token;
      const next = page.pagination.next_offset;
      if (!page.pagination.has_more || next === null || next <= offset) {
        return;
      }
      offset = next;
    }
  }

  /** A user's whole feed (or its first `maxItems`), collected with {@link scrollFeed}. */
  async fetchFeed(userId: string, options: ScrollOptions = {}): Promise<Feed> {
    const seen = new Set<string>();
    let feed: Feed | undefined;
    for await (const page of this.scrollFeed(userId, options)) {
      const { model_version, token, strategy, model_family, source, experiment, variant } = page;
      const next_offset = page.pagination.has_more ? page.pagination.next_offset : null;
      const last = { model_version, token, next_offset, strategy, model_family, source, experiment, variant };
      feed ??= { user_id: page.user_id, ...last, version_fallback: false, variant_fallback: false, recommendations: [] };
      Object.assign(feed, last);
      feed.version_fallback ||= page.version_fallback;
      feed.variant_fallback ||= page.variant_fallback;
      for (const item of page.recommendations) {
        if (!seen.has(item.post_id)) {
          seen.add(item.post_id);
          feed.recommendations.push(item);
        }
      }
    }
    if (feed === undefined) {
      throw new Error('recsvc client: fetchFeed read no page (maxItems must be at least 1)');
    }
    return feed;
  }

  /**
   * `GET /health`. Resolves with the body both when the service can serve (200: `ok`, `degraded`) and when it
   * cannot (503: `unavailable`), without retrying: a 503 here is an answer, not a failure. Throws only when
   * no health answer arrives (timeout, connection error, an unexpected status).
   */
  async health(call?: CallOptions): Promise<Health> {
    const response = await this.request<Health>({ method: 'GET', path: '/health', retry503: false, call });
    if ((response.status === 200 || response.status === 503) && isObject(response.data) && 'status' in response.data) {
      return response.data;
    }
    throw toError(response, response.attempts);
  }

  /**
   * `POST /events` (events token): report what users did with posts; their next feeds reflect it within a
   * second. The batch (1 to 1,000 events) is recorded whole, or refused whole with a typed 400 whose
   * `details.fields.json` names each bad entry (`events[3].type`). Sending a batch again is harmless.
   */
  async events(events: FeedEvent[], call?: CallOptions): Promise<EventsRecorded> {
    const response = await this.request<EventsRecorded>({
      method: 'POST',
      path: '/events',
      body: { events },
      auth: 'events',
      call,
    });
    return expectOk(response);
  }

  /** `POST /admin/reload-model` (admin token): make the worker that answers load the published model now. */
  async reloadModel(call?: CallOptions): Promise<Reload> {
    const response = await this.request<Reload>({ method: 'POST', path: '/admin/reload-model', auth: 'admin', call });
    const body: unknown = response.data;
    if (response.status === 500 && isObject(body) && body.success === false) {
      const result = body as Reload;
      throw new RecsvcReloadFailedError(`recsvc: model reload failed: ${result.message}`, {
        status: 500,
        code: 'reload_failed',
        details: { ...result.details },
        requestId: requestIdOf(response),
        attempts: response.attempts,
        result,
      });
    }
    return expectOk(response);
  }

  /** `GET /admin/model-status` (admin token): the model the answering worker serves, and the last training outcome. */
  async modelStatus(call?: CallOptions): Promise<ModelStatus> {
    return expectOk(
      await this.request<ModelStatus>({ method: 'GET', path: '/admin/model-status', auth: 'admin', call }),
    );
  }

  /**
   * `GET /admin/experiments` (admin token): the running A/B experiment and its last online report (click-through
   * per variant per day against the control, with a 95% interval and a p-value).
   */
  async experiments(call?: CallOptions): Promise<Experiments> {
    return expectOk(
      await this.request<Experiments>({ method: 'GET', path: '/admin/experiments', auth: 'admin', call }),
    );
  }

  /**
   * Sends one request, repeating it after a 503 (and, for GETs, after a timeout or connection error) with
   * exponential backoff. Resolves with the last answer whatever its status (callers map it); rejects with a
   * typed timeout or connection error when no answer arrived.
   */
  private async request<T>(spec: RequestSpec): Promise<AxiosResponse<T | ErrorResponse> & { attempts: number }> {
    const { retries, timeoutMs, baseUrl } = this.options;
    const headers: Record<string, string> = { Accept: 'application/json' };
    const bearer = spec.auth === 'admin' ? this.options.adminToken : spec.auth === 'events' ? this.options.eventsToken : undefined;
    if (bearer) {
      headers.Authorization = `Bearer ${bearer}`;
    }
    if (spec.call?.requestId) {
      headers['X-Request-ID'] = spec.call.requestId;
    }
    const params = Object.fromEntries(Object.entries(spec.params ?? {}).filter(([, v]) => v !== undefined));
    for (let attempt = 1; ; attempt++) {
      let response: AxiosResponse<T | ErrorResponse>;
      try {
        response = await firstValueFrom(
          this.http.request<T | ErrorResponse>({
            method: spec.method,
            baseURL: baseUrl,
            url: spec.path,
            params,
            data: spec.body,
            headers,
            timeout: timeoutMs,
            // axios' timeout covers the response; the signal bounds the whole request, connecting included.
            signal: AbortSignal.timeout(timeoutMs),
            responseType: 'json',
            validateStatus: () => true,
          }),
        );
      } catch (error) {
        const failure = networkError(error, spec, timeoutMs, attempt);
        if (spec.method === 'GET' && this.options.retryNetworkErrors && attempt <= retries) {
          await this.backoff(attempt, undefined, `${spec.method} ${spec.path}: ${failure.message}`);
          continue;
        }
        throw failure;
      }
      if (response.status === 503 && spec.retry503 !== false && attempt <= retries) {
        await this.backoff(attempt, retryAfterSeconds(response), `${spec.method} ${spec.path} answered 503`);
        continue;
      }
      return Object.assign(response, { attempts: attempt });
    }
  }

  /** Waits before attempt `attempt + 1`: `Retry-After` if the server sent one, else exponential backoff. */
  private async backoff(attempt: number, retryAfter: number | undefined, why: string): Promise<void> {
    const { retryDelayMs, maxRetryDelayMs, retries } = this.options;
    const delay = Math.min(maxRetryDelayMs, retryAfter !== undefined ? retryAfter * 1000 : retryDelayMs * 2 ** (attempt - 1));
    this.logger.warn(`${why}; retry ${attempt} of ${retries} in ${delay} ms`);
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

function isObject(value: unknown): value is Record<string, any> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Refuses, before any request, an id a URL path cannot carry: `/` (a path separator), `.` and `..` (URL parsers
 * resolve them away, `%2E` too, so another path would be asked for) and a lone surrogate (it has no UTF-8), and
 * one of more than 128 characters, counted as the service counts them (code points, not UTF-16 units).
 */
function checkPathId(name: 'user_id' | 'post_id', id: string): void {
  const length = [...id].length;
  if (length < 1 || length > MAX_ID_LENGTH || id.includes('/') || id === '.' || id === '..' || /\p{Cs}/u.test(id)) {
    const rule = `must be 1 to ${MAX_ID_LENGTH} characters, not . or .., without / or a lone surrogate`;
    throw new RecsvcBadRequestError(`recsvc: ${name.replace('_', ' ')} ${rule}`, {
      code: 'invalid_arguments',
      details: { fields: { path: { [name]: [rule] } } },
      attempts: 0,
    });
  }
}

function requestIdOf(response: AxiosResponse): string | undefined {
  const value = response.headers['x-request-id'];
  return typeof value === 'string' ? value : undefined;
}

function retryAfterSeconds(response: AxiosResponse): number | undefined {
  const value = Number(response.headers['retry-after']);
  return Number.isFinite(value) && value >= 0 ? value : undefined;
}

function expectOk<T>(response: AxiosResponse<T | ErrorResponse> & { attempts: number }): T {
  if (response.status >= 200 && response.status < 300) {
    return response.data as T;
  }
  throw toError(response, response.attempts);
}

/** The typed exception for an error answer, carrying the DESIGN payload's code, message and details. */
export function toError(response: AxiosResponse, attempts: number): RecsvcError {
  const status = response.status;
  const body = isObject(response.data) && isObject(response.data.error) ? response.data.error : undefined;
  const init: RecsvcErrorInit = {
    status,
    code: typeof body?.code === 'string' ? body.code : `http_${status}`,
    details: isObject(body?.details) ? body.details : {},
    requestId: requestIdOf(response),
    attempts,
  };
  const message = `recsvc: ${response.config?.method?.toUpperCase() ?? ''} ${response.config?.url ?? ''} answered ${status}: ${
    typeof body?.message === 'string' ? body.message : 'no error payload'
  }`;
  switch (status) {
    case 400:
      return new RecsvcBadRequestError(message, init);
    case 401:
      return new RecsvcUnauthorizedError(message, init);
    case 403:
      return new RecsvcForbiddenError(message, init);
    case 404:
      return new RecsvcNotFoundError(message, init);
    case 429:
      return new RecsvcRateLimitedError(message, { ...init, retryAfterSeconds: retryAfterSeconds(response) });
    case 503:
      return new RecsvcUnavailableError(message, init);
  }
  if (status >= 400 && status < 500) {
    return new RecsvcClientError(message, init);
  }
  return new RecsvcServerError(message, init);
}

function networkError(error: unknown, spec: RequestSpec, timeoutMs: number, attempts: number): RecsvcError {
  const what = `${spec.method} ${spec.path}`;
  const code = error instanceof AxiosError ? error.code : undefined;
  const aborted = error instanceof Error && (error.name === 'CanceledError' || error.name === 'AbortError' || error.name === 'TimeoutError');
  if (code === 'ECONNABORTED' || code === 'ETIMEDOUT' || code === 'ERR_CANCELED' || aborted) {
    return new RecsvcTimeoutError(`recsvc: ${what} got no answer within ${timeoutMs} ms`, {
      code: 'timeout',
      details: { timeout_ms: timeoutMs },
      attempts,
      cause: error,
    });
  }
  return new RecsvcConnectionError(`recsvc: ${what} failed: ${error instanceof Error ? error.message : String(error)}`, {
    code: 'network_error',
    details: { error_code: code ?? null },
    attempts,
    cause: error,
  });
}
