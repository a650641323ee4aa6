// The adapter conformance suite: every HTTP adapter (Express, Hono, Koa, yours) runs it against a real app.

import {
  type Backend,
  type BackendErrorPolicy,
  type Decision,
  FastLimit,
  MemoryBackend,
  type RateLimitCommonOptions,
} from '@fastlimit/core'
import { afterEach, describe, expect, it, vi } from 'vitest'

/** The request as the suite's `key`, `cost`, `skip`, `onLimit` and `message` functions see it. */
export interface SuiteRequest {
  /** `GET`, `POST`, ... */
  readonly method: string
  /** The path, without the query string. */
  readonly path: string
  /** A request header by lower-case name. */
  header(name: string): string | undefined
}

/** `rateLimit()` options with the suite's functions written against {@link SuiteRequest}. */
export type AdapterAppOptions = RateLimitCommonOptions<SuiteRequest>

/** A response as the suite reads it: header names in lower case. */
export interface SuiteResponse {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
}

/** Sends requests to the app under test. */
export interface AdapterClient {
  /** Sends one request from 127.0.0.1 (a real socket, or an injected peer address); `GET`, `POST` or `OPTIONS`. */
  request(path: string, init?: { method?: string; headers?: Record<string, string> }): Promise<SuiteResponse>
  /** Closes what `makeApp` opened (a listening server). */
  close?(): void | Promise<void>
  /**
   * `http://127.0.0.1:PORT` when the app listens on a real socket: the delay-mode case of a client
   * that disconnects while its request is held needs one (it is listed as skipped without).
   */
  readonly origin?: string
}

/** Options of {@link adapterConformance}. */
export interface AdapterConformanceOptions {
  /** The suite's name in the report, e.g. `'@fastlimit/express on Express 4'`. */
  name: string
  /**
   * Builds a real app and returns a client for it. The app must:
   * - call the adapter's `rateLimit(options)` with the suite's functions translated (see {@link adaptOptions});
   * - use the middleware app-wide when `mount` is `'app'`, or only on `GET /limited` when `'route'`;
   * - answer `200` with the text `ok` to `GET`, `POST` and `OPTIONS` on any path (`/`, `/limited`, `/free`, ...);
   * - answer errors passed to the framework with `500` and the error's `code` as the body.
   * `rateLimit()` throws for bad options; `makeApp` lets that error out.
   */
  makeApp: (options: AdapterAppOptions, mount: 'app' | 'route') => AdapterClient | Promise<AdapterClient>
  /**
   * Builds a real app with two middlewares, for the cases about what a middleware hands to the
   * application (resetting and peeking a request's bucket, one set of headers for two limits,
   * nothing invented on fail-open). The app must, besides what {@link makeApp} says:
   * - use `rateLimit(appOptions)` app-wide, and `routeLimit = rateLimit(routeOptions)` on
   *   `GET /limited`, `GET /info` and `POST /login`;
   * - answer `GET /info` with `200` and the JSON of what the last middleware attached to the request
   *   (`res.json(req.rateLimit ?? null)` in Express);
   * - answer `POST /login` with `401` and `wrong` unless the request has `x-password: right`; then
   *   reset the request's bucket, with `await routeLimit.reset(req)` when the request has
   *   `x-reset: middleware`, with the request's own `await req.rateLimit.reset()` otherwise, and
   *   answer `200` with `welcome`;
   * - answer `GET /peek` (which `routeLimit` does not count) with `200` and the JSON of
   *   `{ remaining }` of `await routeLimit.peek(req)`, or `null` when that gives `undefined`.
   *
   * An adapter that gives it is held to the whole suite, including a 400 it sends itself for an
   * unusable cost (the `invalid` callback of `HttpLimiter.run`). Adapters written against an earlier
   * suite leave it out: those cases are then listed as skipped, and an unusable cost is expected to
   * reach the framework's error handling as `ERR_FASTLIMIT_ARGUMENT`.
   */
  makeLayeredApp?: (
    appOptions: AdapterAppOptions,
    routeOptions: AdapterAppOptions,
  ) => AdapterClient | Promise<AdapterClient>
  /** Per-test timeout in ms. @default 30000 */
  timeoutMs?: number
  /**
   * Builds the limiter of the `mode: 'delay'` cases, which run on real time: a `FastLimit` with the
   * given `onBackendError` on the store to test (a `RedisBackend` on a server of the test's own, with a
   * fresh prefix each time). @default a `FastLimit` on a new `MemoryBackend`
   */
  delayLimiter?: (options: { onBackendError: BackendErrorPolicy }) => FastLimit | Promise<FastLimit>
  /** `'delay'` registers the `mode: 'delay'` cases only (an adapter's run on another store). @default 'all' */
  cases?: 'all' | 'delay'
}

/**
 * Rewrites the suite's option functions (which take a {@link SuiteRequest}) into functions of the
 * framework's request, given how to view one as a `SuiteRequest`. Other options pass through.
 *
 * @example
 * ```ts
 * makeApp: (options, mount) => {
 *   const limit = rateLimit(adaptOptions(options, (req: Request) => ({
 *     method: req.method, path: req.path, header: (name) => req.get(name),
 *   })))
 *   ...
 * }
 * ```
 */
export function adaptOptions<Req>(
  options: AdapterAppOptions,
  view: (req: Req) => SuiteRequest,
): RateLimitCommonOptions<Req> {
  const out: Record<string, unknown> = { ...options }
  for (const name of ['key', 'cost', 'skip', 'onLimit', 'message'] as const) {
    const f = options[name]
    if (typeof f === 'function') {
      out[name] = (req: Req, ...rest: unknown[]) => (f as (...a: unknown[]) => unknown)(view(req), ...rest)
    }
  }
  return out as RateLimitCommonOptions<Req>
}

const T0 = 1_700_000_040_000 // a whole minute: fixed windows start here

function fakeClock(start: number) {
  let t = start
  return {
    now: () => t,
    advance: (ms: number) => {
      t += ms
    },
  }
}

