import { describe, expect, it, vi } from 'vitest'
import type { Backend } from '../backend'
import { ConfigError, FastlimitError } from '../errors'
import { type BackendErrorPolicy, type Decision, FastLimit } from '../limiter'
import { MemoryBackend } from '../memory'
import { fakeClock } from '../testing'
import { createHttpLimiter, type HttpAdapter, problemDetails } from './http-limiter'
import type { RateLimitCommonOptions } from './options'

interface Req {
  remote?: string | undefined
  headers?: Record<string, string>
  method?: string
  user?: string
  weight?: number
}
type Res = Record<string, string>

const adapter: HttpAdapter<Req, Res> = {
  name: 'test',
  extraOptions: ['handler'],
  remoteAddress: (req) => req.remote,
  header: (req, name) => req.headers?.[name],
  method: (req) => req.method ?? 'GET',
  setHeader: (res, name, value) => {
    res[name] = value
  },
}

const T0 = 1_700_000_040_000

function make(options: RateLimitCommonOptions<Req> = {}) {
  const clock = fakeClock(T0)
  const limiter = new FastLimit({ backend: new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }) })
  const http = createHttpLimiter<Req, Res>({ limiter, clock: clock.now, ...options }, adapter)
  const send = async (req: Req = { remote: '203.0.113.7' }) => {
    const res: Res = {}
    const denial = await http.handle(req, res)
    return { res, denial }
  }
  return { clock, limiter, http, send }
}

