// Hostile input at the adapters: every rateLimit() fuzzed with option objects (ConfigError at construction or a
// working middleware), hostile identities from the request (each its own limit), hostile costs (0 not counted,
// anything else unusable a 400 with nothing charged), a login reset that only the client's own success can
// trigger, an app-wide and a route limit in one set of headers, and a store outage answered 503, over real HTTP.
import { ConfigError, createHttpLimiter, FastLimit, FastlimitError, normalizeIdentity } from '@fastlimit/core'
import fc from 'fast-check'
import { afterAll, describe, expect, it } from 'vitest'
import { type FakeReq, fakeAdapter } from './fake-adapter'
import { formatTally, Recorder } from './helpers'
import { hostileValue, mutated, ruleObjectArb, ruleStringArb } from './hostile-values'
import { ADAPTERS, type AdapterName, get, makeMiddleware, startApp, startLoginApp } from './http-apps'

const recorder = new Recorder('hostile-http', 'hostile')
afterAll(() => recorder.save())

const shared = new FastLimit()
const circular: Record<string, unknown> = { error: 'x' }
circular.self = circular
const fn = fc.oneof(
  fc.constant(() => undefined),
  hostileValue,
)

/** rateLimit() options: a valid base with hostile fields, adapter-only options and unknown keys. */
const optionsArb = mutated(fc.constant({ rules: '10/s' }), {
  limiter: fc.oneof(fc.constant('shared'), fc.constant({ check: () => 1 }), hostileValue),
  rules: fc.oneof(ruleStringArb, ruleObjectArb, hostileValue),
  key: fc.oneof(
    fc.constant(() => 'user'),
    hostileValue,
  ),
  cost: fc.oneof(
    fc.constant(() => 2),
    hostileValue,
  ),
  skip: fc.oneof(
    fc.constant(() => false),
    hostileValue,
  ),
  onLimit: fn,
  clock: fc.oneof(fc.constant(Date.now), hostileValue),
  handler: fn,
  getConnInfo: fc.oneof(
    fc.constant(() => ({ remote: { address: '203.0.113.1' } })),
    hostileValue,
  ),
  allowList: fc.oneof(
    fc.constantFrom<unknown>(
      [],
      ['loopback'],
      ['10.0.0.0/8', '::1'],
      ['private', 'linklocal'],
      ['10.0.0.0/33'],
      ['::1/129'],
      ['1.2.3.4/8'],
      [''],
      ['loopbackk'],
      [' 10.0.0.1 '],
      ['010.0.0.1'],
      ['::ffff:10.0.0.0/104'],
      ['fe80::1%eth0'],
      ['__proto__'],
      'loopback',
      [1],
    ),
    hostileValue,
  ),
  headers: fc.oneof(
    fc.constantFrom('draft-6', 'draft-7', 'draft-8', 'legacy', true, false, 'draft-9', 'DRAFT-7'),
    hostileValue,
  ),
  legacyHeaders: fc.oneof(fc.boolean(), hostileValue),
  statusCode: fc.oneof(fc.constantFrom(429, 400, 599, 399, 600, 503.5, '429'), hostileValue),
  message: fc.oneof(
    fc.constantFrom<unknown>('slow down', { error: 'x' }, [1], circular, { big: 1n }, new Map()),
    fc.constant(() => 'x'),
    hostileValue,
  ),
  mode: fc.oneof(fc.constantFrom('enforce', 'shadow', 'delay', 'dry-run'), hostileValue),
  // Held at most 50 ms: a request of the shared limiter over its limit is held, never for long.
  maxDelayMs: fc.oneof(fc.constantFrom<unknown>(1, 50, 0, -1, 1.5, '50', 2 ** 31), hostileValue),
  maxQueue: fc.oneof(fc.constantFrom<unknown>(1, 10, 0, 1.5, '10', 1e9 + 1), hostileValue),
  trustProxy: fc.oneof(
    fc.constantFrom<unknown>(
      false,
      0,
      1,
      100,
      101,
      -1,
      1.5,
      true,
      'loopback',
      ['loopback'],
      ['10.0.0.0/8', '2001:db8::/32'],
      ['bad'],
      [],
      [1],
      { hops: 1, from: ['loopback'] },
      { hops: 2, from: 'private' },
      { hops: 1, from: 'any' },
      { from: ['10.0.0.0/8'] },
      { hops: 1 },
      { from: 'any' },
      { hops: 0, from: ['loopback'] },
      { hops: 1, from: ['bad'] },
      { hops: 1, from: [], more: 1 },
    ),
    hostileValue,
  ),
  skipMethods: fc.oneof(
    fc.constantFrom<unknown>([], ['OPTIONS'], ['options', 'HEAD'], 'OPTIONS', ['GET POST'], [''], [1]),
    hostileValue,
  ),
  normalize: fc.oneof(
    fc.constant((s: string) => s.toLowerCase()),
    fc.constant(normalizeIdentity),
    hostileValue,
  ),
  proxyHeader: fc.oneof(
    fc.constantFrom('x-forwarded-for', 'forwarded', 'X-Forwarded-For', 'x-real-ip'),
    hostileValue,
  ),
  ipv6Subnet: fc.oneof(
    fc.constantFrom<unknown>(56, 1, 64, 128, 0, 129, 1.5, false, true, '56'),
    hostileValue,
  ),
  scope: fc.oneof(fc.constantFrom('login', 'x'.repeat(64), 'x'.repeat(65), '', 'a|b', 'a b'), hostileValue),
  invalidCost: fc.oneof(
    fc.constantFrom<unknown>('reject', 1, 5, 0, -1, 1.5, 'clamp', '1', 2 ** 53),
    hostileValue,
  ),
  outageStatusCode: fc.oneof(fc.constantFrom<unknown>(503, 500, 429, 399, 600, 503.5, '503'), hostileValue),
})

