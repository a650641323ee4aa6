// mode: 'delay' in the HTTP layer, on real time and a memory store: the order requests are answered in, not
// how long they took (the shared adapter suite checks the lower bound of a wait against the store).
import { describe, expect, it, vi } from 'vitest'
import type { Backend } from '../backend'
import { ConfigError, type FastlimitError } from '../errors'
import { type BackendErrorPolicy, type Decision, FastLimit } from '../limiter'
import { MemoryBackend } from '../memory'
import { closeSignal, isRequestAborted, RequestAbortedError } from './delay'
import { createHttpLimiter, type HttpAdapter, type HttpDenial } from './http-limiter'
import type { RateLimitCommonOptions } from './options'

interface Req {
  user: string
  weight?: number
  /** Aborts when the test says the client has gone. */
  gone?: AbortController
}
type Res = Record<string, string>

function make(
  options: RateLimitCommonOptions<Req>,
  onBackendError: BackendErrorPolicy = 'fail-open',
  backend: Backend = new MemoryBackend({ cleanupIntervalMs: 0 }),
) {
  const limiter = new FastLimit({ backend, onBackendError })
  const decisions: Decision[] = []
  limiter.on('decision', (e) => {
    decisions.push(e.decision)
  })
  const signals = vi.fn((req: Req) => req.gone?.signal)
  const adapter: HttpAdapter<Req, Res> = {
    name: 'test',
    remoteAddress: () => '203.0.113.7',
    header: () => undefined,
    method: () => 'GET',
    setHeader: (res, name, value) => {
      res[name] = value
    },
    signal: signals,
  }
  const http = createHttpLimiter<Req, Res>(
    { limiter, key: (req) => req.user, mode: 'delay', maxDelayMs: 5000, ...options },
    adapter,
  )
  const order: string[] = []
  /** Sends a request; records `name` when it is answered. */
  const send = (name: string, req: Partial<Req> = {}) => {
    const res: Res = {}
    return http.handle({ user: 'u', ...req }, res).then(
      (denial) => {
        order.push(name)
        return { res, denial }
      },
      (err: unknown) => {
        order.push(name)
        throw err
      },
    )
  }
  const admitted = () => decisions.filter((d) => d.allowed).length
  const denied = () => decisions.filter((d) => !d.allowed).length
  return { limiter, http, send, order, decisions, admitted, denied, signals }
}

const until = async (ready: () => boolean) => {
  for (let i = 0; i < 2000 && !ready(); i++) await new Promise((r) => setTimeout(r, 2))
  expect(ready()).toBe(true)
}