const brokenBackend = (): Backend => {
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

describe('createHttpLimiter: per request', () => {
  it('admits exactly the limit, then refuses with 429, Retry-After and problem details', async () => {
    const { send } = make({ rules: '3/min' })
    const results = []
    for (let i = 0; i < 4; i++) results.push(await send())
    expect(results.map((r) => r.denial?.status)).toEqual([undefined, undefined, undefined, 429])
    expect(results[0]?.res).toEqual({
      'ratelimit-policy': '3;w=60',
      ratelimit: 'limit=3, remaining=2, reset=20',
    })
    const last = results[3]
    expect(last?.res).toEqual({
      'ratelimit-policy': '3;w=60',
      ratelimit: 'limit=3, remaining=0, reset=20',
      'retry-after': '20',
    })
    expect(last?.denial?.contentType).toBe('application/problem+json')
    expect(last?.denial?.body).toBe(
      '{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"Too many requests; retry in 20 seconds."}',
    )
    expect(JSON.parse(last?.denial?.body ?? '')).toMatchObject({ status: 429 })
  })

  it('defaults to 100 per minute with draft-7 headers', async () => {
    const { send } = make()
    const { res } = await send()
    expect(res).toEqual({ 'ratelimit-policy': '100;w=60', ratelimit: 'limit=100, remaining=99, reset=1' })
  })

  it('keys by client IP: IPv4-mapped IPv6 as IPv4, IPv6 by /56 unless told otherwise', async () => {
    const { send } = make({ rules: '1/min' })
    expect((await send({ remote: '203.0.113.7' })).denial).toBeUndefined()
    expect((await send({ remote: '::ffff:203.0.113.7' })).denial?.status).toBe(429)
    expect((await send({ remote: '2001:db8:0:ab00::1' })).denial).toBeUndefined()
    expect((await send({ remote: '2001:db8:0:abff:1:2:3:4' })).denial?.status).toBe(429)
    expect((await send({ remote: '2001:db8:0:ab00::1' })).denial?.status).toBe(429) // cached key
    expect((await send({ remote: '2001:db8:0:ac00::1' })).denial).toBeUndefined()

    const single = make({ rules: '1/min', ipv6Subnet: false })
    expect((await single.send({ remote: '2001:db8::1' })).denial).toBeUndefined()
    expect((await single.send({ remote: '2001:db8::2' })).denial).toBeUndefined()
    expect((await single.send({ remote: '2001:DB8:0::1' })).denial?.status).toBe(429)

    const by64 = make({ rules: '1/min', ipv6Subnet: 64 })
    expect((await by64.send({ remote: '2001:db8:0:ab00::1' })).denial).toBeUndefined()
    expect((await by64.send({ remote: '2001:db8:0:ab01::1' })).denial).toBeUndefined()
    expect((await by64.send({ remote: '2001:db8:0:ab01::2' })).denial?.status).toBe(429)
  })

  it('keys IPv6 that embeds an IPv4 client as that client (NAT64, translated, compatible, 6to4, Teredo)', async () => {
    const { send } = make({ rules: '1/min' })
    expect((await send({ remote: '64:ff9b::203.0.113.7' })).denial).toBeUndefined()
    expect((await send({ remote: '203.0.113.7' })).denial?.status).toBe(429)
    expect((await send({ remote: '::ffff:0:203.0.113.7' })).denial?.status).toBe(429)
    expect((await send({ remote: '64:ff9b::203.0.113.8' })).denial).toBeUndefined()
    expect((await send({ remote: '::203.0.113.9' })).denial).toBeUndefined()
    expect((await send({ remote: '2002:cb00:710a::1' })).denial).toBeUndefined()
    expect((await send({ remote: '2002:cb00:710a:ff00::1' })).denial?.status).toBe(429)
    // clientAddress gives the address as it is, not the key.
    const proxied = make({ trustProxy: ['loopback'] })
    const req = { remote: '127.0.0.1', headers: { 'x-forwarded-for': '64:ff9b::203.0.113.7' } }
    expect(proxied.http.clientAddress(req)).toBe('64:ff9b::cb00:7107')
  })

  it('keeps its key cache bounded', async () => {
    const { send, limiter } = make({ rules: '1/min' })
    for (let i = 0; i < 10_050; i++) await send({ remote: `2001:db8:${i.toString(16)}::1` })
    expect((await send({ remote: '2001:db8:0::9' })).denial?.status).toBe(429)
    await limiter.close()
  })

  it('ignores X-Forwarded-For unless a proxy is trusted, then walks it', async () => {
    const { send } = make({ rules: '1/min' })
    const spoof = (ip: string) => ({ remote: '127.0.0.1', headers: { 'x-forwarded-for': ip } })
    expect((await send(spoof('6.6.6.1'))).denial).toBeUndefined()
    expect((await send(spoof('6.6.6.2'))).denial?.status).toBe(429) // same peer, whatever the header says

    const proxied = make({ rules: '1/min', trustProxy: ['loopback'] })
    expect((await proxied.send(spoof('198.51.100.1'))).denial).toBeUndefined()
    expect((await proxied.send(spoof('198.51.100.2'))).denial).toBeUndefined()
    expect((await proxied.send(spoof('6.6.6.6, 198.51.100.2'))).denial?.status).toBe(429)
    expect(proxied.http.clientAddress(spoof('6.6.6.6, 2001:db8::7'))).toBe('2001:db8::7')

    const forwarded = make({ rules: '1/min', trustProxy: 1, proxyHeader: 'forwarded' })
    const fwd = (v: string) => ({
      remote: '10.0.0.1',
      headers: { forwarded: v, 'x-forwarded-for': '6.6.6.6' },
    })
    expect((await forwarded.send(fwd('for="[2001:db8:0:ab00::1]:4711"'))).denial).toBeUndefined()
    expect((await forwarded.send(fwd('for="[2001:db8:0:abcd::2]"'))).denial?.status).toBe(429)
    expect((await forwarded.send(fwd('for=198.51.100.1'))).denial).toBeUndefined()
  })

  it('believes { hops, from } only from a peer in from: a direct client is its own address', async () => {
    const { send } = make({ rules: '1/min', trustProxy: { hops: 1, from: ['10.0.0.0/8'] } })
    const direct = (xff: string) => ({ remote: '203.0.113.5', headers: { 'x-forwarded-for': xff } })
    expect((await send(direct('198.51.100.1'))).denial).toBeUndefined()
    expect((await send(direct('198.51.100.2'))).denial?.status).toBe(429)
    const via = (xff: string) => ({ remote: '10.0.0.1', headers: { 'x-forwarded-for': xff } })
    expect((await send(via('198.51.100.1'))).denial).toBeUndefined()
    expect((await send(via('198.51.100.2'))).denial).toBeUndefined()
    // An allow list is matched against what trust found, never against a direct client's header.
    const allowed = make({
      rules: '1/min',
      allowList: ['127.0.0.1'],
      trustProxy: { hops: 1, from: ['10.0.0.0/8'] },
    })
    const claim = { remote: '203.0.113.5', headers: { 'x-forwarded-for': '127.0.0.1' } }
    expect((await allowed.send(claim)).denial).toBeUndefined()
    expect((await allowed.send(claim)).denial?.status).toBe(429)
    const ops = { remote: '10.0.0.1', headers: { 'x-forwarded-for': '127.0.0.1' } }
    for (let i = 0; i < 3; i++) expect(await allowed.send(ops)).toEqual({ res: {} })
  })

  it('fails clearly when it cannot find an address, and counts a non-IP peer as it is', async () => {
    const { send } = make({ rules: '1/min' })
    await expect(send({ remote: undefined })).rejects.toThrow(
      /\[fastlimit\] \[test\] Cannot find the client's address/,
    )
    await expect(send({ remote: undefined })).rejects.toBeInstanceOf(ConfigError)
    expect((await send({ remote: 'unix:/tmp/sock' })).denial).toBeUndefined()
    expect((await send({ remote: 'unix:/tmp/sock' })).denial?.status).toBe(429)
    const proxied = make({ rules: '1/min', trustProxy: ['10.0.0.0/8'] })
    await expect(proxied.send({ remote: undefined })).rejects.toThrow(ConfigError)
    expect(
      (await proxied.send({ remote: undefined, headers: { 'x-forwarded-for': '198.51.100.1' } })).denial,
    ).toBe(undefined)
    // A key of your own needs no address.
    const keyed = make({ rules: '1/min', key: (req) => req.user ?? 'anon' })
    expect((await keyed.send({ remote: undefined, user: 'u1' })).denial).toBeUndefined()
  })

  it('skips (sync or async) without counting or headers', async () => {
    const skip = vi.fn((req: Req) => req.user === 'admin')
    const { send } = make({ rules: '1/min', skip })
    for (let i = 0; i < 3; i++)
      expect(await send({ remote: '203.0.113.7', user: 'admin' })).toEqual({ res: {} })
    expect((await send()).denial).toBeUndefined()
    expect((await send()).denial?.status).toBe(429)
    expect(skip).toHaveBeenCalledTimes(5)
    const asyncSkip = make({ rules: '1/min', skip: async (req) => req.user === 'admin' })
    for (let i = 0; i < 3; i++)
      expect((await asyncSkip.send({ remote: '1.1.1.1', user: 'admin' })).res).toEqual({})
    expect((await asyncSkip.send({ remote: '1.1.1.1' })).denial).toBeUndefined()
  })

  it('does not count OPTIONS (CORS preflights) unless told to, and skips the methods given', async () => {
    const { send } = make({ rules: '2/min' })
    for (let i = 0; i < 5; i++) {
      expect(await send({ remote: '203.0.113.7', method: 'OPTIONS' })).toEqual({ res: {} })
    }
    expect((await send({ remote: '203.0.113.7', method: 'HEAD' })).denial).toBeUndefined()
    expect((await send({ remote: '203.0.113.7' })).denial).toBeUndefined()
    expect((await send({ remote: '203.0.113.7' })).denial?.status).toBe(429)
    const all = make({ rules: '1/min', skipMethods: [] })
    expect((await all.send({ remote: '203.0.113.7', method: 'OPTIONS' })).denial).toBeUndefined()
    expect((await all.send({ remote: '203.0.113.7', method: 'OPTIONS' })).denial?.status).toBe(429)
    const reads = make({ rules: '1/min', skipMethods: ['get', 'HEAD'] })
    for (let i = 0; i < 3; i++)
      expect((await reads.send({ remote: '1.1.1.1', method: 'GET' })).res).toEqual({})
    expect((await reads.send({ remote: '1.1.1.1', method: 'OPTIONS' })).denial).toBeUndefined()
    expect((await reads.send({ remote: '1.1.1.1', method: 'POST' })).denial?.status).toBe(429)
  })

  it('normalizes identities from key with normalize', async () => {
    const seen: string[] = []
    const { send } = make({
      rules: '1/min',
      key: (req) => req.user ?? '',
      normalize: (id) => {
        seen.push(id)
        return id.toLowerCase()
      },
    })
    expect((await send({ remote: '1.1.1.1', user: 'Admin' })).denial).toBeUndefined()
    expect((await send({ remote: '2.2.2.2', user: 'ADMIN' })).denial?.status).toBe(429)
    expect(seen).toEqual(['Admin', 'ADMIN'])
  })

  it('never limits the allow list, matched after the proxy walk', async () => {
    const { send } = make({ rules: '1/min', allowList: ['10.0.0.0/8', '2001:db8::/32'], trustProxy: 1 })
    const via = (ip: string) => ({ remote: '127.0.0.1', headers: { 'x-forwarded-for': ip } })
    for (let i = 0; i < 3; i++) expect(await send(via('10.1.2.3'))).toEqual({ res: {} })
    for (let i = 0; i < 3; i++) expect(await send(via('2001:db8::1'))).toEqual({ res: {} })
    expect((await send(via('198.51.100.1'))).denial).toBeUndefined()
    expect((await send(via('198.51.100.1'))).denial?.status).toBe(429)
  })

  it('uses custom keys (sync or async) and scopes', async () => {
    const { send } = make({ rules: '1/min', key: async (req) => `user:${req.user}` })
    expect((await send({ remote: '1.1.1.1', user: 'a' })).denial).toBeUndefined()
    expect((await send({ remote: '2.2.2.2', user: 'a' })).denial?.status).toBe(429)
    expect((await send({ remote: '1.1.1.1', user: 'b' })).denial).toBeUndefined()

    const clock = fakeClock(T0)
    const limiter = new FastLimit({ backend: new MemoryBackend({ clock: clock.now }) })
    const a = createHttpLimiter<Req, Res>({ limiter, rules: '1/min', scope: 'a', clock: clock.now }, adapter)
    const b = createHttpLimiter<Req, Res>({ limiter, rules: '1/min', scope: 'b', clock: clock.now }, adapter)
    const req = { remote: '1.1.1.1' }
    expect(await a.handle(req, {})).toBeUndefined()
    expect(await b.handle(req, {})).toBeUndefined()
    expect((await a.handle(req, {}))?.status).toBe(429)
    // The scope is the limiter's, not a prefix: no unscoped identity reaches it, with or without a cost.
    const open = createHttpLimiter<Req, Res>({ limiter, rules: '1/min', key: (r) => r.user ?? '' }, adapter)
    expect(await open.handle({ user: 'c|2.2.2.2' }, {})).toBeUndefined()
    const c = createHttpLimiter<Req, Res>({ limiter, rules: '1/min', scope: 'c', cost: () => 1 }, adapter)
    expect(await c.handle({ remote: '2.2.2.2' }, {})).toBeUndefined()
    expect((await c.handle({ remote: '2.2.2.2' }, {}))?.status).toBe(429)
    expect((await limiter.peek('2.2.2.2', '1/min', { scope: 'c' })).remaining).toBe(0)
    expect((await limiter.peek('c|2.2.2.2', '1/min')).remaining).toBe(0)
  })

  it('charges a cost (sync or async) and refuses a cost that can never pass without Retry-After', async () => {
    const { send } = make({ rules: '10/min', cost: (req) => req.weight ?? 1 })
    expect((await send({ remote: '1.1.1.1', weight: 4 })).res.ratelimit).toBe(
      'limit=10, remaining=6, reset=24',
    )
    const tooBig = await send({ remote: '1.1.1.1', weight: 11 })
    expect(tooBig.denial?.status).toBe(429)
    expect(tooBig.res['retry-after']).toBeUndefined()
    expect(JSON.parse(tooBig.denial?.body ?? '').detail).toBe(
      'This request costs more than the rate limit can ever admit.',
    )
    await expect(send({ remote: '1.1.1.1', weight: 0 })).rejects.toMatchObject({
      code: 'ERR_FASTLIMIT_ARGUMENT',
    })
    const asyncCost = make({ rules: '10/min', cost: async () => 10 })
    expect((await asyncCost.send()).res.ratelimit).toBe('limit=10, remaining=0, reset=60')
    expect((await asyncCost.send()).denial?.status).toBe(429)
  })

  it('in shadow mode decides, sets headers and reports, but never refuses', async () => {
    const onLimit = vi.fn()
    const { send } = make({ rules: '2/min', mode: 'shadow', onLimit })
    const out = []
    for (let i = 0; i < 4; i++) out.push(await send())
    expect(out.map((o) => o.denial)).toEqual([undefined, undefined, undefined, undefined])
    expect(out[3]?.res).toEqual({ 'ratelimit-policy': '2;w=60', ratelimit: 'limit=2, remaining=0, reset=30' })
    expect(onLimit).toHaveBeenCalledTimes(2)
    const [req, decision] = onLimit.mock.calls[0] as [Req, Decision]
    expect(req.remote).toBe('203.0.113.7')
    expect(decision).toMatchObject({ allowed: false, reason: 'rate-limited', retryAfterMs: 30_000 })
  })

  it('reports refusals in enforce mode too', async () => {
    const onLimit = vi.fn()
    const { send } = make({ rules: '1/min', onLimit })
    await send()
    await send()
    expect(onLimit).toHaveBeenCalledOnce()
  })

  it("hands every decision to the adapter's expose, in both modes, but not for skipped requests", async () => {
    const seen: Array<[Req, Res, Decision]> = []
    const clock = fakeClock(T0)
    const limiter = new FastLimit({ backend: new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }) })
    const exposing: HttpAdapter<Req, Res> = {
      ...adapter,
      expose: (req, res, d) => void seen.push([req, res, d]),
    }
    for (const mode of ['enforce', 'shadow'] as const) {
      seen.length = 0
      const http = createHttpLimiter<Req, Res>(
        { limiter, clock: clock.now, rules: '1/min', mode, scope: mode, skip: (req) => req.user === 'skip' },
        exposing,
      )
      const req: Req = { remote: '203.0.113.7' }
      const res: Res = {}
      await http.handle(req, res)
      await http.handle(req, {})
      await http.handle({ remote: '203.0.113.7', user: 'skip' }, {})
      expect(seen.map(([, , d]) => [d.allowed, d.remaining])).toEqual([
        [true, 0],
        [false, 0],
      ])
      expect(seen[0]?.[0]).toBe(req)
      expect(seen[0]?.[1]).toBe(res)
    }
    expect(() => createHttpLimiter({}, { ...adapter, expose: 1 as never })).toThrow(
      /expose must be a function/,
    )
  })

  it('sends the message given: text, JSON, or a function of the decision', async () => {
    const text = make({ rules: '1/min', message: 'Slow down.' })
    await text.send()
    expect((await text.send()).denial).toMatchObject({
      contentType: 'text/plain; charset=utf-8',
      body: 'Slow down.',
    })
    const json = make({ rules: '1/min', message: { error: 'rate_limited' } })
    await json.send()
    expect((await json.send()).denial).toMatchObject({
      contentType: 'application/json; charset=utf-8',
      body: '{"error":"rate_limited"}',
    })
    const fn = make({ rules: '1/min', message: async (req, d) => ({ ip: req.remote, wait: d.retryAfterMs }) })
    await fn.send()
    expect((await fn.send()).denial?.body).toBe('{"ip":"203.0.113.7","wait":60000}')
    const fnText = make({ rules: '1/min', message: () => 'no' })
    await fnText.send()
    expect((await fnText.send()).denial).toMatchObject({
      contentType: 'text/plain; charset=utf-8',
      body: 'no',
    })
  })

  it('uses the status code given, with its reason phrase in the problem details', async () => {
    const { send } = make({ rules: '1/min', statusCode: 503 })
    await send()
    const { denial } = await send()
    expect(denial?.status).toBe(503)
    expect(JSON.parse(denial?.body ?? '')).toMatchObject({ title: 'Service Unavailable', status: 503 })
  })

  it.each([
    ['draft-6', ['ratelimit-policy', 'ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset']],
    ['draft-7', ['ratelimit-policy', 'ratelimit']],
    ['draft-8', ['ratelimit-policy', 'ratelimit']],
    ['legacy', ['x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset']],
    [false, []],
    [true, ['ratelimit-policy', 'ratelimit']],
  ] as const)('headers: %s', async (headers, names) => {
    const { send } = make({ rules: '1/min', headers })
    expect(Object.keys((await send()).res)).toEqual(names)
    expect(Object.keys((await send()).res)).toEqual([...names, 'retry-after'])
  })

  describe('backend down', () => {
    const down = (onBackendError: BackendErrorPolicy, extra: RateLimitCommonOptions<Req> = {}) => {
      const limiter = new FastLimit({ backend: brokenBackend(), onBackendError })
      const http = createHttpLimiter<Req, Res>({ limiter, rules: '1/min', ...extra }, adapter)
      return async () => {
        const res: Res = {}
        return { res, denial: await http.handle({ remote: '1.1.1.1' }, res) }
      }
    }

    it('fail-open admits, with no RateLimit headers (nothing is known)', async () => {
      const send = down('fail-open')
      for (let i = 0; i < 3; i++) expect(await send()).toEqual({ res: {}, denial: undefined })
    })

    it('fail-closed refuses with Retry-After: 1 and says why', async () => {
      const onLimit = vi.fn()
      const send = down('fail-closed', { onLimit })
      const { res, denial } = await send()
      expect(res).toEqual({ 'retry-after': '1' })
      expect(denial?.status).toBe(429)
      expect(JSON.parse(denial?.body ?? '').detail).toBe(
        'The rate limiter is unavailable; retry in 1 second.',
      )
      expect(onLimit).toHaveBeenCalledOnce()
      // shadow mode never refuses, even then
      expect((await down('fail-closed', { mode: 'shadow' })()).denial).toBeUndefined()
    })

    it('throw rejects with the backend error for the framework to handle', async () => {
      const send = down('throw')
      await expect(send()).rejects.toBeInstanceOf(FastlimitError)
      await expect(send()).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_BACKEND' })
    })

    it('a fallback backend decides, with its headers', async () => {
      const send = down({ fallback: new MemoryBackend() })
      expect((await send()).res.ratelimit).toMatch(/^limit=1, remaining=0, reset=\d+$/)
      expect((await send()).denial?.status).toBe(429)
    })
  })
})

