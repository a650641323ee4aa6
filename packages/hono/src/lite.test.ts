// The lite entry against the full one (same statuses and headers for the same requests), its options,
// its store, a failing backend under each policy, and real Hono apps through app.request().
import {
  type Backend,
  type BackendResult,
  ConfigError,
  FastLimit,
  MemoryBackend,
  parseRules,
  type RulesInput,
} from '@fastlimit/core'
import { fixedWindow, gcra, proxyTrust } from '@fastlimit/core/lite'
import { Hono, type MiddlewareHandler } from 'hono'
import { describe, expect, it, vi } from 'vitest'
import { rateLimit as fullRateLimit } from './index'
import { liteMemoryBackend, rateLimit } from './lite'

const T0 = 1_700_000_000_000

/** A clock the test moves by hand: nothing depends on how fast the machine is. */
function fakeClock() {
  let now = T0
  return { now: () => now, advance: (ms: number) => (now += ms) }
}

/** The client address comes from a test header, for both entries alike (as getConnInfo on Workers). */
const getConnInfo = (c: { req: { header(name: string): string | undefined } }) => ({
  remote: { address: c.req.header('x-peer') },
})

function app(limit: MiddlewareHandler): Hono {
  const a = new Hono()
  a.onError((err, c) => c.text(String((err as { code?: string }).code ?? 'error'), 500))
  a.use(limit)
  a.get('/', (c) => c.text('ok'))
  a.get('/own', () => new Response('own', { headers: { 'x-own': '1' } }))
  return a
}

/** What the differential compares: status, the rate-limit headers and the body. */
async function seen(res: Response) {
  return {
    status: res.status,
    ratelimit: res.headers.get('ratelimit'),
    policy: res.headers.get('ratelimit-policy'),
    retryAfter: res.headers.get('retry-after'),
    body: await res.text(),
  }
}

/** A deterministic pseudo-random sequence (no Math.random: a failure replays). */
function lcg(seed: number) {
  let s = seed >>> 0
  return (n: number) => {
    s = (Math.imul(s, 1_664_525) + 1_013_904_223) >>> 0
    return s % n
  }
}

const PEERS = [
  '203.0.113.7',
  '::ffff:203.0.113.7', // the same client as 203.0.113.7
  '198.51.100.20',
  '2001:db8:1:2::1', // these three share a /64 (and so a /56)
  '2001:db8:1:2::ffff',
  '2001:db8:1:2:aaaa:bbbb:cccc:dddd',
  '2001:db8:1:3::1', // another /64, the same /56
  '2001:db8:2:100::1', // another /56
  '64:ff9b::198.51.100.20', // NAT64: the same client as 198.51.100.20
]

describe('@fastlimit/hono/lite answers exactly as @fastlimit/hono', () => {
  const cases: { name: string; rules: RulesInput; options?: Record<string, unknown> }[] = [
    { name: "'3/10s'", rules: '3/10s' },
    { name: "'10 per sec' with costs", rules: '10 per sec', options: { cost: true } },
    { name: 'two rules', rules: ['2/s', '5/min'] },
    { name: 'a burst', rules: { limit: 4, window: '10s', burst: 6, name: 'burst' } },
    {
      name: 'fixed-window with costs',
      rules: { limit: 5, window: '3s', algorithm: 'fixed-window' },
      options: { cost: true },
    },
    { name: '/64 subnets', rules: '4/5s', options: { ipv6Subnet: 64 } },
    { name: 'a scope and headers off', rules: '3/2s', options: { scope: 'login', headers: false } },
    {
      name: 'trusted proxies (X-Forwarded-For)',
      rules: '3/5s',
      options: { trust: { hops: 1, from: ['10.0.0.0/8'] } },
    },
  ]
  for (const { name, rules, options = {} } of cases) {
    it(name, async () => {
      const clock = fakeClock()
      const { cost: withCost, trust, ...rest } = options
      const cost =
        withCost === true
          ? (c: { req: { header(n: string): string | undefined } }) => Number(c.req.header('x-cost'))
          : undefined
      const full = app(
        fullRateLimit({
          rules,
          getConnInfo,
          clock: clock.now,
          limiter: new FastLimit({ backend: new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }) }),
          ...(cost ? { cost } : {}),
          ...(trust ? { trustProxy: trust as { hops: number; from: string[] } } : {}),
          ...rest,
        }),
      )
      const lite = app(
        rateLimit({
          rules,
          getConnInfo,
          clock: clock.now,
          backend: liteMemoryBackend({ clock: clock.now, steps: { gcra, 'fixed-window': fixedWindow } }),
          ...(cost ? { cost } : {}),
          ...(trust ? { trustProxy: proxyTrust(trust as { hops: number; from: string[] }) } : {}),
          ...rest,
        }),
      )
      const next = lcg(name.length * 7919)
      let refused = 0
      for (let i = 0; i < 400; i++) {
        clock.advance([0, 0, 1, 7, 50, 333, 1000, 2500][next(8)] as number)
        const peer = trust ? '10.0.0.5' : (PEERS[next(PEERS.length)] as string)
        const headers: Record<string, string> = {
          'x-peer': peer,
          'x-cost': String([1, 1, 2, 3, 0, 7][next(6)]),
        }
        if (trust) headers['x-forwarded-for'] = `${PEERS[next(3)]}, ${['10.0.0.9', '192.0.2.1'][next(2)]}`
        const path = next(5) === 0 ? '/own' : '/'
        const a = await seen(await full.request(path, { headers }))
        const b = await seen(await lite.request(path, { headers }))
        expect(b, `request ${i} from ${peer}`).toEqual(a)
        if (a.status === 429) refused++
      }
      // The sequence reaches the limits: the comparison covers refusals, not only admissions.
      expect(refused).toBeGreaterThan(10)
    })
  }
})