describe("mode: 'delay' (HTTP layer)", () => {
  it('serves held requests of one client first in, first out, each with its admitting decision', async () => {
    const { send, order, signals } = make({ rules: { limit: 1, window: '150ms' } })
    const first = await send('a')
    expect(first.denial).toBeUndefined()
    const held = await Promise.all([send('b'), send('c'), send('d')])
    expect(order).toEqual(['a', 'b', 'c', 'd'])
    for (const r of held) {
      expect(r.denial).toBeUndefined()
      expect(r.res.ratelimit).toMatch(/^limit=1, remaining=0, reset=\d+$/)
      expect(r.res['retry-after']).toBeUndefined()
    }
    // The admitted first request never asked for a signal: only held ones do.
    expect(signals).toHaveBeenCalledTimes(3)
  })

  it('does not hold one client behind another', async () => {
    const { send, order } = make({ rules: { limit: 1, window: '300ms' } })
    await send('u1', { user: 'u' })
    const held = send('u2', { user: 'u' })
    const other = await send('v1', { user: 'v' })
    expect(other.denial).toBeUndefined()
    await held
    expect(order).toEqual(['u1', 'v1', 'u2'])
  })

  it('refuses at once a request that the requests held ahead of it would push past maxDelayMs', async () => {
    const onLimit = vi.fn()
    const { send, order, admitted } = make({ rules: { limit: 1, window: '300ms' }, maxDelayMs: 700, onLimit })
    await send('a')
    const b = send('b')
    const c = send('c')
    // b at ~300 ms, c at ~600 ms: d could pass at ~900 ms at the earliest, past 700 ms.
    const d = await send('d')
    expect(order).toEqual(['a', 'd'])
    expect(d.denial?.status).toBe(429)
    expect(d.denial?.decision).toMatchObject({ allowed: false, reason: 'rate-limited', remaining: 0 })
    expect(Number(d.res['retry-after'])).toBeGreaterThanOrEqual(1)
    expect(d.res.ratelimit).toMatch(/^limit=1, remaining=0, reset=\d+$/)
    expect(onLimit).toHaveBeenCalledTimes(1)
    expect((await b).denial).toBeUndefined()
    expect((await c).denial).toBeUndefined()
    expect(order).toEqual(['a', 'd', 'b', 'c'])
    expect(admitted()).toBe(3)
  })

  it('refuses at once, with the exact decision, a request whose retry time is past maxDelayMs', async () => {
    const { send, decisions } = make({ rules: '1/min', maxDelayMs: 1000 })
    await send('a')
    const r = await send('b')
    expect(r.denial?.status).toBe(429)
    // The store's own denial, as in enforce mode: one check, nothing held.
    expect(r.denial?.decision).toBe(decisions[1])
    expect(r.res['retry-after']).toBe('60')
  })

  it('refuses at once a cost the rules can never admit', async () => {
    const { send } = make({ rules: '3/min', cost: (req) => req.weight ?? 1 })
    const r = await send('a', { weight: 5 })
    expect(r.denial?.status).toBe(429)
    expect(r.denial?.decision.reason).toBe('cost-exceeds-limit')
  })

  it('holds a request of cost n until n units are free', async () => {
    const { send, order } = make({ rules: { limit: 2, window: '300ms' }, cost: (req) => req.weight ?? 1 })
    await send('a', { weight: 2 })
    const b = await send('b', { weight: 2 })
    expect(b.denial).toBeUndefined()
    expect(b.res.ratelimit).toMatch(/^limit=2, remaining=0, /)
    expect(order).toEqual(['a', 'b'])
  })

  it('refuses at once past maxQueue held requests per client, with Retry-After maxDelayMs', async () => {
    const { send, decisions, order } = make({
      rules: { limit: 1, window: '200ms' },
      maxQueue: 2,
      maxDelayMs: 3000,
    })
    await send('a')
    const held = [send('b'), send('c')]
    await until(() => decisions.length >= 2)
    const checks = decisions.length
    const full = await send('d')
    expect(full.denial?.status).toBe(429)
    expect(full.res['retry-after']).toBe('3')
    expect(full.res.ratelimit).toMatch(/^limit=1, remaining=0, reset=\d+$/)
    // Refused without asking the store.
    expect(decisions.length).toBe(checks)
    for (const r of await Promise.all(held)) expect(r.denial).toBeUndefined()
    expect(order).toEqual(['a', 'd', 'b', 'c'])
  })

  it('drops a request whose client leaves while held: the next takes its turn, nothing is charged for it', async () => {
    const { send, order, admitted, denied } = make({ rules: { limit: 1, window: '300ms' } })
    await send('a')
    const gone = new AbortController()
    const b = send('b', { gone })
    const c = send('c')
    // Both held: denied by the store, then asleep in the queue until the unit frees.
    await until(() => denied() >= 2)
    await new Promise((r) => setTimeout(r, 20))
    expect(order).toEqual(['a'])
    gone.abort()
    const err = await b.catch((e: unknown) => e)
    expect(err).toBeInstanceOf(RequestAbortedError)
    expect(err).toMatchObject({ code: 'ERR_FASTLIMIT_ABORTED', status: 499, statusCode: 499, expose: true })
    expect(isRequestAborted(err)).toBe(true)
    expect((await c).denial).toBeUndefined()
    expect(order).toEqual(['a', 'b', 'c'])
    expect(admitted()).toBe(2)
  })

  it('drops a request whose client left before it could be held', async () => {
    const { send, admitted } = make({ rules: { limit: 1, window: '300ms' } })
    await send('a')
    const gone = new AbortController()
    gone.abort()
    await expect(send('b', { gone })).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_ABORTED' })
    expect(admitted()).toBe(1)
  })

  it('answers held requests as the error policy says when the limiter closes', async () => {
    for (const [policy, outcome] of [
      ['fail-open', 'admitted'],
      ['fail-closed', 503],
      [{ fallback: new MemoryBackend({ cleanupIntervalMs: 0 }) }, 503],
      ['throw', 'ERR_FASTLIMIT_CLOSED'],
    ] as const) {
      const { send, limiter, denied } = make({ rules: { limit: 1, window: '3s' } }, policy)
      await send('a')
      const held = send('b').then(
        (r) => r,
        (e: FastlimitError) => e,
      )
      await until(() => denied() >= 1)
      await new Promise((r) => setTimeout(r, 20))
      await limiter.close()
      const r = await held
      if (outcome === 'admitted') {
        expect(r).toMatchObject({ denial: undefined, res: {} })
      } else if (outcome === 503) {
        const denial = (r as { denial: HttpDenial }).denial
        expect(denial).toMatchObject({ kind: 'outage', status: 503 })
        expect(denial.decision).toMatchObject({
          source: 'policy',
          reason: 'fail-closed',
          remaining: undefined,
        })
        expect((r as { res: Res }).res).toEqual({ 'retry-after': '1' })
      } else {
        expect(r).toMatchObject({ code: outcome })
      }
    }
  })

  it('takes the error policy at once when the store fails, as enforce mode does', async () => {
    const broken: Backend = {
      checkAndIncrement: () => Promise.reject(new Error('connection refused')),
    }
    const closed = make({ rules: '1/min' }, 'fail-closed', broken)
    expect((await closed.send('a')).denial?.status).toBe(503)
    const open = make({ rules: '1/min' }, 'fail-open', broken)
    expect((await open.send('a')).denial).toBeUndefined()
    const thrown = make({ rules: '1/min' }, 'throw', broken)
    await expect(thrown.send('a')).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_BACKEND' })
  })

  it('checks its options when built', () => {
    const adapter: HttpAdapter<Req, Res> = {
      name: 'test',
      remoteAddress: () => undefined,
      header: () => undefined,
      method: () => 'GET',
      setHeader: () => {},
    }
    const build = (o: Record<string, unknown>) => () => createHttpLimiter(o as never, adapter)
    expect(build({ mode: 'delay' })).toThrow(ConfigError)
    expect(build({ mode: 'delay' })).toThrow(
      "[fastlimit] [test] mode: 'delay' needs maxDelayMs, the longest a request over the limit is held before it is refused: e.g. { mode: 'delay', maxDelayMs: 5000 }.",
    )
    expect(build({ mode: 'delay', maxDelayMs: 0 })).toThrow(
      '[fastlimit] [test] maxDelayMs must be a whole number of milliseconds from 1 to 2147483647, got 0: e.g. 5000.',
    )
    expect(build({ mode: 'delay', maxDelayMs: Number.NaN })).toThrow(/maxDelayMs must be a whole number/)
    expect(build({ mode: 'delay', maxDelayMs: 100, maxQueue: 0 })).toThrow(
      '[fastlimit] [test] maxQueue must be a whole number from 1 to 1000000000, got 0: e.g. 100.',
    )
    expect(build({ mode: 'shadow', maxDelayMs: 100 })).toThrow(
      `[fastlimit] [test] maxDelayMs applies to mode: 'delay' only, got it with mode: "shadow".`,
    )
    expect(build({ maxQueue: 5 })).toThrow(
      `[fastlimit] [test] maxQueue applies to mode: 'delay' only, got it with mode: "enforce".`,
    )
    expect(build({ mode: 'slow' })).toThrow(
      `[fastlimit] [test] mode must be 'enforce', 'shadow' or 'delay', got "slow".`,
    )
    expect(() =>
      createHttpLimiter({ mode: 'delay', maxDelayMs: 100 }, {
        ...adapter,
        signal: 'no',
      } as unknown as HttpAdapter<Req, Res>),
    ).toThrow(
      '[fastlimit] [test] The adapter signal must be a function (req, res) => AbortSignal | undefined.',
    )
    expect(build({ mode: 'delay', maxDelayMs: 2147483647, maxQueue: 1 })).not.toThrow()
  })
})

describe('closeSignal', () => {
  const response = (destroyed = false) => {
    const listeners: Array<() => void> = []
    return {
      destroyed,
      writableFinished: false,
      once: (_event: 'close', fn: () => void) => listeners.push(fn),
      close() {
        for (const fn of listeners) fn()
      },
    }
  }

  it('aborts when the connection closes before the response was sent', () => {
    const res = response()
    const signal = closeSignal(res)
    expect(signal.aborted).toBe(false)
    res.close()
    expect(signal.aborted).toBe(true)
  })

  it('does not abort when the response was sent, and is aborted already for a gone connection', () => {
    const res = response()
    const signal = closeSignal(res)
    res.writableFinished = true
    res.close()
    expect(signal.aborted).toBe(false)
    expect(closeSignal(response(true)).aborted).toBe(true)
  })
})
