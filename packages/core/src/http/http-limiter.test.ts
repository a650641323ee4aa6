import { describe, expect, it, vi } from 'vitest'
import type { Backend } from '../backend'
import { ConfigError, FastlimitError } from '../errors'
import { type BackendErrorPolicy, type Decision, FastLimit } from '../limiter'
import { MemoryBackend } from '../memory'
import { fakeClock } from '../testing'
import { createHttpLimiter, type HttpAdapter, InvalidCostError, problemDetails } from './http-limiter'
import type { RateLimitInfo } from './info'
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

  it('counts nothing for a cost of 0: no check, no headers, nothing attached', async () => {
    const attached: RateLimitInfo[] = []
    const { send, limiter } = make({
      rules: '2/min',
      cost: (req) => req.weight ?? 1,
      onLimit: () => {
        throw new Error('not called')
      },
    })
    for (let i = 0; i < 5; i++)
      expect(await send({ remote: '1.1.1.1', weight: 0 })).toEqual({ res: {}, denial: undefined })
    expect((await limiter.peek('1.1.1.1', '2/min')).remaining).toBe(2)
    const http = createHttpLimiter<Req, Res>(
      { limiter, rules: '1/min', cost: () => 0 },
      { ...adapter, attach: (_q, _s, info) => void attached.push(info), attached: () => undefined },
    )
    await http.handle({ remote: '1.1.1.1' }, {})
    expect(attached).toEqual([])
  })

  it('refuses an unusable cost with 400 problem details and charges nothing, whatever the value', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    try {
      ;(globalThis as Record<symbol, Set<string> | undefined>)[Symbol.for('fastlimit.warnings')]?.clear()
      let value: unknown
      const { http, limiter } = make({ rules: '3/min', cost: () => value as number })
      const bad = [
        Number.NaN,
        -1,
        1.5,
        Number.POSITIVE_INFINITY,
        -0.5,
        2 ** 53,
        '3',
        null,
        undefined,
        {},
        10n,
      ]
      for (const v of bad) {
        value = v
        const res: Res = {}
        // With an invalid callback (what the adapters pass), the 400 to send as it is.
        const sent = await http.run<unknown>(
          { remote: '203.0.113.7' },
          res,
          () => 'next',
          () => 'deny',
          undefined,
          (_req, _res, refusal) => refusal,
        )
        expect(sent, String(v)).toEqual({
          kind: 'invalid-cost',
          status: 400,
          contentType: 'application/problem+json',
          body: expect.any(String),
        })
        expect(JSON.parse((sent as { body: string }).body)).toMatchObject({
          title: 'Bad Request',
          status: 400,
        })
        expect(res).toEqual({})
        // Without one (handle(), or an adapter that passes none): an error with status 400 for the framework.
        const error = await http.handle({ remote: '203.0.113.7' }, {}).catch((err: unknown) => err)
        expect(error, String(v)).toBeInstanceOf(InvalidCostError)
        expect(error).toMatchObject({
          code: 'ERR_FASTLIMIT_ARGUMENT',
          status: 400,
          statusCode: 400,
          expose: true,
        })
      }
      expect((await limiter.peek('203.0.113.7', '3/min')).remaining).toBe(3)
      // A cost that is not a number at all is the application's bug: said once.
      expect(warn).toHaveBeenCalledOnce()
      expect(String(warn.mock.calls[0]?.[0])).toMatch(
        /^\[fastlimit\] \[test\] cost returned "3", which is not a number: .*refused with 400 \(invalidCost\)/,
      )
      // An async cost is read the same way.
      const asyncBad = make({ rules: '3/min', cost: async () => Number.NaN })
      await expect(asyncBad.send()).rejects.toMatchObject({ status: 400, cost: Number.NaN })
      // In shadow mode nothing is refused: the request goes on, uncounted.
      const shadow = make({ rules: '3/min', cost: () => -1, mode: 'shadow' })
      expect(await shadow.send()).toEqual({ res: {}, denial: undefined })
    } finally {
      warn.mockRestore()
    }
  })

  it('charges invalidCost instead when it is a number', async () => {
    const { send } = make({ rules: '3/min', cost: () => Number.NaN, invalidCost: 2 })
    expect((await send()).res.ratelimit).toBe('limit=3, remaining=1, reset=40')
    expect((await send()).denial?.status).toBe(429)
  })

  it('reports refusals in enforce mode too', async () => {
    const onLimit = vi.fn()
    const { send } = make({ rules: '1/min', onLimit })
    await send()
    await send()
    expect(onLimit).toHaveBeenCalledOnce()
  })

  it("still hands decisions to an adapter's expose (without attach), in both modes, but not for skipped requests", async () => {
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
      // An outage is not a rate limit: 503 by default, with its own kind.
      expect(denial?.status).toBe(503)
      expect(denial?.kind).toBe('outage')
      expect(JSON.parse(denial?.body ?? '')).toMatchObject({ title: 'Service Unavailable', status: 503 })
      expect(JSON.parse(denial?.body ?? '').detail).toBe(
        'The rate limiter is unavailable; retry in 1 second.',
      )
      expect(onLimit).toHaveBeenCalledOnce()
      // shadow mode never refuses, even then
      expect((await down('fail-closed', { mode: 'shadow' })()).denial).toBeUndefined()
    })

    it('an outage refusal has outageStatusCode; a rate-limit refusal keeps statusCode', async () => {
      const send = down('fail-closed', { outageStatusCode: 500, statusCode: 418 })
      const { denial } = await send()
      expect(denial).toMatchObject({ kind: 'outage', status: 500 })
      expect(JSON.parse(denial?.body ?? '')).toMatchObject({ title: 'Internal Server Error', status: 500 })
      const ok = make({ rules: '1/min', statusCode: 418, outageStatusCode: 500 })
      await ok.send()
      expect((await ok.send()).denial).toMatchObject({ kind: 'limit', status: 418 })
    })

    it('an open circuit breaker refuses with 503 and Retry-After under fail-closed, touching no store', async () => {
      let calls = 0
      const backend: Backend = {
        checkAndIncrement: () => {
          calls++
          return Promise.reject(new Error('connection refused'))
        },
      }
      const limiter = new FastLimit({
        backend,
        onBackendError: 'fail-closed',
        breaker: { failures: 2, openMs: 60_000 },
      })
      const http = createHttpLimiter<Req, Res>({ limiter, rules: '1/min' }, adapter)
      const seen: Array<[number | undefined, string | undefined, string | undefined]> = []
      for (let i = 0; i < 5; i++) {
        const res: Res = {}
        const denial = await http.handle({ remote: '1.1.1.1' }, res)
        seen.push([denial?.status, res['retry-after'], denial?.decision?.error?.code])
      }
      expect(calls).toBe(2)
      expect(seen).toEqual([
        [503, '1', 'ERR_FASTLIMIT_BACKEND'],
        [503, '1', 'ERR_FASTLIMIT_BACKEND'],
        [503, '1', 'ERR_FASTLIMIT_CIRCUIT_OPEN'],
        [503, '1', 'ERR_FASTLIMIT_CIRCUIT_OPEN'],
        [503, '1', 'ERR_FASTLIMIT_CIRCUIT_OPEN'],
      ])
      await limiter.close()
    })

    it('fail-open tells later handlers that nothing is known: no remaining, no reset, source policy', async () => {
      const limiter = new FastLimit({ backend: brokenBackend(), onBackendError: 'fail-open' })
      const seen: RateLimitInfo[] = []
      const http = createHttpLimiter<Req, Res>(
        { limiter, rules: '5/min' },
        { ...adapter, attach: (_req, _res, info) => void seen.push(info), attached: () => undefined },
      )
      const res: Res = {}
      expect(await http.handle({ remote: '1.1.1.1' }, res)).toBeUndefined()
      expect(res).toEqual({})
      const info = seen[0] as RateLimitInfo
      expect(info).toMatchObject({ allowed: true, reason: 'fail-open', source: 'policy', limit: 5 })
      expect(info.remaining).toBeUndefined()
      expect(info.resetMs).toBeUndefined()
      expect(JSON.parse(JSON.stringify(info))).not.toHaveProperty('remaining')
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

/** The test adapter storing infos on the request, as Express does with req.rateLimit. */
interface InfoReq extends Req {
  rateLimit?: RateLimitInfo
}
const attaching: HttpAdapter<InfoReq, Res> = {
  ...adapter,
  attach: (req, _res, info) => {
    req.rateLimit = info
  },
  attached: (req) => req.rateLimit,
}

describe('createHttpLimiter: several middlewares on one request', () => {
  const layered = (
    first: RateLimitCommonOptions<InfoReq>,
    second: RateLimitCommonOptions<InfoReq>,
    withAdapter: HttpAdapter<InfoReq, Res> = attaching,
  ) => {
    const clock = fakeClock(T0)
    const limiter = new FastLimit({ backend: new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }) })
    const a = createHttpLimiter<InfoReq, Res>({ limiter, clock: clock.now, ...first }, withAdapter)
    const b = createHttpLimiter<InfoReq, Res>({ limiter, clock: clock.now, ...second }, withAdapter)
    const send = async (req: InfoReq = { remote: '203.0.113.7' }) => {
      const res: Res = {}
      const denial = (await a.handle(req, res)) ?? (await b.handle(req, res))
      return { res, denial, req }
    }
    return { clock, limiter, a, b, send }
  }

  it('lists every policy in RateLimit-Policy and reports the most restrictive in RateLimit (draft-7)', async () => {
    // Failed before: only the route's fields survived ('5;w=900'), the app-wide policy was lost.
    const { send } = layered({ rules: '100/min', scope: 'app' }, { rules: '5/15m', scope: 'login' })
    const first = await send()
    expect(first.res).toEqual({
      'ratelimit-policy': '100;w=60, 5;w=900',
      ratelimit: 'limit=5, remaining=4, reset=180',
    })
    for (let i = 0; i < 4; i++) await send()
    const denied = await send()
    expect(denied.denial?.status).toBe(429)
    expect(denied.res).toEqual({
      'ratelimit-policy': '100;w=60, 5;w=900',
      ratelimit: 'limit=5, remaining=0, reset=180',
      'retry-after': '180',
    })
    expect(denied.req.rateLimit?.all.map((i) => [i.scope, i.remaining])).toEqual([
      ['app', 94],
      ['login', 0],
    ])
  })

  it('reports the app-wide rule when it is the more restrictive', async () => {
    const { send } = layered({ rules: '2/min', scope: 'app' }, { rules: '5/15m', scope: 'login' })
    expect((await send()).res.ratelimit).toBe('limit=2, remaining=1, reset=30')
    expect((await send()).res.ratelimit).toBe('limit=2, remaining=0, reset=60')
  })

  it('makes legacy headers describe the same rule as RateLimit, whichever middleware asked for them', async () => {
    // Failed before: X-RateLimit-* described the app-wide rule (limit 100), RateLimit the route's (limit 5).
    const { send } = layered(
      { rules: '100/min', scope: 'app', legacyHeaders: true },
      { rules: '5/15m', scope: 'login' },
    )
    expect((await send()).res).toEqual({
      'ratelimit-policy': '100;w=60, 5;w=900',
      ratelimit: 'limit=5, remaining=4, reset=180',
      'x-ratelimit-limit': '5',
      'x-ratelimit-remaining': '4',
      'x-ratelimit-reset': String(T0 / 1000 + 180),
    })
  })

  it('lists one draft-8 Service Limit Item per middleware, with names kept apart', async () => {
    const { send } = layered(
      { rules: [{ limit: 10, window: '1s', name: 'burst' }, '100/min'], scope: 'app', headers: 'draft-8' },
      { rules: '100/min', scope: 'api', headers: 'draft-8' },
    )
    expect((await send()).res).toEqual({
      'ratelimit-policy': '"burst";q=10;w=1, "100/1m";q=100;w=60, "100/1m-2";q=100;w=60',
      ratelimit: '"burst";r=9;t=1, "100/1m-2";r=99;t=1',
    })
  })

  it('writes every format asked for, the last middleware winning a field two formats share', async () => {
    const mixed = layered({ rules: '10/min', headers: 'draft-6', scope: 'a' }, { rules: '5/min', scope: 'b' })
    expect((await mixed.send()).res).toEqual({
      'ratelimit-policy': '10;w=60, 5;w=60',
      'ratelimit-limit': '5',
      'ratelimit-remaining': '4',
      'ratelimit-reset': '12',
      ratelimit: 'limit=5, remaining=4, reset=12',
    })
    const clash = layered({ rules: '10/min', headers: 'draft-8', scope: 'a' }, { rules: '5/min', scope: 'b' })
    expect((await clash.send()).res).toEqual({
      'ratelimit-policy': '10;w=60, 5;w=60',
      ratelimit: 'limit=5, remaining=4, reset=12',
    })
  })

  it('leaves out a middleware that writes no headers, and one whose store could not decide', async () => {
    const silent = layered({ rules: '2/min', headers: false, scope: 'a' }, { rules: '5/15m', scope: 'b' })
    expect((await silent.send()).res).toEqual({
      'ratelimit-policy': '5;w=900',
      ratelimit: 'limit=5, remaining=4, reset=180',
    })
    const clock = fakeClock(T0)
    const up = new FastLimit({ backend: new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }) })
    const down = new FastLimit({ backend: brokenBackend(), onBackendError: 'fail-open' })
    const a = createHttpLimiter<InfoReq, Res>({ limiter: up, clock: clock.now, rules: '5/min' }, attaching)
    const b = createHttpLimiter<InfoReq, Res>({ limiter: down, rules: '100/min' }, attaching)
    const req: InfoReq = { remote: '1.1.1.1' }
    const res: Res = {}
    await a.handle(req, res)
    await b.handle(req, res)
    expect(res).toEqual({ 'ratelimit-policy': '5;w=60', ratelimit: 'limit=5, remaining=4, reset=12' })
    expect(req.rateLimit?.all.map((i) => i.remaining)).toEqual([4, undefined])
  })

  it('combines headers with an adapter that gives no attach (through a WeakMap)', async () => {
    const plain: HttpAdapter<InfoReq, Res> = adapter
    const { send } = layered({ rules: '100/min', scope: 'app' }, { rules: '5/15m', scope: 'login' }, plain)
    expect((await send()).res['ratelimit-policy']).toBe('100;w=60, 5;w=900')
  })
})