describe('liteMemoryBackend', () => {
  it('starts no timer, at construction or on use', async () => {
    vi.useFakeTimers()
    try {
      const store = liteMemoryBackend()
      const http = rateLimit({ rules: '2/min', key: () => 'k' })
      await store.checkAndIncrement('k', parseRules('1/min').rules[0] as never, 1)
      await app(http).request('/')
      expect(vi.getTimerCount()).toBe(0)
    } finally {
      vi.useRealTimers()
    }
  })

  it('holds at most maxKeys keys, dropping the least recently charged', () => {
    const clock = fakeClock()
    const store = liteMemoryBackend({ maxKeys: 3, clock: clock.now })
    const rule = parseRules('1/min').rules[0] as never
    for (const k of ['a', 'b', 'c']) expect(store.checkAndIncrementSync(k, rule, 1).allowed).toBe(true)
    expect(store.checkAndIncrementSync('a', rule, 1).allowed).toBe(false) // 'a' is used again, not charged
    expect(store.checkAndIncrementSync('d', rule, 1).allowed).toBe(true) // evicts 'a' (least recently charged)
    expect(store.size).toBe(3)
    for (let i = 0; i < 1000; i++) store.checkAndIncrementSync(`flood${i}`, rule, 1)
    expect(store.size).toBe(3)
    // 'a' was dropped: a fresh bucket.
    expect(store.checkAndIncrementSync('a', rule, 1).allowed).toBe(true)
  })

  it('treats an expired state as none (lazy expiry)', () => {
    const clock = fakeClock()
    const store = liteMemoryBackend({ clock: clock.now })
    const rule = parseRules('2/10s').rules[0] as never
    expect(store.checkAndIncrementSync('k', rule, 2).allowed).toBe(true)
    expect(store.checkAndIncrementSync('k', rule, 1).allowed).toBe(false)
    clock.advance(10_000)
    const r = store.checkAndIncrementSync('k', rule, 2)
    expect(r.allowed).toBe(true)
    expect(r.remaining).toBe(0)
  })

  it('keeps identities apart whatever characters they hold', async () => {
    const ids = [
      'a',
      'a\u0000',
      'a}',
      '{a}',
      '%7Ba%7D',
      'a\ud800',
      'a\udc00',
      'a'.repeat(300),
      `${'a'.repeat(300)}b`,
    ]
    const lite = app(rateLimit({ rules: '1/min', key: (c) => ids[Number(c.req.query('i'))] as string }))
    for (let i = 0; i < ids.length; i++) expect((await lite.request(`/?i=${i}`)).status, `id ${i}`).toBe(200)
    for (let i = 0; i < ids.length; i++) expect((await lite.request(`/?i=${i}`)).status, `id ${i}`).toBe(429)
  })

  it('refuses bad options and algorithms it has no step for', () => {
    expect(() => liteMemoryBackend({ maxKeys: 0 })).toThrow(ConfigError)
    expect(() => liteMemoryBackend({ steps: {} })).toThrow(ConfigError)
    const store = liteMemoryBackend()
    const rule = parseRules({ limit: 1, window: '1m', algorithm: 'sliding-window' }).rules[0] as never
    expect(() => store.checkAndIncrementSync('k', rule, 1)).toThrow(/no 'sliding-window' step/)
  })
})