describe('rateLimit() option objects', () => {
  it('fast-check: every adapter builds a middleware or throws ConfigError at construction; what builds, decides', async () => {
    const counts: Record<AdapterName, { built: number; refused: number }> = {
      express: { built: 0, refused: 0 },
      hono: { built: 0, refused: 0 },
      koa: { built: 0, refused: 0 },
    }
    let decided = 0
    let refusedAtRequest = 0
    await fc.assert(
      fc.asyncProperty(optionsArb, async (raw) => {
        const options: Record<string, unknown> = { ...raw }
        if (raw.limiter === 'shared') options.limiter = shared
        for (const adapter of ADAPTERS) {
          let middleware: unknown
          try {
            middleware = makeMiddleware(adapter, options)
          } catch (err) {
            if (!(err instanceof ConfigError))
              throw new Error(`${adapter}: not a ConfigError: ${String(err)}`, { cause: err })
            expect(
              err.message.startsWith(`[fastlimit] [${adapter}] `) ||
                err.message.startsWith('[fastlimit] [core] '),
              err.message,
            ).toBe(true)
            counts[adapter].refused++
            continue
          }
          expect(typeof middleware).toBe('function')
          counts[adapter].built++
        }
        // Options every adapter accepted also work: one request through the shared HTTP layer decides.
        const { handler: _h, getConnInfo: _g, ...common } = options
        let http: ReturnType<typeof createHttpLimiter<FakeReq, Record<string, string>>>
        try {
          http = createHttpLimiter(common, fakeAdapter)
        } catch (err) {
          expect(err).toBeInstanceOf(ConfigError)
          return
        }
        let denial: Awaited<ReturnType<typeof http.handle>>
        try {
          denial = await http.handle(
            { remote: '203.0.113.5', headers: { 'x-forwarded-for': '198.51.100.7' } },
            {},
          )
        } catch (err) {
          // A hostile key or cost function (e.g. one returning a number) is refused per request, clearly.
          expect(err).toBeInstanceOf(FastlimitError)
          expect((err as FastlimitError).code).toBe('ERR_FASTLIMIT_ARGUMENT')
          refusedAtRequest++
          return
        }
        expect(denial === undefined || (denial.status >= 400 && denial.status <= 599)).toBe(true)
        decided++
      }),
      { numRuns: 1500 },
    )
    for (const adapter of ADAPTERS) {
      const c = counts[adapter]
      expect(c.built, adapter).toBeGreaterThan(50)
      recorder.add({
        class: `${adapter}: rateLimit() option objects (fast-check)`,
        cases: c.built + c.refused,
        result: `${c.built} built, ${c.refused} ConfigError at construction, 0 other errors`,
      })
    }
    recorder.details.optionsDecided = { decided, refusedAtRequest }
  })
})

/** A key function reading the identity from the `u` query parameter, in each framework's terms. */
function keyFromQuery(adapter: AdapterName): (req: never) => string {
  if (adapter === 'express')
    return ((req: { query: Record<string, unknown> }) => String(req.query.u)) as never
  if (adapter === 'koa') return ((ctx: { query: Record<string, unknown> }) => String(ctx.query.u)) as never
  return ((c: { req: { query(name: string): string | undefined } }) => c.req.query('u') ?? '') as never
}