/** The rate-limit related headers of a response, to compare byte for byte. */
function limitHeaders(res: SuiteResponse): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(res.headers)) {
    if (/ratelimit|retry-after/i.test(name)) out[name.toLowerCase()] = value
  }
  return out
}

function brokenBackend(): Backend {
  const fail = () => Promise.reject(new Error('connection refused'))
  return {
    checkAndIncrement: fail,
    checkAndIncrementAll: fail,
    peek: fail,
    reset: fail,
    clear: fail,
    close: () => Promise.resolve(),
  }
}

/**
 * Registers the adapter conformance suite as vitest tests: a real app, a fake clock, and exact
 * expectations for 429 after exactly N, every header format byte for byte, Retry-After, cost
 * (0 not counted, unusable costs answered 400), several rules, custom keys and their
 * normalisation, resetting and peeking a request's bucket (the login case), one set of RateLimit
 * headers for an app-wide and a route limit, skip and allow lists, methods not counted (`OPTIONS`),
 * shadow mode, IPv6 subnet keying and IPv4 embedded in IPv6, spoofed forwarding headers, proxy trust
 * (`{ hops, from }`) and its warnings, `Forwarded` read from the right, per-route and app-wide use,
 * and each backend-error policy (fail-open inventing nothing, outages answered 503).
 *
 * @example
 * ```ts
 * import { adapterConformance, adaptOptions } from '@fastlimit/core/testing'
 * adapterConformance({ name: 'my adapter', makeApp: (options, mount) => ... })
 * ```
 */