describe('@fastlimit/hono/lite options', () => {
  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['an unknown option', { mode: 'delay' }, /Each option must be one of .*got "mode"/],
    ['a bad rule', { rules: '100/mn' }, /unknown unit "mn"/],
    ['an empty rule list', { rules: [] }, /the list is empty/],
    ['a status out of range', { statusCode: 600 }, /statusCode must be a whole number from 400 to 599/],
    ['an outage status out of range', { outageStatusCode: 99 }, /outageStatusCode must be/],
    ['a bad subnet', { ipv6Subnet: 0 }, /ipv6Subnet must be a prefix length/],
    ['a raw trustProxy setting', { trustProxy: { hops: 1, from: ['10.0.0.0/8'] } }, /proxyTrust\(setting\)/],
    ['another header format', { headers: 'draft-8' }, /headers must be 'draft-7', true or false/],
    ['a message that is neither', { message: 5 }, /message must be a string/],
    ['a key that is not a function', { key: 'ip' }, /key must be a function/],
    ['a timeout of 0', { timeoutMs: 0 }, /timeoutMs must be a whole number of milliseconds/],
    [
      "onBackendError 'throw'",
      { onBackendError: 'throw' },
      /onBackendError must be 'fail-open' or 'fail-closed'/,
    ],
    ['a bad prefix', { prefix: 'a b' }, /Invalid prefix/],
    ['a bad scope', { scope: 'a;b' }, /scope must be 1 to 64/],
    ['a backend without checkAndIncrement', { backend: {} }, /does not implement Backend/],
    [
      'another algorithm on the default store',
      { rules: { limit: 1, window: '1s', algorithm: 'sliding-window' } },
      /gcra/,
    ],
    ['a handler with a message', { handler: () => new Response(), message: 'no' }, /Give handler or message/],
    ['a bad getConnInfo', { getConnInfo: 'cf' }, /getConnInfo must be Hono's getConnInfo helper/],
  ]
  for (const [name, options, message] of bad) {
    it(`throws a ConfigError at construction for ${name}`, () => {
      expect(() => rateLimit(options as never)).toThrow(ConfigError)
      expect(() => rateLimit(options as never)).toThrow(message)
    })
  }

  it('proxyTrust checks the setting and the header as the full entry does, and reads Forwarded', async () => {
    expect(() => proxyTrust({ hops: 0, from: ['10.0.0.0/8'] })).toThrow(ConfigError)
    expect(() => proxyTrust({ hops: 1, from: ['not an address'] })).toThrow(/not an IP address/)
    expect(() => proxyTrust({ hops: 1, from: 'any' }, 'via' as never)).toThrow(/proxyHeader must be/)
    const lite = app(
      rateLimit({
        rules: '1/min',
        getConnInfo,
        trustProxy: proxyTrust({ hops: 1, from: ['loopback'] }, 'forwarded'),
      }),
    )
    const from = (peer: string, forwarded: string) =>
      lite.request('/', { headers: { 'x-peer': peer, forwarded, 'x-forwarded-for': '192.0.2.99' } })
    expect((await from('127.0.0.1', 'for=192.0.2.1')).status).toBe(200)
    expect((await from('127.0.0.1', 'for="192.0.2.1:4711"')).status).toBe(429)
    expect((await from('127.0.0.1', 'for=192.0.2.2')).status).toBe(200)
    // A client that reaches the app directly is its own address, whatever it claims.
    expect((await from('198.51.100.1', 'for=192.0.2.3')).status).toBe(200)
    expect((await from('198.51.100.1', 'for=192.0.2.4')).status).toBe(429)
  })

  it('refuses several rules on a backend without checkAndIncrementAll', () => {
    const backend: Backend = { checkAndIncrement: () => Promise.reject(new Error('unused')) }
    expect(() => rateLimit({ backend, rules: ['1/s', '10/min'] })).toThrow(/checkAndIncrementAll/)
    expect(() => rateLimit({ backend, rules: '1/s' })).not.toThrow()
  })
})