function costFromQuery(adapter: AdapterName): (req: never) => number {
  if (adapter === 'express')
    return ((req: { query: Record<string, unknown> }) => Number(req.query.c)) as never
  if (adapter === 'koa') return ((ctx: { query: Record<string, unknown> }) => Number(ctx.query.c)) as never
  return ((c: { req: { query(name: string): string | undefined } }) => Number(c.req.query('c'))) as never
}

const IDENTITIES = [
  '',
  ' ',
  '{',
  '}',
  'a{b}c',
  'a{b',
  'a%7Bb',
  '%',
  '%25',
  '\n',
  '\r\n',
  '\u0000',
  'a\u0000b',
  '\u2028',
  '😀',
  'é',
  'e\u0301',
  '__proto__',
  'constructor',
  'toString',
  'hasOwnProperty',
  'fl:{x}',
  'x}:{y',
  'login|1.2.3.4',
  'a'.repeat(200),
  `${'a'.repeat(200)}b`,
  'a'.repeat(3000),
  `${'a'.repeat(2999)}b`,
  '{'.repeat(3000),
]

describe('hostile identities and costs through the adapters (real HTTP)', () => {
  it.each(ADAPTERS)('%s: identities from the request each get their own limit', async (adapter) => {
    const app = await startApp(adapter, { rules: '2/h', key: keyFromQuery(adapter) })
    try {
      const rounds: number[][] = []
      for (let round = 0; round < 3; round++) {
        const row: number[] = []
        for (const id of IDENTITIES) row.push((await get(app, `/?u=${encodeURIComponent(id)}`)).status)
        rounds.push(row)
      }
      expect(rounds[0]?.every((s) => s === 200)).toBe(true)
      expect(rounds[1]?.every((s) => s === 200)).toBe(true)
      expect(rounds[2]?.every((s) => s === 429)).toBe(true)
      recorder.add({
        class: `${adapter}: hostile identities from the request (query), limit 2`,
        cases: IDENTITIES.length * 3,
        result: 'each identity: 200, 200, 429; no collisions',
      })
    } finally {
      await app.close()
    }
  })

  it.each(ADAPTERS)(
    '%s: hostile costs are a 400 (0 is not counted), never a 500, and charge nothing; 2^53-1 is a 429',
    async (adapter) => {
      // Before: every one of these was a 500 (ERR_FASTLIMIT_ARGUMENT in the error handler), 0 included.
      const limiter = new FastLimit()
      const app = await startApp(adapter, { limiter, rules: '3/h', cost: costFromQuery(adapter) })
      try {
        const seen: Record<string, number> = {}
        for (const c of ['0', '-0', '']) {
          const r = await get(app, `/?c=${encodeURIComponent(c)}`)
          expect(r.status, `cost ${c}`).toBe(200)
          expect(r.headers.ratelimit, `cost ${c}`).toBeUndefined()
          seen['200 not counted (cost 0)'] = (seen['200 not counted (cost 0)'] ?? 0) + 1
        }
        for (const c of ['-1', 'NaN', 'Infinity', '-Infinity', '1.5', '9007199254740992', '1e300', 'abc']) {
          const r = await get(app, `/?c=${encodeURIComponent(c)}`)
          expect(r.status, `cost ${c}`).toBe(400)
          expect(r.headers['content-type'], `cost ${c}`).toBe('application/problem+json')
          expect(JSON.parse(r.body), `cost ${c}`).toMatchObject({ title: 'Bad Request', status: 400 })
          seen['400 problem details'] = (seen['400 problem details'] ?? 0) + 1
        }
        const never = await get(app, `/?c=${2 ** 53 - 1}`)
        expect(never.status).toBe(429)
        expect(never.headers['retry-after']).toBeUndefined()
        seen['429 without Retry-After (can never pass)'] = 1
        // Nothing was charged by any of the above.
        const statuses: number[] = []
        for (let i = 0; i < 4; i++) statuses.push((await get(app, '/?c=1')).status)
        expect(statuses).toEqual([200, 200, 200, 429])
        recorder.add({
          class: `${adapter}: hostile costs from the request`,
          cases: 16,
          result: `${formatTally(seen)}; nothing charged (3 of 4 admitted after)`,
        })
      } finally {
        await app.close()
        await limiter.close()
      }
    },
  )
})

