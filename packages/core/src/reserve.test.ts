// FastLimit.reserve and refund: settle lower, equal and higher, cancel, once only, denied and policy
// reservations, failures per policy, the fallback, scopes, events, and 1,000 concurrent reservations.
import { describe, expect, it } from 'vitest'
import type { Backend, BackendResult, BucketConfig, CallOptions, Charge } from './backend'
import { FastlimitError } from './errors'
import { type DecisionEvent, FastLimit } from './limiter'
import { MemoryBackend } from './memory'

const T = 1_700_000_000_000

function setup(algorithm: 'gcra' | 'fixed-window' = 'gcra') {
  let now = T
  const backend = new MemoryBackend({ clock: () => now })
  const limiter = new FastLimit({ backend, algorithm })
  return { backend, limiter, advance: (ms: number) => (now += ms) }
}

/** An asynchronous backend in front of a MemoryBackend, whose adjust the test can break. */
function asyncBackend(inner: MemoryBackend) {
  const state = { adjust: 'ok' as 'ok' | 'reject' | 'garbage' | 'hang', adjusts: 0 }
  const backend: Backend = {
    kind: 'test',
    checkAndIncrement: (key: string, bucket: BucketConfig, cost: number) =>
      inner.checkAndIncrement(key, bucket, cost),
    checkAndIncrementAll: (key: string, buckets: readonly BucketConfig[], cost: number) =>
      inner.checkAndIncrementAll(key, buckets, cost),
    peek: (key: string, bucket: BucketConfig) => inner.peek(key, bucket),
    adjust(
      key: string,
      buckets: readonly BucketConfig[],
      delta: number,
      charges: readonly Charge[] | undefined,
      _o?: CallOptions,
    ) {
      state.adjusts++
      if (state.adjust === 'reject') return Promise.reject(new Error('ECONNRESET'))
      if (state.adjust === 'garbage') return Promise.resolve([{ nope: 1 }] as unknown as BackendResult[])
      if (state.adjust === 'hang') return new Promise<BackendResult[]>(() => {})
      return inner.adjust(key, buckets, delta, charges)
    },
  }
  return { backend, state }
}

describe('reserve and settle', () => {
  it('settles lower, equal and higher, and cancels', async () => {
    const { limiter } = setup()
    const r = await limiter.reserve('u', '10/min', { cost: 6 })
    expect(r.allowed).toBe(true)
    expect(r.remaining).toBe(4)
    expect(r.settled).toBe(false)
    const s = await r.settle(2)
    expect(s).toMatchObject({ outcome: 'adjusted', delta: -4 })
    expect(s.rules[0]?.remaining).toBe(8)
    expect(r.settled).toBe(true)
    expect((await limiter.peek('u', '10/min')).remaining).toBe(8)

    const same = await limiter.reserve('u', '10/min', { cost: 3 })
    expect(await same.settle(3)).toMatchObject({ outcome: 'unchanged', delta: 0, rules: [] })
    expect((await limiter.peek('u', '10/min')).remaining).toBe(5)

    const more = await limiter.reserve('u', '10/min', { cost: 1 })
    // 4 left after the reservation; 3 more fit, the excess beyond a full bucket is forgiven.
    expect(await more.settle(50)).toMatchObject({ outcome: 'adjusted', delta: 49 })
    const full = await limiter.peek('u', '10/min')
    expect(full.remaining).toBe(0)
    expect(full.retryAfterMs).toBe(6000)

    const { limiter: l2 } = setup()
    const c = await l2.reserve('v', '10/min', { cost: 10 })
    expect(await c.cancel()).toMatchObject({ outcome: 'adjusted', delta: -10 })
    expect((await l2.peek('v', '10/min')).remaining).toBe(10)
  })

  it('settles once: a second settle or cancel rejects and changes nothing', async () => {
    const { limiter } = setup()
    const r = await limiter.reserve('u', '10/min', { cost: 5 })
    await expect(r.settle(-1)).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_ARGUMENT' })
    await expect(r.settle(1.5)).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_ARGUMENT' })
    expect(r.settled).toBe(false)
    await r.settle(1)
    await expect(r.cancel()).rejects.toThrow(/already settled/)
    await expect(r.settle(0)).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_ARGUMENT' })
    expect((await limiter.peek('u', '10/min')).remaining).toBe(9)
  })

  it('a denied reservation charges nothing, and its settle and cancel do nothing', async () => {
    const { limiter } = setup('fixed-window')
    await limiter.check('u', '3/min', { cost: 2 })
    const r = await limiter.reserve('u', '3/min', { cost: 2 })
    expect(r.allowed).toBe(false)
    expect(r.reason).toBe('rate-limited')
    expect(await r.settle(0)).toMatchObject({ outcome: 'skipped', delta: 0 })
    const r2 = await limiter.reserve('u', '3/min', { cost: 2 })
    expect(await r2.cancel()).toMatchObject({ outcome: 'skipped' })
    expect((await limiter.peek('u', '3/min')).remaining).toBe(1)
  })

  it('is all-or-nothing across several rules, and refunds each', async () => {
    const { limiter } = setup()
    const rules = ['5/s', '100/min']
    const r = await limiter.reserve('u', rules, { cost: 4 })
    expect(r.rules.map((x) => x.remaining)).toEqual([1, 96])
    await r.settle(1)
    const p = await limiter.peek('u', rules)
    expect(p.rules.map((x) => x.remaining)).toEqual([4, 99])
    const denied = await limiter.reserve('u', rules, { cost: 5 })
    expect(denied.allowed).toBe(false)
    expect((await limiter.peek('u', rules)).rules.map((x) => x.remaining)).toEqual([4, 99])
  })

  it('keeps scopes apart', async () => {
    const { limiter } = setup()
    const a = await limiter.reserve('u', '10/min', { cost: 5, scope: 'a' })
    await limiter.check('u', '10/min', { cost: 5, scope: 'b' })
    await a.cancel()
    expect((await limiter.peek('u', '10/min', { scope: 'a' })).remaining).toBe(10)
    expect((await limiter.peek('u', '10/min', { scope: 'b' })).remaining).toBe(5)
    await limiter.refund('u', '10/min', 3, { scope: 'b' })
    expect((await limiter.peek('u', '10/min', { scope: 'b' })).remaining).toBe(8)
    expect((await limiter.peek('u', '10/min')).remaining).toBe(10)
  })

  it('refunds a settle in the window that counted it, and nothing once it has passed', async () => {
    const { limiter, advance } = setup('fixed-window')
    advance(50_000)
    const r = await limiter.reserve('u', '10/min', { cost: 5 })
    advance(20_000) // the next minute
    await limiter.check('u', '10/min', { cost: 2 })
    expect(await r.settle(0)).toMatchObject({ outcome: 'adjusted' })
    expect((await limiter.peek('u', '10/min')).remaining).toBe(8)
  })
})