describe('createHttpLimiter: warnings, once per process', () => {
  const registry = (globalThis as Record<symbol, unknown>)[Symbol.for('fastlimit.warnings')] as Set<string>
  const capture = () => {
    registry.clear()
    return vi.spyOn(console, 'warn').mockImplementation(() => undefined)
  }

  it('warns once about a trustProxy that believes any peer, naming the fix', () => {
    const warn = capture()
    try {
      make({ trustProxy: 2 })
      make({ trustProxy: 1 })
      expect(warn).toHaveBeenCalledTimes(1)
      expect(warn.mock.calls[0]?.[0]).toBe(
        '[fastlimit] [test] trustProxy: 2 believes X-Forwarded-For from any peer: a client that reaches the app ' +
          'directly, not through your proxy, picks its own address, so its own limit and a way past allowList. ' +
          "Say where your proxies are: trustProxy: { hops: 2, from: ['10.0.0.0/8'] } (their addresses or " +
          "networks; 'private' and 'loopback' work too), or trustProxy: { hops: 2, from: 'any' } if nothing " +
          'but your proxies can reach the app.',
      )
      registry.clear()
      make({ trustProxy: { hops: 1, from: 'any' } })
      make({ trustProxy: { hops: 1, from: ['private'] } })
      make({ trustProxy: ['loopback'] })
      expect(warn).toHaveBeenCalledTimes(1)
      make({ trustProxy: ['0.0.0.0/0'] })
      expect(warn).toHaveBeenCalledTimes(2)
    } finally {
      warn.mockRestore()
    }
  })

  it('warns once when a local peer sends forwarding headers that trust does not cover', async () => {
    const warn = capture()
    try {
      const { send } = make({ rules: '100/min' })
      // A public peer with forwarding headers is a client that sent them: nothing to say.
      await send({ remote: '203.0.113.7', headers: { 'x-forwarded-for': '6.6.6.6' } })
      // A local peer without them is a local client.
      for (let i = 0; i < 200; i++) await send({ remote: '10.0.0.5' })
      expect(warn).not.toHaveBeenCalled()
      // Looked at one request in 64: within 64 requests from the proxy.
      for (let i = 0; i < 64; i++)
        await send({ remote: '10.0.0.5', headers: { 'x-forwarded-for': `198.51.100.${i}` } })
      expect(warn).toHaveBeenCalledTimes(1)
      expect(warn.mock.calls[0]?.[0]).toBe(
        '[fastlimit] [test] Requests from 10.0.0.5 carry X-Forwarded-For but trustProxy is off, so every client ' +
          "behind that proxy shares one limit. If it is your proxy, set trustProxy: { hops: 1, from: ['10.0.0.5'] } " +
          "(or its network, e.g. 'private').",
      )
      const other = make({ rules: '100/min', trustProxy: { hops: 1, from: ['10.0.0.0/8'] } })
      for (let i = 0; i < 200; i++) await other.send({ remote: '::1', headers: { forwarded: 'for=1.2.3.4' } })
      expect(warn).toHaveBeenCalledTimes(1)
      registry.clear()
      const third = make({ rules: '100/min', trustProxy: { hops: 1, from: ['10.0.0.0/8'] } })
      for (let i = 0; i < 64; i++) await third.send({ remote: '::1', headers: { forwarded: 'for=1.2.3.4' } })
      expect(warn).toHaveBeenCalledTimes(2)
      expect(warn.mock.calls[1]?.[0]).toBe(
        '[fastlimit] [test] Requests from ::1 carry Forwarded but trustProxy does not trust ::1, so every client ' +
          "behind that proxy shares one limit. If it is your proxy, set trustProxy: { hops: 1, from: ['::1'] }, " +
          "proxyHeader: 'forwarded' (or its network, e.g. 'private').",
      )
    } finally {
      warn.mockRestore()
    }
  })
})

