/** Configuration of the recsvc client, given to `RecommendationsModule.forRoot` / `forRootAsync`. */

import type { FactoryProvider, ModuleMetadata } from '@nestjs/common';

export interface RecommendationsModuleOptions {
  /** Where the service answers, e.g. `http://recsvc:8000` (no trailing path). */
  baseUrl: string;
  /** Bearer token of the admin endpoints (reloadModel, modelStatus); not needed for feeds and health. */
  adminToken?: string;
  /** Bearer token of `POST /events` (the service's EVENTS_TOKEN); `adminToken` when not given. */
  eventsToken?: string;
  /** Deadline of one request in milliseconds, connection included (default 2000). */
  timeoutMs?: number;
  /** How many times a request is repeated after a 503 (and after a timeout or connection error, see below); default 3. */
  retries?: number;
  /** Wait before the first retry in milliseconds; doubled for each next one (default 100). */
  retryDelayMs?: number;
  /** Longest wait between two attempts in milliseconds, `Retry-After` included (default 2000). */
  maxRetryDelayMs?: number;
  /** Also retry GET requests that timed out or could not connect (default true). POSTs never are. */
  retryNetworkErrors?: boolean;
  /** Page size of `scrollFeed` / `fetchFeed` when not given (default 50; the service allows 1..MAX_PAGE_LIMIT). */
  pageSize?: number;
}

/** The options with every default filled in. */
export type ResolvedRecommendationsOptions = Required<
  Omit<RecommendationsModuleOptions, 'adminToken' | 'eventsToken'>
> &
  Pick<RecommendationsModuleOptions, 'adminToken' | 'eventsToken'>;

/** `forRootAsync`: options from a factory, e.g. reading `ConfigService`. */
export interface RecommendationsModuleAsyncOptions extends Pick<ModuleMetadata, 'imports'> {
  useFactory: (...args: any[]) => RecommendationsModuleOptions | Promise<RecommendationsModuleOptions>;
  inject?: FactoryProvider['inject'];
  /** Register the module globally (its service injectable everywhere without importing it again). */
  isGlobal?: boolean;
}

/** Injection token of the resolved options. */
export const RECOMMENDATIONS_OPTIONS = Symbol('RECOMMENDATIONS_OPTIONS');

/** Fills in defaults and checks the values, so a bad configuration fails at start rather than on a request. */
export function resolveOptions(options: RecommendationsModuleOptions): ResolvedRecommendationsOptions {
  let url: URL;
  try {
    url = new URL(options.baseUrl);
  } catch {
    throw new Error(`recsvc client: baseUrl ${JSON.stringify(options.baseUrl)} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`recsvc client: baseUrl must be http(s), got ${url.protocol}`);
  }
  const resolved: ResolvedRecommendationsOptions = {
    baseUrl: options.baseUrl.replace(/\/+$/, ''),
    adminToken: options.adminToken,
    eventsToken: options.eventsToken ?? options.adminToken,
    timeoutMs: options.timeoutMs ?? 2000,
    retries: options.retries ?? 3,
    retryDelayMs: options.retryDelayMs ?? 100,
    maxRetryDelayMs: options.maxRetryDelayMs ?? 2000,
    retryNetworkErrors: options.retryNetworkErrors ?? true,
    pageSize: options.pageSize ?? 50,
  };
  const checks: [keyof ResolvedRecommendationsOptions, number, number][] = [
    ['timeoutMs', 1, 600_000],
    ['retries', 0, 100],
    ['retryDelayMs', 0, 600_000],
    ['maxRetryDelayMs', 0, 600_000],
    ['pageSize', 1, 10_000],
  ];
  for (const [name, min, max] of checks) {
    const value = resolved[name] as number;
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new Error(`recsvc client: ${name} must be an integer in ${min}..${max}, got ${value}`);
    }
  }
  return resolved;
}