describe('refund', () => {
  it('gives back up to its cost, never above the capacity', async () => {
    const { limiter } = setup()
    await limiter.check('u', '10/min', { cost: 4 })
    expect(await limiter.refund('u', '10/min', 3)).toMatchObject({ outcome: 'adjusted', delta: -3 })
    expect((await limiter.peek('u', '10/min')).remaining).toBe(9)
    await limiter.refund('u', '10/min', 30)
    expect((await limiter.peek('u', '10/min')).remaining).toBe(10)
    await expect(limiter.refund('u', '10/min', 0)).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_ARGUMENT' })
  })
})

describe('backends without adjust, failures and policies', () => {
  it('names adjust in a ConfigError when the backend lacks it', async () => {
    const inner = new MemoryBackend()
    const limiter = new FastLimit({
      backend: { checkAndIncrement: (k, b, c) => inner.checkAndIncrement(k, b, c) },
    })
    await expect(limiter.reserve('u', '1/s')).rejects.toMatchObject({
      code: 'ERR_FASTLIMIT_CONFIG',
      message: expect.stringMatching(/has no adjust\(\), which reserve\(\) needs/),
    })
    await expect(limiter.refund('u', '1/s', 1)).rejects.toThrow(/has no adjust\(\), which refund\(\) needs/)
  })

  it('a policy decision charged nothing: settle is skipped', async () => {
    const failing: Backend = {
      checkAndIncrement: () => Promise.reject(new Error('down')),
      adjust: () => Promise.reject(new Error('down')),
    }
    const limiter = new FastLimit({ backend: failing, onError: () => {} })
    const r = await limiter.reserve('u', '10/min', { cost: 3 })
    expect(r).toMatchObject({ allowed: true, source: 'policy', reason: 'fail-open' })
    expect(await r.settle(1)).toMatchObject({ outcome: 'skipped' })
  })

  it("a failed settle resolves 'failed' (reported), or rejects under 'throw'; the charge stays", async () => {
    const inner = new MemoryBackend()
    const { backend, state } = asyncBackend(inner)
    const errors: FastlimitError[] = []
    const limiter = new FastLimit({ backend, onError: (e) => errors.push(e) })
    const r = await limiter.reserve('u', '10/min', { cost: 5 })
    state.adjust = 'reject'
    const s = await r.settle(1)
    expect(s.outcome).toBe('failed')
    expect(s.error?.code).toBe('ERR_FASTLIMIT_BACKEND')
    expect(errors).toHaveLength(1)
    expect((await limiter.peek('u', '10/min')).remaining).toBe(5)
    state.adjust = 'garbage'
    const g = await limiter.refund('u', '10/min', 1)
    expect(g.outcome).toBe('failed')
    expect(g.error?.message).toMatch(/not a BackendResult/)

    const strict = new FastLimit({ backend, onBackendError: 'throw' })
    state.adjust = 'ok'
    const r2 = await strict.reserve('w', '10/min', { cost: 5 })
    state.adjust = 'reject'
    await expect(r2.cancel()).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_BACKEND' })
    await expect(strict.refund('w', '10/min', 1)).rejects.toBeInstanceOf(FastlimitError)
  })

  it('a settle goes through timeoutMs and the breaker like a check', async () => {
    const inner = new MemoryBackend()
    const { backend, state } = asyncBackend(inner)
    const limiter = new FastLimit({ backend, timeoutMs: 20, breaker: { failures: 2, openMs: 60_000 } })
    const errors: string[] = []
    limiter.on('error', (e) => errors.push(e.code))
    const rs = await Promise.all([1, 2, 3].map(() => limiter.reserve('u', '10/min', { cost: 2 })))
    state.adjust = 'hang'
    expect((await rs[0]?.settle(1))?.error?.code).toBe('ERR_FASTLIMIT_TIMEOUT')
    expect((await rs[1]?.cancel())?.error?.code).toBe('ERR_FASTLIMIT_TIMEOUT')
    expect(limiter.breakerState).toBe('open')
    const calls = state.adjusts
    const open = await rs[2]?.settle(0)
    expect(open).toMatchObject({ outcome: 'failed', error: { code: 'ERR_FASTLIMIT_CIRCUIT_OPEN' } })
    expect(state.adjusts).toBe(calls)
    expect(errors).toEqual(['ERR_FASTLIMIT_TIMEOUT', 'ERR_FASTLIMIT_TIMEOUT'])
    // Nothing was refunded: the reserved cost stays charged.
    expect((await inner.peek('fl:{u}', limiter.rules('10/min').rules[0] as BucketConfig)).remaining).toBe(4)
  })

  it('settles a reservation the fallback decided on the fallback', async () => {
    const failing: Backend = {
      checkAndIncrement: () => Promise.reject(new Error('down')),
      adjust: () => Promise.reject(new Error('never called')),
    }
    const fallback = new MemoryBackend()
    const limiter = new FastLimit({ backend: failing, onBackendError: { fallback }, onError: () => {} })
    const r = await limiter.reserve('u', '10/min', { cost: 6 })
    expect(r.source).toBe('fallback')
    expect(await r.settle(2)).toMatchObject({ outcome: 'adjusted', delta: -4 })
    const p = await new FastLimit({ backend: fallback }).peek('u', '10/min')
    expect(p.remaining).toBe(8)
  })

  it("emits 'reserve' decisions and 'adjust' calls", async () => {
    const inner = new MemoryBackend()
    const { backend } = asyncBackend(inner)
    const limiter = new FastLimit({ backend })
    const decisions: DecisionEvent[] = []
    const calls: string[] = []
    limiter.on('decision', (e) => decisions.push(e))
    limiter.on('call', (e) => calls.push(e.operation))
    const r = await limiter.reserve('u', '10/min', { cost: 2 })
    await r.settle(1)
    expect(decisions.map((d) => d.operation)).toEqual(['reserve'])
    expect(decisions[0]?.decision.allowed).toBe(true)
    expect(calls).toEqual(['check', 'adjust'])
  })
})

describe('concurrency', () => {
  it('1,000 concurrent reserve + settle keep the totals exact', async () => {
    const backend = new MemoryBackend({ clock: () => T })
    const limiter = new FastLimit({ backend, algorithm: 'fixed-window' })
    const done = await Promise.all(
      Array.from({ length: 1000 }, async (_, i) => {
        const r = await limiter.reserve('u', '100000/min', { cost: 10 })
        await r.settle(i % 3) // 0, 1 or 2
        return i % 3
      }),
    )
    const total = done.reduce((a, b) => a + b, 0)
    expect((await limiter.peek('u', '100000/min')).remaining).toBe(100_000 - total)
  })
})