describe('createHttpLimiter: options are checked at construction', () => {
  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['an unknown option', { max: 5 }, /Unknown option "max": rateLimit\(\) takes limiter, rules/],
    ['a bad rule', { rules: '100/mn' }, /Rule "100\/mn": unknown unit/],
    ['a limiter that is not one', { limiter: {} }, /limiter must be a FastLimit/],
    ['a key that is not a function', { key: 'ip' }, /key must be a function, got "ip"/],
    ['a cost that is not a function', { cost: 5 }, /cost must be a function/],
    ['a skip that is not a function', { skip: true }, /skip must be a function/],
    ['an onLimit that is not a function', { onLimit: 1 }, /onLimit must be a function/],
    ['a clock that is not a function', { clock: 1 }, /clock must be a function/],
    ['a bad allow list entry', { allowList: ['10.0.0.0/8', 'nope'] }, /allowList has "nope"/],
    ['an allow list that is not a list', { allowList: '10.0.0.0/8' }, /allowList must be an array/],
    ['a bad trustProxy', { trustProxy: true }, /trustProxy must be false, \{ hops, from \}/],
    ['trustProxy hops without from', { trustProxy: { hops: 1 } }, /trustProxy \{ hops \} needs from/],
    ['a bad skipMethods', { skipMethods: 'OPTIONS' }, /skipMethods must be a list of HTTP methods/],
    ['a bad skipMethods entry', { skipMethods: ['GET POST'] }, /skipMethods must be a list of HTTP methods/],
    ['a normalize that is not a function', { normalize: 'nfkc' }, /normalize must be a function/],
    ['a normalize without key', { normalize: (s: string) => s }, /normalize applies to what key returns/],
    [
      'a bad proxyHeader',
      { proxyHeader: 'x-real-ip' },
      /proxyHeader must be 'x-forwarded-for' or 'forwarded'/,
    ],
    ['a bad ipv6Subnet', { ipv6Subnet: 129 }, /ipv6Subnet must be a prefix length from 1 to 128/],
    ['a zero ipv6Subnet', { ipv6Subnet: 0 }, /ipv6Subnet/],
    ['a bad scope', { scope: '' }, /scope must be 1 to 64 of/],
    ['a scope with a separator', { scope: 'a|b' }, /scope must be 1 to 64 of/],
    ['a bad headers', { headers: 'draft-5' }, /headers must be 'draft-6', 'draft-7', 'draft-8', 'legacy'/],
    ['a bad legacyHeaders', { legacyHeaders: 'yes' }, /legacyHeaders must be true or false/],
    ['a bad statusCode', { statusCode: 200 }, /statusCode must be a whole number from 400 to 599/],
    ['a bad message', { message: 42 }, /message must be a string, a plain object or a function/],
    [
      'a message with a cycle',
      {
        message: (() => {
          const o: Record<string, unknown> = {}
          o.o = o
          return o
        })(),
      },
      /message cannot be serialized/,
    ],
    ['a bad mode', { mode: 'dry-run' }, /mode must be 'enforce' or 'shadow'/],
  ]
  it.each(bad)('rejects %s', (_, options, message) => {
    let error: unknown
    try {
      createHttpLimiter(options as RateLimitCommonOptions<Req>, adapter)
    } catch (err) {
      error = err
    }
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as Error).message).toMatch(message)
    expect((error as Error).message).toMatch(/^\[fastlimit\] \[(test|core)\] /)
  })

  it('rejects options that are not an object, and accepts the adapter own options', () => {
    expect(() => createHttpLimiter(42 as unknown as RateLimitCommonOptions<Req>, adapter)).toThrow(
      /\[fastlimit\] \[test\] rateLimit\(\) takes an options object, got 42/,
    )
    expect(() =>
      createHttpLimiter({ handler: () => {} } as RateLimitCommonOptions<Req>, adapter),
    ).not.toThrow()
    expect(createHttpLimiter(undefined, adapter).rules.rules[0]?.name).toBe('100/1m')
  })
})

describe('problemDetails', () => {
  it('is RFC 9457 JSON with the reason phrase as title', () => {
    const d = { reason: 'rate-limited', retryAfterMs: 1000 } as Decision
    expect(JSON.parse(problemDetails(429, d))).toEqual({
      type: 'about:blank',
      title: 'Too Many Requests',
      status: 429,
      detail: 'Too many requests; retry in 1 second.',
    })
    expect(JSON.parse(problemDetails(418, d)).title).toBe('Rate Limit Exceeded')
  })
})
