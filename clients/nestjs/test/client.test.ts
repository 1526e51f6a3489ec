/**
 * Tests of the recsvc NestJS client against a live recsvc (gunicorn, Redis, a published model), started by
 * tests/clients/test_nestjs_client.py, which passes where it runs through the environment:
 *
 * - RECSVC_URL: a service with a published model whose users are `user-0` ... (`RECSVC_FEED_POSTS` posts per
 *   feed: the precomputed list continued by the model's ranking)
 * - RECSVC_ADMIN_TOKEN, RECSVC_EVENTS_TOKEN: that service's ADMIN_TOKEN and EVENTS_TOKEN
 * - RECSVC_NO_MODEL_URL: a service with no model and no ADMIN_TOKEN (503 feeds, 403 admin)
 *
 * Timeouts, connection failures and recovery after a 503 are checked against small local HTTP servers, since
 * the real service cannot be made to hang or to fail a given number of times on cue.
 */

import 'reflect-metadata';

import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';

import { HttpService } from '@nestjs/axios';
import type { INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';

import {
  PAGE_QUERY_PARAMS,
  RecommendationsModule,
  type RecommendationsModuleOptions,
  RecommendationsService,
  RecsvcBadRequestError,
  RecsvcConnectionError,
  RecsvcForbiddenError,
  RecsvcNotFoundError,
  RecsvcTimeoutError,
  RecsvcUnauthorizedError,
  RecsvcUnavailableError,
  type FeedEvent,
  type RecommendationsPage,
  type SimilarPostsPage,
  SCHEMA_ENUMS,
  SCHEMA_FIELDS,
  SIMILAR_QUERY_PARAMS,
} from '../src';

function env(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: these tests run against a live recsvc (tests/clients/test_nestjs_client.py)`);
  }
  return value;
}

const URL_ = env('RECSVC_URL');
const NO_MODEL_URL = env('RECSVC_NO_MODEL_URL');
const ADMIN_TOKEN = env('RECSVC_ADMIN_TOKEN');
const EVENTS_TOKEN = env('RECSVC_EVENTS_TOKEN');
const FEED_POSTS = Number(env('RECSVC_FEED_POSTS'));

interface Client {
  app: INestApplicationContext;
  service: RecommendationsService;
  /** The query parameters and paths of every request sent, in order. */
  sent: { url?: string; params: Record<string, unknown> }[];
}

const contexts: INestApplicationContext[] = [];

/** A Nest application context holding the module, with a recorder of every request the service sends. */
async function client(options: Partial<RecommendationsModuleOptions> = {}): Promise<Client> {
  const app = await NestFactory.createApplicationContext(
    RecommendationsModule.forRoot({ baseUrl: URL_, retryDelayMs: 10, ...options }),
    { logger: false },
  );
  contexts.push(app);
  const sent: Client['sent'] = [];
  app.get(HttpService).axiosRef.interceptors.request.use((config) => {
    sent.push({ url: config.url, params: { ...(config.params ?? {}) } });
    return config;
  });
  return { app, service: app.get(RecommendationsService), sent };
}

after(async () => {
  await Promise.all(contexts.map((app) => app.close()));
});

describe('types', () => {
  let doc: any;
  before(async () => {
    const response = await fetch(`${URL_}/openapi.json`);
    assert.equal(response.status, 200);
    doc = await response.json();
  });

  test('every schema has the OpenAPI document\'s properties, required and nullable fields', () => {
    for (const [name, fields] of Object.entries(SCHEMA_FIELDS)) {
      const schema = doc.components.schemas[name];
      assert.ok(schema, `the OpenAPI document has no schema ${name}`);
      const properties = Object.keys(schema.properties).sort();
      assert.deepEqual([...fields.properties].sort(), properties, `${name}: properties`);
      assert.deepEqual([...fields.required].sort(), [...(schema.required ?? [])].sort(), `${name}: required`);
      // A nullable nested schema is written `anyOf: [{$ref}, {nullable: true}]` (OpenAPI 3.0 has no nullable $ref).
      const isNullable = (field: any): boolean =>
        field.nullable === true || (field.anyOf ?? []).some((option: any) => option.nullable === true);
      const nullable = properties.filter((p) => isNullable(schema.properties[p]));
      assert.deepEqual([...fields.nullable].sort(), nullable, `${name}: nullable`);
    }
  });

  test('enumerations match the document', () => {
    for (const [path, values] of Object.entries(SCHEMA_ENUMS)) {
      const [name, property] = path.split('.');
      assert.deepEqual([...values].sort(), [...doc.components.schemas[name].properties[property].enum].sort(), path);
    }
  });

  test('the operations the service calls exist and answer the schemas the types describe', () => {
    const schemaOf = (path: string, method: string, status: string) =>
      doc.paths[path]?.[method]?.responses?.[status]?.content?.['application/json']?.schema?.$ref;
    assert.equal(schemaOf('/recommendations/{user_id}', 'get', '200'), '#/components/schemas/Recommendations');
    assert.equal(schemaOf('/health', 'get', '200'), '#/components/schemas/Health');
    assert.equal(schemaOf('/health', 'get', '503'), '#/components/schemas/Health');
    assert.equal(schemaOf('/admin/reload-model', 'post', '200'), '#/components/schemas/Reload');
    assert.equal(schemaOf('/admin/reload-model', 'post', '500'), '#/components/schemas/Reload');
    assert.equal(schemaOf('/admin/model-status', 'get', '200'), '#/components/schemas/ModelStatus');
    assert.equal(schemaOf('/admin/experiments', 'get', '200'), '#/components/schemas/Experiments');
    assert.equal(schemaOf('/events', 'post', '200'), '#/components/schemas/EventsRecorded');
    const body = doc.paths['/events'].post.requestBody.content['application/json'].schema.$ref;
    assert.equal(body, '#/components/schemas/EventBatch');
    const query = doc.paths['/recommendations/{user_id}'].get.parameters
      .filter((p: any) => p.in === 'query')
      .map((p: any) => p.name)
      .sort();
    assert.deepEqual([...PAGE_QUERY_PARAMS].sort(), query);
    assert.equal(schemaOf('/posts/{post_id}/similar', 'get', '200'), '#/components/schemas/SimilarPosts');
    const similarQuery = doc.paths['/posts/{post_id}/similar'].get.parameters
      .filter((p: any) => p.in === 'query')
      .map((p: any) => p.name)
      .sort();
    assert.deepEqual([...SIMILAR_QUERY_PARAMS].sort(), similarQuery);
  });
});

describe('browsing', () => {
  // The served model: 80 posts, post-i in community-(i % 2), tagged tag0 (i % 3 >= 1) and tag1 (i % 3 == 2).
  test('a community feed scrolls with its token past the precomputed list, every post of the community', async () => {
    const { service, sent } = await client();
    const pages: RecommendationsPage[] = [];
    for await (const page of service.scrollFeed('user-3', { pageSize: 9, community: ['community-0'] })) {
      pages.push(page);
    }
    const posts = pages.flatMap((p) => p.recommendations);
    assert.equal(posts.length, 40);
    assert.equal(new Set(posts.map((r) => r.post_id)).size, 40);
    assert.ok(posts.every((r) => r.metadata.communityId === 'community-0'));
    assert.equal(pages[0].pagination.total, 40);
    assert.ok(pages.every((p) => p.token === pages[0].token));
    assert.ok(sent.every((s) => s.params.community === 'community-0'));
  });

  test('tags are ORed, ANDed with communities; unknown values give an empty feed', async () => {
    const { service, sent } = await client();
    const filter = { community: ['community-1', 'elsewhere'], tag: ['tag1'] };
    const feed = await service.fetchFeed('user-3', { pageSize: 10, ...filter });
    assert.equal(sent.at(-1)?.params.community, 'community-1,elsewhere');
    const ids = feed.recommendations.map((r) => Number(r.post_id.slice(5)));
    assert.deepEqual(
      [...ids].sort((a, b) => a - b),
      Array.from({ length: 80 }, (_, i) => i).filter((i) => i % 2 === 1 && i % 3 === 2),
    );
    const empty = await service.getRecommendations('user-3', { community: ['nowhere'] });
    assert.deepEqual(empty.recommendations, []);
    assert.equal(empty.pagination.total, 0);
  });

  test('a malformed filter is a typed 400 naming the parameter', async () => {
    const { service } = await client();
    await assert.rejects(service.getRecommendations('user-3', { tag: ['a', ''] }), (error) => {
      assert.ok(error instanceof RecsvcBadRequestError);
      assert.ok('tag' in (error.details.fields as any).query, JSON.stringify(error.details));
      return true;
    });
  });

  test('similar posts scroll with their token, never the post itself', async () => {
    const { service, sent } = await client();
    const pages: SimilarPostsPage[] = [];
    for await (const page of service.scrollSimilar('post-5', { pageSize: 8 })) {
      pages.push(page);
    }
    const posts = pages.flatMap((p) => p.recommendations);
    assert.equal(posts.length, FEED_POSTS); // 79 neighbours, at most MAX_FEED_POSTS of them
    assert.ok(!posts.some((r) => r.post_id === 'post-5'));
    assert.equal(new Set(posts.map((r) => r.post_id)).size, FEED_POSTS);
    assert.ok(pages.every((p) => p.strategy === 'similar' && p.user_id === null && p.token === pages[0].token));
    assert.ok(posts.every((r, i) => r.rank === i + 1 && r.score >= -1 && r.score <= 1));
    assert.equal(sent[1].params.token, pages[0].token);
  });

  test('similar posts for a user name the user; an unknown post is a typed 404', async () => {
    const { service } = await client();
    const page = await service.getSimilarPosts('post-5', { limit: 5, user_id: 'user-3' });
    assert.equal(page.user_id, 'user-3');
    assert.equal(page.recommendations.length, 5);
    await assert.rejects(service.getSimilarPosts('no-such-post'), (error) => {
      assert.ok(error instanceof RecsvcNotFoundError);
      assert.equal(error.code, 'post_not_found');
      return true;
    });
  });
});

describe('feeds', () => {
  test('a page of a known user', async () => {
    const { service } = await client();
    const page = await service.getRecommendations('user-4', { limit: 5, offset: 3 });
    assert.equal(page.user_id, 'user-4');
    assert.equal(page.strategy, 'personalized');
    assert.ok(['cache', 'model'].includes(page.source)); // `model` if a Redis read timed out under load
    assert.match(page.model_version, /^\d{8}T\d{6}Z-[0-9a-f]{8}$/);
    assert.deepEqual(
      page.recommendations.map((r) => r.rank),
      [4, 5, 6, 7, 8],
    );
    assert.deepEqual(page.pagination, { total: FEED_POSTS, limit: 5, offset: 3, has_more: true, next_offset: 8 });
    assert.match(page.token, /^\d{8}T\d{6}Z-[0-9a-f]{8}\.\d+\.\d+$/);
    for (const item of page.recommendations) {
      assert.equal(typeof item.post_id, 'string');
      assert.equal(item.fresh, false);
      assert.ok(Array.isArray(item.metadata.tags) && typeof item.metadata.communityId === 'string');
    }
  });

  test('scrolling passes the first page\'s token back and reads the whole feed once', async () => {
    const { service, sent } = await client();
    const pages = [];
    for await (const page of service.scrollFeed('user-7', { pageSize: 7 })) {
      pages.push(page);
    }
    assert.equal(pages.length, Math.ceil(FEED_POSTS / 7));
    const token = pages[0].token;
    assert.ok(pages.every((p) => p.token === token && !p.version_fallback));
    assert.equal(sent.length, pages.length);
    assert.equal(sent[0].params.token, undefined);
    assert.deepEqual(
      sent.slice(1).map((s) => s.params.token),
      pages.slice(1).map(() => token),
    );
    assert.ok(sent.every((s) => s.params.version === undefined));
    assert.deepEqual(
      sent.map((s) => s.params.offset),
      pages.map((_, i) => i * 7),
    );
    const ranks = pages.flatMap((p) => p.recommendations.map((r) => r.rank));
    assert.deepEqual(ranks, Array.from({ length: FEED_POSTS }, (_, i) => i + 1));
    assert.equal(new Set(pages.flatMap((p) => p.recommendations.map((r) => r.post_id))).size, FEED_POSTS);
    assert.equal(pages.at(-1)?.pagination.has_more, false);
  });

  test('client exclusions are sent comma-separated, skipped, and the scroll follows next_offset', async () => {
    const { service, sent } = await client();
    const top = (await service.getRecommendations('user-8', { limit: 6 })).recommendations.map((r) => r.post_id);
    const page = await service.getRecommendations('user-8', { limit: 4, exclude: [top[0], top[2]] });
    assert.equal(sent.at(-1)?.params.exclude, `${top[0]},${top[2]}`);
    assert.deepEqual(
      page.recommendations.map((r) => r.post_id),
      [top[1], top[3], top[4], top[5]],
    );
    assert.equal(page.pagination.next_offset, 6);
    const feed = await service.fetchFeed('user-8', { pageSize: 4, maxItems: 8, exclude: [top[0], top[2]] });
    assert.deepEqual(
      feed.recommendations.slice(0, 4).map((r) => r.post_id),
      [top[1], top[3], top[4], top[5]],
    );
    assert.equal(feed.recommendations.length, 8);
  });

  test('fetchFeed collects a feed, stopping at maxItems', async () => {
    const { service } = await client({ pageSize: 4 });
    const feed = await service.fetchFeed('user-2', { maxItems: 10 });
    assert.equal(feed.recommendations.length, 10);
    assert.equal(feed.strategy, 'personalized');
    const whole = await service.fetchFeed('user-2');
    assert.equal(whole.recommendations.length, FEED_POSTS);
    assert.match(whole.token, /\.\d+\.\d+$/);
    assert.deepEqual(whole.recommendations.slice(0, 10), feed.recommendations);
    // What a click log needs of the feed, as its pages say it.
    const first = await service.getRecommendations('user-2', { limit: 1 });
    const { model_family, source, experiment, variant, variant_fallback } = first;
    assert.deepEqual(
      { model_family: feed.model_family, source: feed.source, experiment: feed.experiment, variant: feed.variant },
      { model_family, source, experiment, variant },
    );
    assert.equal(feed.variant_fallback, variant_fallback);
    // Continued later where it stopped: the same scroll, from its next_offset.
    assert.equal(feed.next_offset, 10);
    const rest = service.scrollFeed('user-2', { token: feed.token, offset: feed.next_offset ?? 0, maxItems: 4 });
    const next = (await rest.next()).value;
    assert.deepEqual(next?.recommendations.map((r) => r.post_id), whole.recommendations.slice(10, 14).map((r) => r.post_id));
    assert.equal(whole.next_offset, null);
  });

  test('a user the model does not know gets the popular feed', async () => {
    const { service } = await client();
    const page = await service.getRecommendations('someone-new', { limit: 3 });
    assert.equal(page.strategy, 'popular');
    assert.equal(page.recommendations.length, 3);
  });

  test('bad arguments are a typed 400 error with the service\'s code, details and request id', async () => {
    const { service } = await client();
    await assert.rejects(service.getRecommendations('user-1', { limit: 0 }, { requestId: 'nest-test-1' }), (error) => {
      assert.ok(error instanceof RecsvcBadRequestError);
      assert.equal(error.status, 400);
      assert.equal(error.code, 'invalid_arguments');
      assert.ok('limit' in (error.details.fields as any).query, JSON.stringify(error.details));
      assert.equal(error.requestId, 'nest-test-1');
      assert.equal(error.attempts, 1);
      return true;
    });
    await assert.rejects(service.getRecommendations('user-1', { version: 'not-a-version' }), RecsvcBadRequestError);
    // '/' never reaches the service's route: the client refuses it with the same error.
    await assert.rejects(service.getRecommendations('a/b'), RecsvcBadRequestError);
  });

  test('ids a URL path cannot carry are refused before any request, lengths counted as the service counts', async () => {
    const { service } = await client();
    // URL parsers resolve '.' and '..' (and %2E) away: '..' asked for the service's home document.
    for (const id of ['.', '..', 'a/b', 'x'.repeat(129), 'a\uD800']) {
      for (const call of [() => service.getRecommendations(id), () => service.getSimilarPosts(id)]) {
        await assert.rejects(call(), (error) => {
          assert.ok(error instanceof RecsvcBadRequestError, String(error));
          assert.equal(error.attempts, 0);
          return true;
        });
      }
    }
    // 128 emoji are 128 characters to the service, 256 UTF-16 units to JavaScript.
    const emoji = '\u{1F600}'.repeat(128);
    assert.equal((await service.getRecommendations(emoji, { limit: 1 })).user_id, emoji);
  });
});

describe('events', () => {
  const event = (post: string, type: FeedEvent['type'] = 'like'): FeedEvent => ({
    user_id: 'user-9',
    post_id: post,
    type,
    created_at: new Date().toISOString(),
  });

  test('a reported like leaves the user\'s next page', async () => {
    const { service } = await client({ eventsToken: EVENTS_TOKEN });
    const top = (await service.getRecommendations('user-9', { limit: 3 })).recommendations.map((r) => r.post_id);
    const recorded = await service.events([event(top[0]), event(top[1], 'view')]);
    assert.equal(recorded.recorded, 2);
    assert.ok(!Number.isNaN(Date.parse(recorded.arrived_at)));
    const after = (await service.getRecommendations('user-9', { limit: 3 })).recommendations.map((r) => r.post_id);
    assert.ok(!after.includes(top[0]) && !after.includes(top[1]), JSON.stringify(after));
  });

  test('a bad batch is a typed 400 naming the entry, and nothing of it is recorded', async () => {
    const { service } = await client({ eventsToken: EVENTS_TOKEN });
    const before = (await service.getRecommendations('user-10', { limit: 3 })).recommendations.map((r) => r.post_id);
    const bad = { ...event(before[1]), user_id: 'user-10', type: 'share' } as unknown as FeedEvent;
    await assert.rejects(service.events([{ ...event(before[0]), user_id: 'user-10' }, bad]), (error) => {
      assert.ok(error instanceof RecsvcBadRequestError);
      assert.equal(error.code, 'invalid_arguments');
      assert.ok('events[1].type' in (error.details.fields as any).json, JSON.stringify(error.details));
      assert.equal(error.attempts, 1);
      return true;
    });
    const after = (await service.getRecommendations('user-10', { limit: 3 })).recommendations.map((r) => r.post_id);
    assert.deepEqual(after, before);
  });

  test('the events token falls back to the admin token, and a wrong one is a typed 401', async () => {
    const { service } = await client({ adminToken: 'wrong-token-0123456789' });
    await assert.rejects(service.events([event('post-1')]), RecsvcUnauthorizedError);
  });
});

describe('health and admin', () => {
  test('health of a service that can serve', async () => {
    const { service } = await client();
    const health = await service.health();
    // `degraded` (Redis slow to answer the probe) still serves; only `unavailable` cannot.
    assert.ok(['ok', 'degraded'].includes(health.status), health.status);
    assert.equal(health.checks.model.ok, true);
    assert.equal(health.checks.model.required, true);
    assert.equal(health.checks.postgres.required, false);
  });

  test('reload with the admin token, and model status', async () => {
    const { service } = await client({ adminToken: ADMIN_TOKEN });
    const reload = await service.reloadModel();
    assert.equal(reload.success, true);
    assert.equal(typeof reload.details.reloaded, 'boolean');
    assert.match(reload.details.current_version ?? '', /^\d{8}T\d{6}Z-[0-9a-f]{8}$/);
    const status = await service.modelStatus();
    assert.equal(typeof status.worker_pid, 'number');
    assert.equal(status.version, reload.details.current_version);
    const experiments = await service.experiments();
    assert.equal(experiments.configured, null); // the service under test runs no experiment
    assert.equal(experiments.attribution_window_hours, 24);
  });

  test('a wrong admin token is a typed 401', async () => {
    const { service } = await client({ adminToken: 'wrong-token-0123456789' });
    await assert.rejects(service.reloadModel(), (error) => {
      assert.ok(error instanceof RecsvcUnauthorizedError);
      assert.equal(error.code, 'unauthorized');
      return true;
    });
  });
});

describe('a service without a model', () => {
  test('feeds are retried on 503, then a typed unavailable error', async () => {
    const { service, sent } = await client({ baseUrl: NO_MODEL_URL, retries: 2 });
    await assert.rejects(service.getRecommendations('user-1'), (error) => {
      assert.ok(error instanceof RecsvcUnavailableError);
      assert.equal(error.status, 503);
      assert.equal(error.code, 'model_unavailable');
      assert.equal(error.attempts, 3);
      return true;
    });
    assert.equal(sent.length, 3);
  });

  test('health answers unavailable without retrying', async () => {
    const { service, sent } = await client({ baseUrl: NO_MODEL_URL });
    const health = await service.health();
    assert.equal(health.status, 'unavailable');
    assert.equal(health.checks.model.ok, false);
    assert.equal(sent.length, 1);
  });

  test('admin endpoints of a service without ADMIN_TOKEN are a typed 403', async () => {
    const { service } = await client({ baseUrl: NO_MODEL_URL, adminToken: ADMIN_TOKEN });
    await assert.rejects(service.reloadModel(), (error) => {
      assert.ok(error instanceof RecsvcForbiddenError);
      assert.equal(error.code, 'admin_disabled');
      return true;
    });
  });
});

describe('transport', () => {
  const servers: Server[] = [];
  after(() => servers.forEach((s) => s.close()));

  /** A local server answering with `handler`; its URL. */
  async function local(handler: Parameters<typeof createServer>[1]): Promise<string> {
    const server = createServer(handler);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  test('a 503 followed by an answer succeeds after the retries, honouring Retry-After', async () => {
    let calls = 0;
    const baseUrl = await local((_req, res) => {
      calls += 1;
      if (calls <= 2) {
        res.writeHead(503, { 'Content-Type': 'application/json', 'Retry-After': '0' });
        res.end(JSON.stringify({ error: { code: 'unavailable', message: 'busy', details: {} } }));
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ status: 'ok', checks: {} }));
    });
    const { service } = await client({ baseUrl, retries: 3, retryDelayMs: 5000 });
    const started = Date.now();
    const page = await service.getRecommendations('user-1');
    assert.equal((page as any).status, 'ok');
    assert.equal(calls, 3);
    assert.ok(Date.now() - started < 2000, 'Retry-After: 0 replaces the 5 s backoff');
  });

  test('a scroll whose pin expired continues on the scroll the service switched to', async () => {
    const seen: (string | null)[] = [];
    const baseUrl = await local((req, res) => {
      const query = new URL(req.url ?? '/', 'http://x').searchParams;
      const offset = Number(query.get('offset'));
      seen.push(query.get('token'));
      // The first two pages come from scroll A; from the third on, A is gone and B is served instead.
      const version = offset < 4 ? 'A' : 'B';
      const item = (rank: number) => ({
        post_id: `p${version}${rank}`,
        score: 1,
        rank,
        fresh: false,
        metadata: { tags: [], communityId: 'c' },
      });
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(
        JSON.stringify({
          user_id: 'u',
          model_version: version,
          token: version,
          strategy: 'personalized',
          source: 'cache',
          version_fallback: query.get('token') !== null && query.get('token') !== version,
          recommendations: [item(offset + 1), item(offset + 2)],
          pagination: { total: 8, limit: 2, offset, has_more: offset + 2 < 8, next_offset: offset + 2 < 8 ? offset + 2 : null },
        }),
      );
    });
    const { service } = await client({ baseUrl, pageSize: 2 });
    const feed = await service.fetchFeed('u');
    assert.deepEqual(seen, [null, 'A', 'A', 'B']);
    assert.equal(feed.version_fallback, true);
    assert.equal(feed.model_version, 'B');
    assert.equal(feed.token, 'B');
    assert.deepEqual(
      feed.recommendations.map((r) => r.post_id),
      ['pA1', 'pA2', 'pA3', 'pA4', 'pB5', 'pB6', 'pB7', 'pB8'],
    );
  });

  test('no answer within timeoutMs is a typed timeout, retried for GETs', async () => {
    let calls = 0;
    const baseUrl = await local(() => {
      calls += 1; // never answers
    });
    const { service } = await client({ baseUrl, timeoutMs: 200, retries: 1 });
    const started = Date.now();
    await assert.rejects(service.getRecommendations('user-1'), (error) => {
      assert.ok(error instanceof RecsvcTimeoutError);
      assert.equal(error.code, 'timeout');
      assert.equal(error.attempts, 2);
      return true;
    });
    assert.equal(calls, 2);
    assert.ok(Date.now() - started < 3000);
    // POSTs are never repeated after a timeout: the first one may have had its effect.
    calls = 0;
    await assert.rejects(service.reloadModel(), RecsvcTimeoutError);
    assert.equal(calls, 1);
  });

  test('a refused connection is a typed connection error', async () => {
    const baseUrl = await local(() => undefined);
    const server = servers.pop() as Server;
    await new Promise((resolve) => server.close(resolve));
    const { service } = await client({ baseUrl, retries: 1 });
    await assert.rejects(service.health(), (error) => {
      assert.ok(error instanceof RecsvcConnectionError);
      assert.equal(error.code, 'network_error');
      assert.equal(error.attempts, 2);
      return true;
    });
  });

  test('a bad configuration fails when the module is built', () => {
    assert.throws(() => RecommendationsModule.forRoot({ baseUrl: 'not a url' }), /baseUrl/);
    assert.throws(() => RecommendationsModule.forRoot({ baseUrl: URL_, timeoutMs: 0 }), /timeoutMs/);
  });

  test('forRootAsync builds the service from a factory', async () => {
    const app = await NestFactory.createApplicationContext(
      RecommendationsModule.forRootAsync({ useFactory: async () => ({ baseUrl: URL_ }) }),
      { logger: false },
    );
    contexts.push(app);
    const health = await app.get(RecommendationsService).health();
    assert.equal(health.checks.model.ok, true);
  });
});