describe('the login bucket, layered limits and outages (real HTTP)', () => {
  const proxy = { trustProxy: { hops: 1, from: ['loopback'] } }

  it.each(ADAPTERS)(
    "%s: a login success resets only the client's own counter; an attacker's stays refused",
    async (adapter) => {
      const limiter = new FastLimit()
      const app = await startLoginApp(
        adapter,
        { limiter, rules: '1000/h', scope: 'app', ...proxy },
        { limiter, rules: '5/15m', scope: 'login', ...proxy },
      )
      try {
        const login = (ip: string, password: string) =>
          get(app, '/login', { 'x-forwarded-for': ip, 'x-password': password }, { method: 'POST' })
        const attacker = '198.51.100.66'
        const user = '203.0.113.50'
        const first: number[] = []
        for (let i = 0; i < 8; i++) first.push((await login(attacker, 'guess')).status)
        for (let i = 0; i < 4; i++) await login(user, 'typo')
        expect((await login(user, 'right')).status).toBe(200)
        // The user's own counter is back to 5; the attacker's is untouched by the user's success.
        const userAfter: number[] = []
        for (let i = 0; i < 6; i++) userAfter.push((await login(user, 'typo')).status)
        const attackerAfter: number[] = []
        for (let i = 0; i < 3; i++) attackerAfter.push((await login(attacker, 'right')).status)
        expect(first).toEqual([401, 401, 401, 401, 401, 429, 429, 429])
        expect(userAfter).toEqual([401, 401, 401, 401, 401, 429])
        expect(attackerAfter).toEqual([429, 429, 429])
        recorder.add({
          class: `${adapter}: login limit 5/15m, a user's success after 4 typos while an attacker guesses`,
          cases: 22,
          result: `attacker admitted 5 of 8 then 0 of 3 (even with the right password); user reset by its own success: 5 more tries`,
        })
      } finally {
        await app.close()
        await limiter.close()
      }
    },
  )

  it.each(ADAPTERS)(
    '%s: an app-wide and a login limit send one set of RateLimit headers describing both',
    async (adapter) => {
      // Before: only the login middleware's fields survived, and legacy fields described the app-wide rule.
      const limiter = new FastLimit()
      const app = await startApp(adapter, [
        { limiter, rules: '100/min', scope: 'app', legacyHeaders: true },
        { limiter, rules: '5/15m', scope: 'login' },
      ])
      try {
        const r = await get(app, '/login', {}, { method: 'POST' })
        expect(r.status).toBe(200)
        expect(r.headers['ratelimit-policy']).toBe('100;w=60, 5;w=900')
        expect(r.headers.ratelimit).toMatch(/^limit=5, remaining=4, reset=\d+$/)
        expect(r.headers['x-ratelimit-limit']).toBe('5')
        expect(r.headers['x-ratelimit-remaining']).toBe('4')
        recorder.add({
          class: `${adapter}: app-wide 100/min (legacyHeaders) + route 5/15m on one request`,
          cases: 1,
          result: `RateLimit-Policy: ${r.headers['ratelimit-policy']}; RateLimit and X-RateLimit-* both limit 5, remaining 4`,
        })
      } finally {
        await app.close()
        await limiter.close()
      }
    },
  )

  it.each(ADAPTERS)(
    '%s: a store outage under fail-closed is a 503 with Retry-After (breaker open or not); a rate limit stays 429',
    async (adapter) => {
      // Before: fail-closed refused with 429, like a rate limit.
      let calls = 0
      const down = new FastLimit({
        backend: {
          checkAndIncrement: () => {
            calls++
            return Promise.reject(new Error('connection refused'))
          },
        },
        onBackendError: 'fail-closed',
        breaker: { failures: 3, openMs: 60_000 },
      })
      const up = new FastLimit()
      const outage = await startApp(adapter, { limiter: down, rules: '5/min' })
      const limited = await startApp(adapter, { limiter: up, rules: '1/min' })
      try {
        const statuses: Record<string, number> = {}
        for (let i = 0; i < 10; i++) {
          const r = await get(outage, '/')
          expect(r.status).toBe(503)
          expect(r.headers['retry-after']).toBe('1')
          expect(r.headers.ratelimit).toBeUndefined()
          statuses[`${r.status} Retry-After ${r.headers['retry-after']}`] =
            (statuses[`${r.status} Retry-After ${r.headers['retry-after']}`] ?? 0) + 1
        }
        expect(calls).toBe(3)
        await get(limited, '/')
        expect((await get(limited, '/')).status).toBe(429)
        recorder.add({
          class: `${adapter}: store down under fail-closed (breaker after 3 failures), 10 requests`,
          cases: 10,
          result: `${formatTally(statuses)}; store called 3 times (breaker open after); rate limit still 429`,
        })
      } finally {
        await outage.close()
        await limited.close()
        await down.close()
        await up.close()
      }
    },
  )
})