describe('@fastlimit/hono/lite on a failing backend', () => {
  const hanging: Backend = { checkAndIncrement: () => new Promise<BackendResult>(() => undefined) }
  const failing: Backend = { checkAndIncrement: () => Promise.reject(new Error('ECONNREFUSED')) }
  const throwing: Backend = {
    checkAndIncrement: () => {
      throw new Error('sync failure')
    },
  }
  for (const [name, backend] of [
    ['that never answers (timeoutMs)', hanging],
    ['that rejects', failing],
    ['that throws', throwing],
  ] as const) {
    it(`fail-open: a backend ${name} lets requests through, with no RateLimit headers`, async () => {
      const errors: unknown[] = []
      const lite = app(rateLimit({ backend, timeoutMs: 20, key: () => 'k' }))
      lite.onError((err, c) => {
        errors.push(err)
        return c.text('error', 500)
      })
      const res = await lite.request('/')
      expect(res.status).toBe(200)
      expect(res.headers.get('ratelimit')).toBeNull()
      expect(res.headers.get('retry-after')).toBeNull()
      expect(errors).toEqual([])
    })

    it(`fail-closed: a backend ${name} refuses with 503 and Retry-After: 1, no RateLimit headers`, async () => {
      const outages: string[] = []
      const lite = app(
        rateLimit({
          backend,
          timeoutMs: 20,
          onBackendError: 'fail-closed',
          key: () => 'k',
          onLimit: (_c, d) => outages.push(`${d.reason}:${d.source}:${d.error?.code}`),
        }),
      )
      const res = await lite.request('/')
      expect(res.status).toBe(503)
      expect(res.headers.get('retry-after')).toBe('1')
      expect(res.headers.get('ratelimit')).toBeNull()
      expect(await res.json()).toMatchObject({ status: 503, title: 'Service Unavailable' })
      const code = backend === hanging ? 'ERR_FASTLIMIT_TIMEOUT' : 'ERR_FASTLIMIT_BACKEND'
      expect(outages).toEqual([`fail-closed:policy:${code}`])
    })
  }

  it('an outage status of your choice, and the deadline handed to the backend', async () => {
    const deadlines: (number | undefined)[] = []
    const backend: Backend = {
      checkAndIncrement: (_k, _b, _c, options) => {
        deadlines.push(options?.deadline)
        return new Promise<BackendResult>(() => undefined)
      },
    }
    const before = Date.now()
    const lite = app(
      rateLimit({
        backend,
        timeoutMs: 20,
        onBackendError: 'fail-closed',
        outageStatusCode: 500,
        key: () => 'k',
      }),
    )
    expect((await lite.request('/')).status).toBe(500)
    expect(deadlines).toHaveLength(1)
    expect(deadlines[0]).toBeGreaterThanOrEqual(before + 20)
  })

  it("a backend's ConfigError goes to Hono's onError, not to the policy", async () => {
    const backend: Backend = {
      checkAndIncrement: () => Promise.reject(new ConfigError('[fastlimit] [custom] misconfigured')),
    }
    const res = await app(rateLimit({ backend, key: () => 'k' })).request('/')
    expect(res.status).toBe(500)
    expect(await res.text()).toBe('ERR_FASTLIMIT_CONFIG')
  })
})

