/**
 * Typed exceptions of the recsvc client. Every failure the service reports carries the DESIGN error payload
 * (`{"error": {"code", "message", "details"}}`); the client turns it into one of these classes so a caller can
 * `catch` by kind (`instanceof RecsvcBadRequestError`) and still read the server's code, message and details.
 */

import type { Reload } from './types';

/** What every recsvc client error carries. */
export interface RecsvcErrorInit {
  /** HTTP status, or undefined when no answer arrived (timeout, connection refused). */
  status?: number;
  /** The DESIGN error code (`invalid_arguments`, `model_unavailable`, ...) or the client's own (`timeout`, `network_error`). */
  code: string;
  details?: Record<string, unknown>;
  /** The `X-Request-ID` of the answer, to find the request in the service's logs. */
  requestId?: string;
  /** How many requests were made in all (1 + retries). */
  attempts?: number;
  cause?: unknown;
}

/** Base class of every error the client throws. */
export class RecsvcError extends Error {
  readonly status?: number;
  readonly code: string;
  readonly details: Record<string, unknown>;
  readonly requestId?: string;
  readonly attempts: number;

  constructor(message: string, init: RecsvcErrorInit) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.status = init.status;
    this.code = init.code;
    this.details = init.details ?? {};
    this.requestId = init.requestId;
    this.attempts = init.attempts ?? 1;
  }
}

/** A 4xx answer without a more specific class below. */
export class RecsvcClientError extends RecsvcError {}

/** 400: bad arguments (`invalid_arguments`; `details.fields` names each bad field). */
export class RecsvcBadRequestError extends RecsvcClientError {}

/** 401: the admin token is missing or wrong. */
export class RecsvcUnauthorizedError extends RecsvcClientError {}

/** 403: e.g. `admin_disabled` when the service has no ADMIN_TOKEN configured. */
export class RecsvcForbiddenError extends RecsvcClientError {}

/** 404: an unknown path (an unknown user is not a 404: it gets the popular feed). */
export class RecsvcNotFoundError extends RecsvcClientError {}

/** 429: over the service's rate limit. */
export class RecsvcRateLimitedError extends RecsvcClientError {
  /** Seconds the server asked to wait (`Retry-After`), if it said. */
  readonly retryAfterSeconds?: number;

  constructor(message: string, init: RecsvcErrorInit & { retryAfterSeconds?: number }) {
    super(message, init);
    this.retryAfterSeconds = init.retryAfterSeconds;
  }
}

/** 503 still answered after every retry: e.g. `model_unavailable` (no model trained yet). */
export class RecsvcUnavailableError extends RecsvcError {}

/** Another 5xx answer (a bug or an outage on the service's side). */
export class RecsvcServerError extends RecsvcError {}

/** No answer within `timeoutMs` (after the retries allowed for it). */
export class RecsvcTimeoutError extends RecsvcError {}

/** No answer at all: connection refused or reset, DNS failure (after the retries allowed for it). */
export class RecsvcConnectionError extends RecsvcError {}

/** `POST /admin/reload-model` answered 500: the load failed and the worker keeps serving its previous model. */
export class RecsvcReloadFailedError extends RecsvcServerError {
  /** The service's answer, with the reason in `message` and `details.reason`. */
  readonly result: Reload;

  constructor(message: string, init: RecsvcErrorInit & { result: Reload }) {
    super(message, init);
    this.result = init.result;
  }
}