export function adapterConformance(options: AdapterConformanceOptions): void {
  const timeout = options.timeoutMs ?? 30_000
  const info = options.makeLayeredApp !== undefined
  /** A request-info case: run when the adapter serves it, listed as skipped otherwise. */
  const withInfo = info ? it : it.skip
  let opened: AdapterClient[] = []

  const setup = async (appOptions: AdapterAppOptions = {}, mount: 'app' | 'route' = 'app') => {
    const clock = fakeClock(T0)
    const limiter =
      appOptions.limiter ??
      new FastLimit({ backend: new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }) })
    const client = await options.makeApp({ limiter, clock: clock.now, ...appOptions }, mount)
    opened.push(client)
    return { clock, limiter, client }
  }
  /** The two-middleware app of {@link AdapterConformanceOptions.makeLayeredApp}, on one limiter and clock. */
  const layered = async (appOptions: AdapterAppOptions, routeOptions: AdapterAppOptions) => {
    const clock = fakeClock(T0)
    const limiter = new FastLimit({ backend: new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }) })
    const make = options.makeLayeredApp as NonNullable<AdapterConformanceOptions['makeLayeredApp']>
    const client = await make(
      { limiter, clock: clock.now, ...appOptions },
      { limiter, clock: clock.now, ...routeOptions },
    )
    opened.push(client)
    return { clock, limiter, client }
  }
  const down = (onBackendError: BackendErrorPolicy) =>
    new FastLimit({ backend: brokenBackend(), onBackendError })
  const get = (client: AdapterClient, path = '/', headers?: Record<string, string>) =>
    client.request(path, headers === undefined ? undefined : { headers })

  describe(`adapter conformance: ${options.name}`, () => {
    afterEach(async () => {
      const list = opened
      opened = []
      for (const c of list) await c.close?.()
    })

    delayCases(options, (client) => opened.push(client), timeout)
    if (options.cases === 'delay') return

    it(
      'admits exactly N, then answers 429 with RateLimit headers, Retry-After and problem details',
      async () => {
        const { client } = await setup({ rules: '3/min' })
        const seen: SuiteResponse[] = []
        for (let i = 0; i < 5; i++) seen.push(await get(client))
        expect(seen.map((r) => r.status)).toEqual([200, 200, 200, 429, 429])
        expect(seen[0]?.body).toBe('ok')
        expect(seen.map(limitHeaders)).toEqual([
          { 'ratelimit-policy': '3;w=60', ratelimit: 'limit=3, remaining=2, reset=20' },
          { 'ratelimit-policy': '3;w=60', ratelimit: 'limit=3, remaining=1, reset=40' },
          { 'ratelimit-policy': '3;w=60', ratelimit: 'limit=3, remaining=0, reset=60' },
          { 'ratelimit-policy': '3;w=60', ratelimit: 'limit=3, remaining=0, reset=20', 'retry-after': '20' },
          { 'ratelimit-policy': '3;w=60', ratelimit: 'limit=3, remaining=0, reset=20', 'retry-after': '20' },
        ])
        const denied = seen[3] as SuiteResponse
        expect(denied.headers['content-type']).toBe('application/problem+json')
        expect(JSON.parse(denied.body)).toEqual({
          type: 'about:blank',
          title: 'Too Many Requests',
          status: 429,
          detail: 'Too many requests; retry in 20 seconds.',
        })
      },
      timeout,
    )

    it(
      'counts POST like GET, and admits again once Retry-After has passed',
      async () => {
        const { client, clock } = await setup({ rules: '2/min' })
        expect((await client.request('/', { method: 'POST' })).status).toBe(200)
        expect((await get(client)).status).toBe(200)
        const denied = await client.request('/', { method: 'POST' })
        expect(denied.status).toBe(429)
        expect(denied.headers['retry-after']).toBe('30')
        clock.advance(29_999)
        const still = await get(client)
        expect(still.status).toBe(429)
        expect(still.headers['retry-after']).toBe('1')
        clock.advance(1)
        const again = await get(client)
        expect(again.status).toBe(200)
        expect(limitHeaders(again)).toEqual({
          'ratelimit-policy': '2;w=60',
          ratelimit: 'limit=2, remaining=0, reset=60',
        })
      },
      timeout,
    )

    it(
      'writes draft-6 headers byte for byte',
      async () => {
        const { client } = await setup({ rules: { limit: 2, window: '10s' }, headers: 'draft-6' })
        expect(limitHeaders(await get(client))).toEqual({
          'ratelimit-policy': '2;w=10',
          'ratelimit-limit': '2',
          'ratelimit-remaining': '1',
          'ratelimit-reset': '5',
        })
        await get(client)
        expect(limitHeaders(await get(client))).toEqual({
          'ratelimit-policy': '2;w=10',
          'ratelimit-limit': '2',
          'ratelimit-remaining': '0',
          'ratelimit-reset': '5',
          'retry-after': '5',
        })
      },
      timeout,
    )

    it(
      'writes draft-8 headers byte for byte',
      async () => {
        const { client } = await setup({
          rules: [
            { limit: 2, window: '1s', name: 'burst' },
            { limit: 100, window: '1d', name: 'daily' },
          ],
          headers: 'draft-8',
        })
        expect(limitHeaders(await get(client))).toEqual({
          'ratelimit-policy': '"burst";q=2;w=1, "daily";q=100;w=86400',
          ratelimit: '"burst";r=1;t=1',
        })
        await get(client)
        expect(limitHeaders(await get(client))).toEqual({
          'ratelimit-policy': '"burst";q=2;w=1, "daily";q=100;w=86400',
          ratelimit: '"burst";r=0;t=1',
          'retry-after': '1',
        })
      },
      timeout,
    )

    it(
      'writes legacy X-RateLimit-* headers, alone or beside a draft, or no RateLimit headers at all',
      async () => {
        const legacy = await setup({ rules: '2/10s', headers: 'legacy' })
        expect(limitHeaders(await get(legacy.client))).toEqual({
          'x-ratelimit-limit': '2',
          'x-ratelimit-remaining': '1',
          'x-ratelimit-reset': String(T0 / 1000 + 5),
        })
        const both = await setup({ rules: '2/10s', legacyHeaders: true })
        expect(limitHeaders(await get(both.client))).toEqual({
          'ratelimit-policy': '2;w=10',
          ratelimit: 'limit=2, remaining=1, reset=5',
          'x-ratelimit-limit': '2',
          'x-ratelimit-remaining': '1',
          'x-ratelimit-reset': String(T0 / 1000 + 5),
        })
        const none = await setup({ rules: '1/10s', headers: false })
        expect(limitHeaders(await get(none.client))).toEqual({})
        expect(limitHeaders(await get(none.client))).toEqual({ 'retry-after': '10' })
      },
      timeout,
    )

    it(
      'charges the cost of each request',
      async () => {
        const { client } = await setup({
          rules: '10/min',
          cost: (req) => Number(req.header('x-cost') ?? '1'),
        })
        const first = await get(client, '/search', { 'x-cost': '4' })
        expect(limitHeaders(first).ratelimit).toBe('limit=10, remaining=6, reset=24')
        expect(limitHeaders(await get(client, '/search', { 'x-cost': '6' })).ratelimit).toBe(
          'limit=10, remaining=0, reset=60',
        )
        const denied = await get(client, '/search', { 'x-cost': '1' })
        expect(denied.status).toBe(429)
        expect(denied.headers['retry-after']).toBe('6')
        const never = await get(client, '/search', { 'x-cost': '11' })
        expect(never.status).toBe(429)
        expect(never.headers['retry-after']).toBeUndefined()
      },
      timeout,
    )

    it(
      'applies several rules all-or-nothing and reports the most restrictive',
      async () => {
        const { client, clock } = await setup({
          rules: ['2/s', { limit: 3, window: '1m', algorithm: 'fixed-window' }],
        })
        const a = await get(client)
        expect(limitHeaders(a)).toEqual({
          'ratelimit-policy': '2;w=1, 3;w=60',
          ratelimit: 'limit=2, remaining=1, reset=1',
        })
        clock.advance(1000)
        expect(limitHeaders(await get(client)).ratelimit).toBe('limit=3, remaining=1, reset=59')
        clock.advance(1000)
        expect(limitHeaders(await get(client)).ratelimit).toBe('limit=3, remaining=0, reset=58')
        clock.advance(1000)
        const denied = await get(client)
        expect(denied.status).toBe(429)
        expect(limitHeaders(denied)).toEqual({
          'ratelimit-policy': '2;w=1, 3;w=60',
          ratelimit: 'limit=3, remaining=0, reset=57',
          'retry-after': '57',
        })
      },
      timeout,
    )

    it(
      info
        ? 'counts nothing for a cost of 0, answers 400 for a cost that is not a whole number, and charges invalidCost when given'
        : 'counts nothing for a cost of 0, hands an unusable cost to the framework as ERR_FASTLIMIT_ARGUMENT, and charges invalidCost when given',
      async () => {
        const { client } = await setup({
          rules: '3/min',
          cost: (req) => Number(req.header('x-cost') ?? '1'),
        })
        for (let i = 0; i < 5; i++) {
          const free = await get(client, '/', { 'x-cost': '0' })
          expect(free.status).toBe(200)
          expect(limitHeaders(free)).toEqual({})
        }
        for (const bad of ['abc', '-1', '1.5', 'Infinity', '1e300', 'NaN']) {
          const r = await get(client, '/', { 'x-cost': bad })
          expect(limitHeaders(r)).toEqual({})
          if (!info) {
            expect(r.status, `cost ${bad}`).toBe(500)
            expect(r.body).toBe('ERR_FASTLIMIT_ARGUMENT')
            continue
          }
          expect(r.status, `cost ${bad}`).toBe(400)
          expect(r.headers['content-type']).toBe('application/problem+json')
          expect(JSON.parse(r.body)).toMatchObject({ title: 'Bad Request', status: 400 })
        }
        // Nothing above was charged: 3 of 4 pass.
        const statuses: number[] = []
        for (let i = 0; i < 4; i++) statuses.push((await get(client)).status)
        expect(statuses).toEqual([200, 200, 200, 429])
        const lenient = await setup({ rules: '3/min', cost: () => Number.NaN, invalidCost: 2 })
        expect(limitHeaders(await get(lenient.client)).ratelimit).toBe('limit=3, remaining=1, reset=40')
      },
      timeout,
    )

    withInfo(
      'resets the bucket a request was counted in after a successful login, and no other client',
      async () => {
        const proxy = { trustProxy: { hops: 1, from: ['loopback'] } } as const
        const { client } = await layered(
          { rules: '100/min', scope: 'app', ...proxy },
          { rules: '5/15m', scope: 'login', ...proxy },
        )
        const login = (ip: string, password: string, via?: string) =>
          client.request('/login', {
            method: 'POST',
            headers: {
              'x-forwarded-for': ip,
              'x-password': password,
              ...(via === undefined ? {} : { 'x-reset': via }),
            },
          })
        const remaining = async (ip: string) =>
          JSON.parse((await get(client, '/peek', { 'x-forwarded-for': ip })).body) as {
            remaining: number
          } | null
        for (let i = 0; i < 4; i++) expect((await login('198.51.100.1', 'wrong')).status).toBe(401)
        for (let i = 0; i < 2; i++) expect((await login('198.51.100.2', 'wrong')).status).toBe(401)
        expect(await remaining('198.51.100.1')).toEqual({ remaining: 1 })
        const success = await login('198.51.100.1', 'right')
        expect(success.status).toBe(200)
        expect(success.body).toBe('welcome')
        expect(await remaining('198.51.100.1')).toEqual({ remaining: 5 })
        expect(await remaining('198.51.100.2')).toEqual({ remaining: 3 })
        const again: number[] = []
        for (let i = 0; i < 6; i++) again.push((await login('198.51.100.1', 'wrong')).status)
        expect(again).toEqual([401, 401, 401, 401, 401, 429])
        // The same through the middleware, with the request: routeMiddleware.reset(req).
        expect((await login('198.51.100.2', 'right', 'middleware')).status).toBe(200)
        expect(await remaining('198.51.100.2')).toEqual({ remaining: 5 })
        expect(await remaining('198.51.100.1')).toEqual({ remaining: 0 })
        // The app-wide limit, in its own scope, was not reset: this is 198.51.100.1's 15th request.
        const app = await get(client, '/', { 'x-forwarded-for': '198.51.100.1' })
        expect(app.headers.ratelimit).toBe('limit=100, remaining=85, reset=9')
      },
      timeout,
    )

    withInfo(
      'sends one set of RateLimit headers for an app-wide and a route limit: every policy, the most restrictive rule',
      async () => {
        const { client } = await layered(
          { rules: '100/min', scope: 'app', legacyHeaders: true },
          { rules: '5/15m', scope: 'login' },
        )
        const route = await get(client, '/limited')
        expect(limitHeaders(route)).toEqual({
          'ratelimit-policy': '100;w=60, 5;w=900',
          ratelimit: 'limit=5, remaining=4, reset=180',
          'x-ratelimit-limit': '5',
          'x-ratelimit-remaining': '4',
          'x-ratelimit-reset': String(T0 / 1000 + 180),
        })
        const info = JSON.parse((await get(client, '/info')).body)
        expect(info).toMatchObject({
          scope: 'login',
          limit: 5,
          remaining: 3,
          source: 'backend',
          rule: '5/15m',
        })
        const elsewhere = await get(client, '/free')
        expect(limitHeaders(elsewhere)).toEqual({
          'ratelimit-policy': '100;w=60',
          ratelimit: 'limit=100, remaining=97, reset=2',
          'x-ratelimit-limit': '100',
          'x-ratelimit-remaining': '97',
          'x-ratelimit-reset': String(T0 / 1000 + 2),
        })
        const named = await layered(
          { rules: '100/min', scope: 'app', headers: 'draft-8' },
          { rules: { limit: 5, window: '15m', name: 'login' }, scope: 'login', headers: 'draft-8' },
        )
        expect(limitHeaders(await get(named.client, '/limited'))).toEqual({
          'ratelimit-policy': '"100/1m";q=100;w=60, "login";q=5;w=900',
          ratelimit: '"100/1m";r=99;t=1, "login";r=4;t=180',
        })
      },
      timeout,
    )

    it(
      'keys by a custom (async) key',
      async () => {
        const { client } = await setup({
          rules: '1/min',
          key: async (req) => req.header('x-api-key') ?? 'anonymous',
        })
        expect((await get(client, '/', { 'x-api-key': 'a' })).status).toBe(200)
        expect((await get(client, '/', { 'x-api-key': 'a' })).status).toBe(429)
        expect((await get(client, '/', { 'x-api-key': 'b' })).status).toBe(200)
        expect((await get(client)).status).toBe(200)
        expect((await get(client)).status).toBe(429)
      },
      timeout,
    )

    it(
      'does not count OPTIONS (CORS preflights) by default; skipMethods changes which methods are skipped',
      async () => {
        const { client } = await setup({ rules: '2/min' })
        for (let i = 0; i < 4; i++) {
          const preflight = await client.request('/', { method: 'OPTIONS' })
          expect(preflight.status).toBe(200)
          expect(limitHeaders(preflight)).toEqual({})
          expect((await get(client)).status).toBe(i < 2 ? 200 : 429)
        }
        const counted = await setup({ rules: '1/min', skipMethods: [] })
        expect((await counted.client.request('/', { method: 'OPTIONS' })).status).toBe(200)
        expect((await counted.client.request('/', { method: 'OPTIONS' })).status).toBe(429)
        const posts = await setup({ rules: '1/min', skipMethods: ['POST'] })
        for (let i = 0; i < 3; i++)
          expect((await posts.client.request('/', { method: 'POST' })).status).toBe(200)
        expect((await posts.client.request('/', { method: 'OPTIONS' })).status).toBe(200)
        expect((await posts.client.request('/', { method: 'OPTIONS' })).status).toBe(429)
      },
      timeout,
    )

    it(
      'counts the spellings of one name as one identity with normalize',
      async () => {
        const { client } = await setup({
          rules: '3/min',
          // Percent-encoded: a header value cannot carry full-width letters as they are.
          key: (req) => decodeURIComponent(req.header('x-user') ?? ''),
          normalize: (id) => id.normalize('NFKC').toLowerCase(),
        })
        const statuses: number[] = []
        for (const user of ['admin', 'Admin', 'ADMIN', 'ａｄｍｉｎ', 'ＡＤＭＩＮ']) {
          statuses.push((await get(client, '/', { 'x-user': encodeURIComponent(user) })).status)
        }
        expect(statuses).toEqual([200, 200, 200, 429, 429])
      },
      timeout,
    )

    it(
      'keeps a scope apart from every unscoped identity, whatever key returns',
      async () => {
        const { limiter, client: open } = await setup({
          rules: '1/min',
          key: (req) => req.header('x-user') ?? 'anon',
        })
        const { client: login } = await setup({ limiter, rules: '1/min', scope: 'login' })
        // An unscoped key spelled like the scoped identity of 127.0.0.1 (the suite's client).
        expect((await get(open, '/', { 'x-user': 'login|127.0.0.1' })).status).toBe(200)
        expect((await get(open, '/', { 'x-user': 'login:127.0.0.1' })).status).toBe(200)
        expect((await get(login, '/')).status).toBe(200)
        expect((await get(login, '/')).status).toBe(429)
        expect((await limiter.peek('127.0.0.1', '1/min', { scope: 'login' })).remaining).toBe(0)
        expect((await limiter.peek('127.0.0.1', '1/min')).remaining).toBe(1)
      },
      timeout,
    )

    it(
      'skips requests without counting them or sending headers, by function or allow list',
      async () => {
        const { client } = await setup({ rules: '1/min', skip: (req) => req.path === '/health' })
        for (let i = 0; i < 3; i++) {
          const r = await get(client, '/health')
          expect(r.status).toBe(200)
          expect(limitHeaders(r)).toEqual({})
        }
        expect((await get(client)).status).toBe(200)
        expect((await get(client)).status).toBe(429)
        const allowed = await setup({ rules: '1/min', allowList: ['127.0.0.0/8', '::1'] })
        for (let i = 0; i < 3; i++) {
          const r = await get(allowed.client)
          expect(r.status).toBe(200)
          expect(limitHeaders(r)).toEqual({})
        }
      },
      timeout,
    )

    it(
      'in shadow mode decides, sends headers and reports, but never refuses',
      async () => {
        const reported: Decision[] = []
        const { client } = await setup({
          rules: '2/min',
          mode: 'shadow',
          onLimit: (req, d) => {
            expect(req.path).toBe('/')
            reported.push(d)
          },
        })
        const statuses = []
        let last: SuiteResponse | undefined
        for (let i = 0; i < 4; i++) {
          last = await get(client)
          statuses.push(last.status)
        }
        expect(statuses).toEqual([200, 200, 200, 200])
        expect(limitHeaders(last as SuiteResponse)).toEqual({
          'ratelimit-policy': '2;w=60',
          ratelimit: 'limit=2, remaining=0, reset=30',
        })
        expect(reported.map((d) => [d.allowed, d.reason, d.retryAfterMs])).toEqual([
          [false, 'rate-limited', 30_000],
          [false, 'rate-limited', 30_000],
        ])
      },
      timeout,
    )

    it(
      'ignores a spoofed X-Forwarded-For unless the peer is a trusted proxy',
      async () => {
        const spoofed = await setup({ rules: '1/min' })
        expect((await get(spoofed.client, '/', { 'x-forwarded-for': '198.51.100.1' })).status).toBe(200)
        expect((await get(spoofed.client, '/', { 'x-forwarded-for': '198.51.100.2' })).status).toBe(429)
        const other = await setup({ rules: '1/min', trustProxy: ['10.0.0.0/8'] })
        expect((await get(other.client, '/', { 'x-forwarded-for': '198.51.100.1' })).status).toBe(200)
        expect((await get(other.client, '/', { 'x-forwarded-for': '198.51.100.2' })).status).toBe(429)
        const trusted = await setup({ rules: '1/min', trustProxy: ['loopback'] })
        expect((await get(trusted.client, '/', { 'x-forwarded-for': '198.51.100.1' })).status).toBe(200)
        expect((await get(trusted.client, '/', { 'x-forwarded-for': '198.51.100.2' })).status).toBe(200)
        // The client cannot hide behind a value it prepends: the hop the proxy appended counts.
        expect((await get(trusted.client, '/', { 'x-forwarded-for': '6.6.6.6, 198.51.100.2' })).status).toBe(
          429,
        )
        const counted = await setup({ rules: '1/min', trustProxy: 1 })
        expect((await get(counted.client, '/', { 'x-forwarded-for': '198.51.100.1' })).status).toBe(200)
        expect((await get(counted.client, '/', { 'x-forwarded-for': '6.6.6.6, 198.51.100.1' })).status).toBe(
          429,
        )
      },
      timeout,
    )

    it(
      'believes { hops, from } only from a peer in from, and warns once about trust of any peer and about an untrusted proxy',
      async () => {
        const registry = (globalThis as Record<symbol, unknown>)[Symbol.for('fastlimit.warnings')] as
          | Set<string>
          | undefined
        registry?.clear()
        const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined)
        try {
          // The suite's client is 127.0.0.1: a direct client when the proxy is elsewhere.
          const elsewhere = await setup({ rules: '1/min', trustProxy: { hops: 1, from: ['10.0.0.0/8'] } })
          expect((await get(elsewhere.client, '/', { 'x-forwarded-for': '198.51.100.1' })).status).toBe(200)
          expect((await get(elsewhere.client, '/', { 'x-forwarded-for': '198.51.100.2' })).status).toBe(429)
          // A loopback peer with a forwarding header that trust does not cover: probably a proxy.
          expect(warn).toHaveBeenCalledTimes(1)
          expect(String(warn.mock.calls[0]?.[0])).toMatch(
            /^\[fastlimit\] \[[a-z]+\] Requests from 127\.0\.0\.1 carry X-Forwarded-For but trustProxy does not trust 127\.0\.0\.1, .*trustProxy: \{ hops: 1, from: \['127\.0\.0\.1'\] \}/,
          )
          const here = await setup({ rules: '1/min', trustProxy: { hops: 1, from: ['loopback'] } })
          expect((await get(here.client, '/', { 'x-forwarded-for': '198.51.100.1' })).status).toBe(200)
          expect((await get(here.client, '/', { 'x-forwarded-for': '198.51.100.2' })).status).toBe(200)
          expect((await get(here.client, '/', { 'x-forwarded-for': '6.6.6.6, 198.51.100.2' })).status).toBe(
            429,
          )
          expect(warn).toHaveBeenCalledTimes(1)
          await setup({ rules: '1/min', trustProxy: 3 })
          expect(warn).toHaveBeenCalledTimes(2)
          expect(String(warn.mock.calls[1]?.[0])).toMatch(
            /^\[fastlimit\] \[[a-z]+\] trustProxy: 3 believes X-Forwarded-For from any peer: .*trustProxy: \{ hops: 3, from: \['10\.0\.0\.0\/8'\] \}/,
          )
        } finally {
          warn.mockRestore()
        }
      },
      timeout,
    )

    it(
      'reads RFC 7239 Forwarded when told to, and only then',
      async () => {
        const { client } = await setup({ rules: '1/min', trustProxy: 1, proxyHeader: 'forwarded' })
        const fwd = (v: string) => get(client, '/', { forwarded: v, 'x-forwarded-for': '6.6.6.6' })
        expect((await fwd('for="[2001:db8:0:ab00::1]:4711";proto=https')).status).toBe(200)
        expect((await fwd('for=198.51.100.1')).status).toBe(200)
        expect((await fwd('for=6.6.6.6, for="198.51.100.1"')).status).toBe(429)
        // Unusable: the walk stops at the proxy itself (127.0.0.1), which is then counted.
        expect((await fwd('for=unknown')).status).toBe(200)
        expect((await fwd('for=_hidden')).status).toBe(429)
        // Read from the right: whatever the client wrote left of what the proxy appended does not matter.
        expect((await fwd('for="unterminated, for=198.51.100.2')).status).toBe(200)
        expect((await fwd('for=\\, for=198.51.100.2')).status).toBe(429)
        expect((await fwd('for=198.51.100.3')).status).toBe(200)
      },
      timeout,
    )

    it(
      'groups IPv6 clients by /56 (or as configured) and IPv4-mapped addresses with IPv4',
      async () => {
        const { client } = await setup({ rules: '1/min', trustProxy: ['loopback'] })
        const from = (ip: string) => get(client, '/', { 'x-forwarded-for': ip })
        expect((await from('2001:db8:0:ab00::1')).status).toBe(200)
        expect((await from('2001:db8:0:abff:ffff:ffff:ffff:ffff')).status).toBe(429)
        expect((await from('2001:DB8:0:AB12::')).status).toBe(429)
        expect((await from('2001:db8:0:ac00::1')).status).toBe(200)
        expect((await from('198.51.100.1')).status).toBe(200)
        expect((await from('::ffff:198.51.100.1')).status).toBe(429)
        // IPv6 that stands for an IPv4 client (NAT64, ::ffff:0:v4, ::v4) is that client.
        expect((await from('64:ff9b::198.51.100.1')).status).toBe(429)
        expect((await from('64:ff9b::198.51.100.2')).status).toBe(200)
        expect((await from('::ffff:0:198.51.100.2')).status).toBe(429)
        expect((await from('::198.51.100.3')).status).toBe(200)
        expect((await from('198.51.100.3')).status).toBe(429)
        const by64 = await setup({ rules: '1/min', trustProxy: ['loopback'], ipv6Subnet: 64 })
        const from64 = (ip: string) => get(by64.client, '/', { 'x-forwarded-for': ip })
        expect((await from64('2001:db8:0:ab00::1')).status).toBe(200)
        expect((await from64('2001:db8:0:ab01::1')).status).toBe(200)
        expect((await from64('2001:db8:0:ab01::2')).status).toBe(429)
      },
      timeout,
    )

    it(
      'limits one route only when used per route',
      async () => {
        const { client } = await setup({ rules: '1/min' }, 'route')
        expect((await get(client, '/limited')).status).toBe(200)
        const denied = await get(client, '/limited')
        expect(denied.status).toBe(429)
        const free = await get(client, '/free')
        expect(free.status).toBe(200)
        expect(limitHeaders(free)).toEqual({})
      },
      timeout,
    )

    it(
      'sends the status and message given',
      async () => {
        const json = await setup({ rules: '1/min', statusCode: 503, message: { error: 'slow down' } })
        await get(json.client)
        const a = await get(json.client)
        expect(a.status).toBe(503)
        expect(a.headers['content-type']).toBe('application/json; charset=utf-8')
        expect(a.body).toBe('{"error":"slow down"}')
        expect(a.headers['retry-after']).toBe('60')
        const text = await setup({
          rules: '1/min',
          message: (req, d) => `${req.method} refused, retry in ${d.retryAfterMs} ms`,
        })
        await get(text.client)
        const b = await get(text.client)
        expect(b.status).toBe(429)
        expect(b.headers['content-type']).toBe('text/plain; charset=utf-8')
        expect(b.body).toBe('GET refused, retry in 60000 ms')
      },
      timeout,
    )

    it(
      'hands errors of key functions to the framework',
      async () => {
        const { client } = await setup({
          rules: '1/min',
          key: () => {
            throw Object.assign(new Error('no user'), { code: 'E_NO_USER' })
          },
        })
        const r = await get(client)
        expect(r.status).toBe(500)
        expect(r.body).toBe('E_NO_USER')
      },
      timeout,
    )

    describe('backend down', () => {
      it(
        'fail-open lets requests through without RateLimit headers',
        async () => {
          const { client } = await setup({ rules: '1/min', limiter: down('fail-open') })
          for (let i = 0; i < 3; i++) {
            const r = await get(client)
            expect(r.status).toBe(200)
            expect(limitHeaders(r)).toEqual({})
          }
        },
        timeout,
      )

      withInfo(
        'fail-open tells later handlers that nothing is known: no remaining, no reset, source policy',
        async () => {
          const { client } = await layered(
            { rules: '100/min' },
            { rules: '1/min', limiter: down('fail-open') },
          )
          const seen = JSON.parse((await get(client, '/info')).body)
          expect(seen).toMatchObject({ allowed: true, reason: 'fail-open', source: 'policy', limit: 1 })
          expect(seen).not.toHaveProperty('remaining')
          expect(seen).not.toHaveProperty('resetMs')
          const known = await layered({ rules: '100/min' }, { rules: '2/min' })
          expect(JSON.parse((await get(known.client, '/info')).body)).toMatchObject({
            source: 'backend',
            remaining: 1,
            resetMs: T0 + 30_000,
          })
        },
        timeout,
      )

      it(
        'fail-closed refuses with 503 and Retry-After: 1 (outageStatusCode), while rate limits keep 429',
        async () => {
          const { client } = await setup({ rules: '1/min', limiter: down('fail-closed') })
          const r = await get(client)
          expect(r.status).toBe(503)
          expect(limitHeaders(r)).toEqual({ 'retry-after': '1' })
          expect(JSON.parse(r.body)).toEqual({
            type: 'about:blank',
            title: 'Service Unavailable',
            status: 503,
            detail: 'The rate limiter is unavailable; retry in 1 second.',
          })
          const chosen = await setup({ rules: '1/min', limiter: down('fail-closed'), outageStatusCode: 500 })
          expect((await get(chosen.client)).status).toBe(500)
          // An open circuit breaker is an outage too.
          const breaker = new FastLimit({
            backend: brokenBackend(),
            onBackendError: 'fail-closed',
            breaker: { failures: 1, openMs: 60_000 },
          })
          const open = await setup({ rules: '1/min', limiter: breaker })
          for (let i = 0; i < 3; i++) {
            const o = await get(open.client)
            expect(o.status).toBe(503)
            expect(o.headers['retry-after']).toBe('1')
          }
          await breaker.close()
        },
        timeout,
      )

      it(
        "throw passes the error to the framework's error handling",
        async () => {
          const { client } = await setup({ rules: '1/min', limiter: down('throw') })
          const r = await get(client)
          expect(r.status).toBe(500)
          expect(r.body).toBe('ERR_FASTLIMIT_BACKEND')
        },
        timeout,
      )

      it(
        'a fallback backend keeps limiting',
        async () => {
          const { client } = await setup({ rules: '1/min', limiter: down({ fallback: new MemoryBackend() }) })
          expect((await get(client)).status).toBe(200)
          expect((await get(client)).status).toBe(429)
        },
        timeout,
      )
    })

    it(
      'checks options when rateLimit() is called',
      async () => {
        const bad: Record<string, unknown>[] = [
          { rules: '100/mn' },
          { max: 100 },
          { headers: 'draft-5' },
          { trustProxy: true },
          { ipv6Subnet: 200 },
          { allowList: ['nope'] },
          { statusCode: 200 },
          { key: 'ip' },
          { trustProxy: { hops: 1 } },
          { skipMethods: 'OPTIONS' },
          { normalize: true },
          { invalidCost: 0 },
          { invalidCost: 'clamp' },
          { outageStatusCode: 200 },
        ]
        for (const o of bad) {
          let error: unknown
          try {
            await options.makeApp(o as AdapterAppOptions, 'app')
          } catch (err) {
            error = err
          }
          // By code, not instanceof: the published testing bundle has its own copy of the class.
          expect((error as { code?: unknown } | undefined)?.code, JSON.stringify(o)).toBe(
            'ERR_FASTLIMIT_CONFIG',
          )
          expect((error as Error).message).toMatch(/^\[fastlimit\] \[[a-z]+\] /)
        }
      },
      timeout,
    )
  })
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Resolves once `ready()` holds, looking every few milliseconds (a server-side step the client cannot see). */
async function until(ready: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (ready()) return
    await sleep(5)
  }
  throw new Error(`[adapter suite] timed out waiting for ${what}`)
}