describe('createHttpLimiter: reset and peek the bucket a request was counted in', () => {
  const login = (options: RateLimitCommonOptions<InfoReq> = {}) => {
    const clock = fakeClock(T0)
    const limiter = new FastLimit({ backend: new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }) })
    const http = createHttpLimiter<InfoReq, Res>(
      { limiter, clock: clock.now, rules: '5/15m', scope: 'login', ...options },
      attaching,
    )
    const attempt = async (remote: string) => {
      const req: InfoReq = { remote }
      const denial = await http.handle(req, {})
      return { req, denial }
    }
    return { limiter, http, attempt }
  }

  it("resets the request's bucket through its info, and no other client's", async () => {
    const { http, attempt } = login()
    for (let i = 0; i < 4; i++) await attempt('203.0.113.7')
    await attempt('198.51.100.1')
    await attempt('198.51.100.1')
    const success = await attempt('203.0.113.7')
    expect(success.req.rateLimit?.remaining).toBe(0)
    expect(success.req.rateLimit?.identity).toBe('203.0.113.7')
    await success.req.rateLimit?.reset()
    expect((await http.peek({ remote: '203.0.113.7' }))?.remaining).toBe(5)
    expect((await http.peek({ remote: '198.51.100.1' }))?.remaining).toBe(3)
    const peeked = await success.req.rateLimit?.peek()
    expect(peeked).toMatchObject({ allowed: true, remaining: 5, cost: 0, scope: 'login' })
    const statuses = []
    for (let i = 0; i < 6; i++) statuses.push((await attempt('203.0.113.7')).denial?.status)
    expect(statuses).toEqual([undefined, undefined, undefined, undefined, undefined, 429])
  })

  it('resets through the middleware with the request, counted or not', async () => {
    const { http, attempt } = login({ key: (req) => req.user ?? 'anonymous' })
    for (let i = 0; i < 3; i++) await attempt('1.1.1.1')
    // A request this middleware never saw: the identity comes from key.
    await http.reset({ remote: '9.9.9.9' })
    expect((await http.peek({ remote: '2.2.2.2' }))?.remaining).toBe(5)
    const seen = await attempt('1.1.1.1')
    await http.reset(seen.req)
    expect((await http.peek({ user: 'anonymous' }))?.remaining).toBe(5)
  })

  it('finds its own bucket when several middlewares counted the request', async () => {
    const clock = fakeClock(T0)
    const limiter = new FastLimit({ backend: new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }) })
    const app = createHttpLimiter<InfoReq, Res>(
      { limiter, clock: clock.now, rules: '100/min', scope: 'app' },
      attaching,
    )
    const route = createHttpLimiter<InfoReq, Res>(
      { limiter, clock: clock.now, rules: '5/15m', scope: 'login', key: (req) => req.user ?? '' },
      attaching,
    )
    const req: InfoReq = { remote: '1.1.1.1', user: 'alice' }
    await app.handle(req, {})
    await route.handle(req, {})
    // The identity route counted, even if key would now say otherwise.
    req.user = 'mallory'
    await route.reset(req)
    expect((await limiter.peek('alice', '5/15m', { scope: 'login' })).remaining).toBe(5)
    expect((await limiter.peek('1.1.1.1', '100/min', { scope: 'app' })).remaining).toBe(99)
    expect(await app.peek(req)).toMatchObject({ remaining: 99, identity: '1.1.1.1' })
  })

  it('does nothing for an allow-listed client, and warns once when reset would reach another middleware', async () => {
    const allowed = login({ allowList: ['loopback'] })
    await allowed.http.reset({ remote: '127.0.0.1' })
    expect(await allowed.http.peek({ remote: '127.0.0.1' })).toBeUndefined()
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    try {
      ;(globalThis as Record<symbol, Set<string> | undefined>)[Symbol.for('fastlimit.warnings')]?.clear()
      const limiter = new FastLimit()
      createHttpLimiter<InfoReq, Res>({ limiter, rules: '100/min' }, attaching)
      const unscoped = createHttpLimiter<InfoReq, Res>({ limiter, rules: '5/15m' }, attaching)
      const scoped = createHttpLimiter<InfoReq, Res>({ limiter, rules: '5/15m', scope: 'login' }, attaching)
      await scoped.reset({ remote: '1.1.1.1' })
      expect(warn).not.toHaveBeenCalled()
      await unscoped.reset({ remote: '1.1.1.1' })
      await unscoped.reset({ remote: '1.1.1.1' })
      expect(warn).toHaveBeenCalledOnce()
      expect(String(warn.mock.calls[0]?.[0])).toMatch(
        /^\[fastlimit\] \[test\] reset\(\) forgets every count of the client unscoped on this limiter, .*scope: 'login'/,
      )
    } finally {
      warn.mockRestore()
    }
  })

  it('rejects the adapter that gives attach without attached', () => {
    expect(() => createHttpLimiter({}, { ...adapter, attach: () => undefined })).toThrow(
      /attach and attached together/,
    )
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
    ['a bad mode', { mode: 'dry-run' }, /mode must be 'enforce', 'shadow' or 'delay'/],
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
    expect(createHttpLimiter(undefined, adapter).rules?.rules[0]?.name).toBe('100/1m')
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

describe('createHttpLimiter: answered in the same turn when nothing waits', () => {
  const call = (http: ReturnType<typeof make>['http'], req: Req, res: Res) => {
    const seen: string[] = []
    const out = http.run<string>(
      req,
      res,
      () => {
        seen.push('next')
        return 'next'
      },
      (_req, _res, denial) => {
        seen.push(`deny ${denial.status}`)
        return 'deny'
      },
    )
    return { out, seen }
  }

  it('sets the headers and calls next (or deny) before run returns, and returns what they return', () => {
    const { http } = make({ rules: '1/min' })
    const res: Res = {}
    const first = call(http, { remote: '203.0.113.7' }, res)
    expect(first.out).toBe('next')
    expect(first.seen).toEqual(['next'])
    expect(res.ratelimit).toBe('limit=1, remaining=0, reset=60')
    const denied: Res = {}
    const second = call(http, { remote: '203.0.113.7' }, denied)
    expect(second.out).toBe('deny')
    expect(second.seen).toEqual(['deny 429'])
    expect(denied['retry-after']).toBe('60')
  })

  it('stays in the same turn with synchronous key, skip and rules functions', () => {
    const { http } = make({ key: (req) => req.user ?? 'anon', skip: () => false, rules: () => '1/min' })
    const a = call(http, { user: 'a' }, {})
    expect(a.out).toBe('next')
    expect(call(http, { user: 'a' }, {}).out).toBe('deny')
    expect(call(http, { user: 'b' }, {}).out).toBe('next')
  })

  it('waits, calling each function once, when key, skip or rules answers with a promise', async () => {
    const calls = { key: 0, skip: 0, rules: 0 }
    const { http } = make({
      key: async (req) => {
        calls.key++
        return req.user ?? 'anon'
      },
      skip: async () => {
        calls.skip++
        return false
      },
      rules: async () => {
        calls.rules++
        return '1/min'
      },
    })
    const a = call(http, { user: 'a' }, {})
    expect(a.out).toBeInstanceOf(Promise)
    expect(a.seen).toEqual([])
    expect(await a.out).toBe('next')
    expect(await call(http, { user: 'a' }, {}).out).toBe('deny')
    expect(calls).toEqual({ key: 2, skip: 2, rules: 2 })
  })

  it('waits for a backend that decides asynchronously', async () => {
    const memory = new MemoryBackend({ cleanupIntervalMs: 0 })
    const backend: Backend = { checkAndIncrement: (...args) => memory.checkAndIncrement(...args) }
    const http = createHttpLimiter<Req, Res>({ limiter: new FastLimit({ backend }), rules: '1/min' }, adapter)
    const res: Res = {}
    const a = call(http, { remote: '203.0.113.7' }, res)
    expect(a.out).toBeInstanceOf(Promise)
    expect(await a.out).toBe('next')
    expect(res.ratelimit).toBe('limit=1, remaining=0, reset=60')
  })

  it('hands a synchronous error to fail, or rejects without one, as before', async () => {
    const { http } = make({
      key: () => {
        throw new Error('no user')
      },
    })
    const failed: unknown[] = []
    const out = http.run<string>(
      {},
      {},
      () => 'next',
      () => 'deny',
      (err) => {
        failed.push(err)
        return 'failed'
      },
    )
    expect(out).toBe('failed')
    expect(failed).toEqual([new Error('no user')])
    await expect(
      http.run(
        {},
        {},
        () => 'next',
        () => 'deny',
      ),
    ).rejects.toThrow('no user')
    // An error of next itself rejects what run returns, as it did when run was always asynchronous.
    const ok = make()
    const thrown = ok.http.run(
      { remote: '203.0.113.7' },
      {},
      () => {
        throw new Error('handler')
      },
      () => 'deny',
    )
    await expect(thrown).rejects.toThrow('handler')
  })

  it('calls a limiter whose check was replaced through it', async () => {
    const { http, limiter } = make({ rules: '5/min' })
    const check = vi.spyOn(limiter, 'check')
    await call(http, { remote: '203.0.113.7' }, {}).out
    expect(check).toHaveBeenCalledTimes(1)
  })
})