describe('@fastlimit/hono/lite in real Hono apps (app.request)', () => {
  it('admits the limit, then 429 with RateLimit headers, Retry-After and problem details', async () => {
    const clock = fakeClock()
    const lite = app(
      rateLimit({
        rules: '2/min',
        getConnInfo,
        clock: clock.now,
        backend: liteMemoryBackend({ clock: clock.now }),
      }),
    )
    const get = () => lite.request('/', { headers: { 'x-peer': '192.0.2.1' } })
    const first = await get()
    expect(first.status).toBe(200)
    expect(first.headers.get('ratelimit')).toBe('limit=2, remaining=1, reset=30')
    expect(first.headers.get('ratelimit-policy')).toBe('2;w=60')
    expect((await get()).status).toBe(200)
    const refused = await get()
    expect(refused.status).toBe(429)
    expect(refused.headers.get('retry-after')).toBe('30')
    expect(refused.headers.get('ratelimit')).toBe('limit=2, remaining=0, reset=30')
    expect(refused.headers.get('content-type')).toBe('application/problem+json')
    expect(await refused.json()).toEqual({
      type: 'about:blank',
      title: 'Too Many Requests',
      status: 429,
      detail: 'Too many requests; retry in 30 seconds.',
    })
  })

  it('keeps its headers on a Response the handler builds itself', async () => {
    const res = await app(rateLimit({ rules: '5/min', key: () => 'k' })).request('/own')
    expect(res.headers.get('x-own')).toBe('1')
    expect(res.headers.get('ratelimit')).toMatch(/^limit=5, remaining=4, reset=\d+$/)
  })

  it('on a route, with skip, skipMethods, cost 0 and an unusable cost', async () => {
    const a = new Hono()
    const limit = rateLimit({
      rules: '1/min',
      key: () => 'k',
      skip: (c) => c.req.header('x-skip') === '1',
      cost: (c) => Number(c.req.header('x-cost') ?? '1'),
    })
    a.on(['GET', 'OPTIONS'], '/limited', limit, (c) => c.text('ok'))
    a.get('/free', (c) => c.text('free'))
    expect((await a.request('/free')).status).toBe(200)
    expect((await a.request('/limited', { headers: { 'x-cost': '0' } })).headers.get('ratelimit')).toBeNull()
    const bad = await a.request('/limited', { headers: { 'x-cost': 'abc' } })
    expect(bad.status).toBe(400)
    expect(await bad.json()).toMatchObject({ status: 400, title: 'Bad Request' })
    expect((await a.request('/limited')).status).toBe(200)
    expect((await a.request('/limited')).status).toBe(429)
    expect((await a.request('/limited', { headers: { 'x-skip': '1' } })).status).toBe(200)
    expect((await a.request('/limited', { method: 'OPTIONS' })).status).toBe(200)
  })

  it('a message, a handler, and a custom status', async () => {
    // A clock that does not move: the wait reported is exact.
    const frozen = () => liteMemoryBackend({ clock: () => T0 })
    const text = app(
      rateLimit({ rules: '1/min', key: () => 'k', backend: frozen(), message: 'slow down', statusCode: 503 }),
    )
    await text.request('/')
    const t = await text.request('/')
    expect([t.status, await t.text(), t.headers.get('content-type')]).toEqual([
      503,
      'slow down',
      'text/plain; charset=utf-8',
    ])
    const json = app(
      rateLimit({
        rules: '1/min',
        key: () => 'k',
        backend: frozen(),
        message: async (_c, d) => ({ wait: d.retryAfterMs }),
      }),
    )
    await json.request('/')
    expect(await (await json.request('/')).json()).toEqual({ wait: 60_000 })
    const own = app(
      rateLimit({
        rules: '1/min',
        key: () => 'k',
        backend: frozen(),
        handler: (c, d) => c.text(`no: ${d.reason}`, 418),
      }),
    )
    await own.request('/')
    const h = await own.request('/')
    expect([h.status, await h.text(), h.headers.get('retry-after')]).toEqual([418, 'no: rate-limited', '60'])
  })

  it("without an address or key, fails with the full entry's hint", async () => {
    const res = await app(rateLimit()).request('/')
    expect(res.status).toBe(500)
    expect(await res.text()).toBe('ERR_FASTLIMIT_CONFIG')
    const errors: string[] = []
    const a = app(rateLimit())
    a.onError((err, c) => {
      errors.push((err as Error).message)
      return c.text('', 500)
    })
    await a.request('/')
    expect(errors[0]).toMatch(/pass key: \(c\) => \.\.\. .*getConnInfo from your runtime/)
  })

  it("reads @hono/node-server's socket without getConnInfo", async () => {
    const lite = app(rateLimit({ rules: '1/min' }))
    const env = (ip: string) => ({ incoming: { socket: { remoteAddress: ip } } })
    expect((await lite.request('/', {}, env('192.0.2.1'))).status).toBe(200)
    expect((await lite.request('/', {}, env('::ffff:192.0.2.1'))).status).toBe(429)
    expect((await lite.request('/', {}, env('192.0.2.2'))).status).toBe(200)
  })
})