/**
 * The `mode: 'delay'` cases, on real time: a request over the limit held until admitted, one that cannot
 * be admitted within `maxDelayMs` refused at once, a client leaving while held, and the limiter closed
 * under held requests.
 */
function delayCases(
  options: AdapterConformanceOptions,
  opened: (client: AdapterClient) => void,
  timeout: number,
): void {
  const limiterFor = (onBackendError: BackendErrorPolicy): FastLimit | Promise<FastLimit> =>
    options.delayLimiter?.({ onBackendError }) ??
    new FastLimit({ backend: new MemoryBackend({ cleanupIntervalMs: 0 }), onBackendError })
  /** An app in delay mode on a fresh limiter; `decisions` sees every store decision. */
  const delayed = async (appOptions: AdapterAppOptions, onBackendError: BackendErrorPolicy = 'fail-open') => {
    const limiter = await limiterFor(onBackendError)
    const decisions: Decision[] = []
    limiter.on('decision', (e) => {
      decisions.push(e.decision)
    })
    const client = await options.makeApp(
      { limiter, clock: Date.now, mode: 'delay', maxDelayMs: 5000, ...appOptions },
      'app',
    )
    opened(client)
    return { limiter, client, decisions }
  }
  const denials = (decisions: Decision[]) => decisions.filter((d) => !d.allowed).length
  const admissions = (decisions: Decision[]) => decisions.filter((d) => d.allowed).length

  describe("mode: 'delay'", () => {
    it(
      'holds a request over the limit until the limit admits it, then answers 200 with its headers',
      async () => {
        const onLimit = vi.fn()
        const { client } = await delayed({ rules: { limit: 1, window: '400ms' }, onLimit })
        const t0 = Date.now()
        const first = await client.request('/')
        expect(first.status).toBe(200)
        const held = await client.request('/')
        const t1 = Date.now()
        expect(held.status).toBe(200)
        expect(held.body).toBe('ok')
        // Admitted by the store no earlier than 400 ms after the first admission, which came after t0.
        expect(t1 - t0).toBeGreaterThanOrEqual(399)
        // The headers describe the decision that admitted it: no Retry-After on a 200.
        expect(held.headers['ratelimit-policy']).toBe('1;w=1')
        expect(held.headers.ratelimit).toMatch(/^limit=1, remaining=0, reset=\d+$/)
        expect(held.headers['retry-after']).toBeUndefined()
        expect(onLimit).not.toHaveBeenCalled()
      },
      timeout,
    )

    it(
      'refuses at once with 429 and the exact Retry-After when the wait would pass maxDelayMs',
      async () => {
        const onLimit = vi.fn()
        const { client, decisions } = await delayed({ rules: '1/10min', maxDelayMs: 60_000, onLimit })
        expect((await client.request('/')).status).toBe(200)
        const refused = await client.request('/')
        expect(refused.status).toBe(429)
        // The store's retry time, not what would be left after waiting 60 s in vain (540 s).
        expect(Number(refused.headers['retry-after'])).toBeGreaterThan(590)
        expect(Number(refused.headers['retry-after'])).toBeLessThanOrEqual(600)
        expect(refused.headers.ratelimit).toMatch(/^limit=1, remaining=0, reset=(59\d|600)$/)
        expect(JSON.parse(refused.body)).toMatchObject({ status: 429, title: 'Too Many Requests' })
        expect(onLimit).toHaveBeenCalledTimes(1)
        expect(admissions(decisions)).toBe(1)
      },
      timeout,
    )

    it(
      'frees the place of a client that disconnects while held, and charges it nothing',
      async (ctx) => {
        const { client, decisions } = await delayed({ rules: { limit: 1, window: '1s' }, maxQueue: 1 })
        const origin = client.origin
        if (origin === undefined) {
          ctx.skip()
          return
        }
        expect((await client.request('/')).status).toBe(200)
        const gone = new AbortController()
        const leaving = fetch(`${origin}/`, { signal: gone.signal }).then(
          () => 'answered',
          () => 'aborted',
        )
        await until(() => denials(decisions) >= 1, 'the held request to be denied by the store')
        // The one place (maxQueue: 1) is taken: another request is refused at once.
        const full = await client.request('/')
        expect(full.status).toBe(429)
        expect(full.headers['retry-after']).toBe('5')
        gone.abort()
        expect(await leaving).toBe('aborted')
        // Once the server has seen the socket close, the next request takes the freed place.
        let next: SuiteResponse
        for (;;) {
          next = await client.request('/')
          if (next.status !== 429) break
          await sleep(10)
        }
        expect(next.status).toBe(200)
        // Admitted: the first request and the one that took the place; never the one that left.
        expect(admissions(decisions)).toBe(2)
      },
      timeout,
    )

    it(
      "answers held requests as onBackendError says when the limiter closes ('fail-closed': 503)",
      async () => {
        const { client, limiter, decisions } = await delayed(
          { rules: { limit: 1, window: '3s' } },
          'fail-closed',
        )
        expect((await client.request('/')).status).toBe(200)
        const held = client.request('/')
        await until(() => denials(decisions) >= 1, 'the held request to be denied by the store')
        await limiter.close()
        const r = await held
        expect(r.status).toBe(503)
        expect(r.headers['retry-after']).toBe('1')
        expect(r.headers.ratelimit).toBeUndefined()
        expect(admissions(decisions)).toBe(1)
      },
      timeout,
    )

    it(
      "lets held requests through when the limiter closes under 'fail-open', and errs under 'throw'",
      async () => {
        for (const [policy, status, body] of [
          ['fail-open', 200, 'ok'],
          ['throw', 500, 'ERR_FASTLIMIT_CLOSED'],
        ] as const) {
          const { client, limiter, decisions } = await delayed({ rules: { limit: 1, window: '3s' } }, policy)
          expect((await client.request('/')).status).toBe(200)
          const held = client.request('/')
          await until(() => denials(decisions) >= 1, 'the held request to be denied by the store')
          await limiter.close()
          expect(await held, policy).toMatchObject({ status, body })
        }
      },
      timeout,
    )

    it(
      "checks the delay options when rateLimit() is called (maxDelayMs needed with mode: 'delay', and only there)",
      async () => {
        const bad: Record<string, unknown>[] = [
          { mode: 'delay' },
          { mode: 'delay', maxDelayMs: 0 },
          { mode: 'delay', maxDelayMs: -5 },
          { mode: 'delay', maxDelayMs: 1.5 },
          { mode: 'delay', maxDelayMs: Number.POSITIVE_INFINITY },
          { mode: 'delay', maxDelayMs: '5s' },
          { mode: 'delay', maxDelayMs: 2 ** 31 },
          { mode: 'delay', maxDelayMs: 1000, maxQueue: 0 },
          { mode: 'delay', maxDelayMs: 1000, maxQueue: 2.5 },
          { maxDelayMs: 1000 },
          { mode: 'shadow', maxDelayMs: 1000 },
          { maxQueue: 10 },
          { mode: 'slow' },
        ]
        for (const o of bad) {
          let error: unknown
          try {
            opened(await options.makeApp(o as AdapterAppOptions, 'app'))
          } catch (err) {
            error = err
          }
          expect((error as { code?: unknown } | undefined)?.code, JSON.stringify(o)).toBe(
            'ERR_FASTLIMIT_CONFIG',
          )
          expect((error as Error).message).toMatch(/^\[fastlimit\] \[[a-z]+\] .*(maxDelayMs|maxQueue|mode)/)
        }
      },
      timeout,
    )
  })
}