describe('methods that are not counted, and identities spelled many ways (real HTTP)', () => {
  it.each(ADAPTERS)(
    '%s: a browser sending a CORS preflight before each request gets its whole budget',
    async (adapter) => {
      const admitted: Record<string, number> = {}
      for (const [name, options] of [
        ['default (OPTIONS not counted)', {}],
        ['skipMethods: [] (every method counted)', { skipMethods: [] }],
      ] as const) {
        const app = await startApp(adapter, { rules: '10/h', ...options })
        try {
          let ok = 0
          for (let i = 0; i < 10; i++) {
            const preflight = await get(
              app,
              '/api',
              { origin: 'https://app.example', 'access-control-request-method': 'POST' },
              { method: 'OPTIONS' },
            )
            expect(preflight.status).not.toBe(500)
            if (
              (await get(app, '/api', { origin: 'https://app.example' }, { method: 'POST' })).status === 200
            )
              ok++
          }
          admitted[name] = ok
        } finally {
          await app.close()
        }
      }
      expect(admitted).toEqual({
        'default (OPTIONS not counted)': 10,
        'skipMethods: [] (every method counted)': 5,
      })
      recorder.add({
        class: `${adapter}: 10 POSTs each after a CORS preflight, limit 10`,
        cases: 40,
        result: `POSTs admitted: ${formatTally(admitted)}`,
      })
    },
  )

  /** Seven spellings of one user name, as a client would send them (percent-encoded in the query). */
  const ADMIN = ['admin', 'Admin', 'ADMIN', 'ａｄｍｉｎ', 'admin\u200b', 'ad\u00admin', 'admın']

  it.each(ADAPTERS)(
    '%s: seven spellings of "admin" share one login limit with normalize: normalizeIdentity',
    async (adapter) => {
      const admitted: Record<string, number> = {}
      for (const [name, options] of [
        ['no normalize', {}],
        ['normalize: normalizeIdentity', { normalize: normalizeIdentity }],
      ] as const) {
        const app = await startApp(adapter, { rules: '3/15m', key: keyFromQuery(adapter), ...options })
        try {
          let ok = 0
          for (let round = 0; round < 3; round++) {
            for (const user of ADMIN) {
              if (
                (await get(app, `/login?u=${encodeURIComponent(user)}`, {}, { method: 'POST' })).status ===
                200
              )
                ok++
            }
          }
          admitted[name] = ok
        } finally {
          await app.close()
        }
      }
      expect(admitted).toEqual({ 'no normalize': 21, 'normalize: normalizeIdentity': 3 })
      recorder.add({
        class: `${adapter}: 21 login attempts with 7 spellings of "admin", limit 3`,
        cases: 42,
        result: `admitted: ${formatTally(admitted)}`,
      })
    },
  )
})

describe('scoped and unscoped identities on one limiter (real HTTP)', () => {
  /** A key function reading the `x-user` header, in each framework's terms. */
  function keyFromHeader(adapter: AdapterName): (req: never) => string {
    if (adapter === 'express')
      return ((req: { get(n: string): string | undefined }) => req.get('x-user') ?? 'anon') as never
    if (adapter === 'koa') return ((ctx: { get(n: string): string }) => ctx.get('x-user') || 'anon') as never
    return ((c: { req: { header(n: string): string | undefined } }) =>
      c.req.header('x-user') ?? 'anon') as never
  }

  it.each(ADAPTERS)(
    '%s: a client-chosen unscoped key "login|<victim ip>" cannot use up the victim’s scope: login budget',
    async (adapter) => {
      const limiter = new FastLimit()
      // App-wide, keyed by a header the client chooses; then the login limit, scoped, keyed by IP.
      const app = await startApp(adapter, [
        { limiter, rules: '5/h', key: keyFromHeader(adapter) },
        { limiter, rules: '5/h', scope: 'login', trustProxy: { hops: 1, from: ['loopback'] } },
      ])
      try {
        const victim = '203.0.113.50'
        for (let i = 0; i < 5; i++) {
          // The attacker's requests pass the first limiter and count against its own IP at the second.
          await get(
            app,
            '/login',
            { 'x-user': `login|${victim}`, 'x-forwarded-for': '198.51.100.66' },
            { method: 'POST' },
          )
        }
        let ok = 0
        for (let i = 0; i < 5; i++) {
          const r = await get(
            app,
            '/login',
            { 'x-user': 'victim', 'x-forwarded-for': victim },
            { method: 'POST' },
          )
          if (r.status === 200) ok++
        }
        expect(ok).toBe(5)
        recorder.add({
          class: `${adapter}: unscoped key "login|${victim}" used up (5), then the victim on the scope: 'login' route, limit 5`,
          cases: 10,
          result: `victim admitted ${ok} of 5`,
        })
      } finally {
        await app.close()
        await limiter.close()
      }
    },
  )
})
