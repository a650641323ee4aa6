// limiter.wait() and throttle() on MemoryBackend with fake time: exact schedules, FIFO, maxWaitMs
// refused as soon as known, abort, close, full queues, policies, and no timer left behind.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import {
  type Algorithm,
  type Backend,
  type Decision,
  FastLimit,
  FastlimitError,
  MemoryBackend,
  type RulesInput,
  throttle,
  WaitTooLongError,
} from './index'

const ALGORITHMS: readonly Algorithm[] = [
  'gcra',
  'token-bucket',
  'leaky-bucket',
  'fixed-window',
  'sliding-window',
  'sliding-log',
]

/** The fake clock starts here (an arbitrary epoch ms, not aligned to a window). */
const T0 = 1_700_000_000_123

function memory(): MemoryBackend {
  return new MemoryBackend({ cleanupIntervalMs: 0 })
}

function limiter(backend: Backend = memory(), extra: Record<string, unknown> = {}): FastLimit {
  return new FastLimit({ backend, ...extra })
}

/** Resolves after the microtasks queued so far have run (no fake time passes). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve()
}

/** Records when each promise settles, in fake ms from the start, and how. */
function track<T>(promises: Array<Promise<T>>): Array<{ at?: number; value?: T; error?: unknown }> {
  const start = performance.now()
  const out: Array<{ at?: number; value?: T; error?: unknown }> = promises.map(() => ({}))
  promises.forEach((p, i) => {
    p.then(
      (value) => {
        out[i] = { at: performance.now() - start, value }
      },
      (error) => {
        out[i] = { at: performance.now() - start, error }
      },
    )
  })
  return out
}

type Tracked<T> = { at?: number; value?: T; error?: unknown }

function errorOf(o: Tracked<unknown> | undefined): FastlimitError {
  if (!(o?.error instanceof Error)) throw new Error(`expected a rejection, got ${JSON.stringify(o)}`)
  return o.error as FastlimitError
}

function resolvedOf<T>(o: Tracked<T> | undefined): T {
  if (o?.value === undefined) throw new Error(`expected a resolution, got ${JSON.stringify(o)}`)
  return o.value
}

/**
 * The schedule a perfect waiter follows: check, and when denied retry exactly `retryAfterMs` later.
 * Computed on a manual clock, one call after another (costs in order), with no timer.
 */
async function reference(rules: RulesInput, costs: readonly number[]): Promise<number[]> {
  let now = T0
  const l = new FastLimit({ backend: new MemoryBackend({ cleanupIntervalMs: 0, clock: () => now }) })
  const times: number[] = []
  for (const cost of costs) {
    for (;;) {
      const d = await l.check('ref', rules, { cost })
      if (d.allowed) break
      now += d.retryAfterMs
    }
    times.push(now - T0)
  }
  return times
}

beforeEach(() => {
  vi.useFakeTimers({
    toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date', 'performance'],
    now: T0,
  })
})

afterEach(() => {
  vi.useRealTimers()
})

describe('limiter.wait', () => {
  it('resolves at once with the admitting decision when the rules admit', async () => {
    const l = limiter()
    const d = await l.wait('u', '5/s', { cost: 2 })
    expect(d.allowed).toBe(true)
    expect(d.source).toBe('backend')
    expect(d.cost).toBe(2)
    expect(d.remaining).toBe(3)
  })

  it('1,000 waits on 10/s (gcra) resolve at the exact retry times: 10 per second after the burst', async () => {
    const l = limiter()
    const out = track(Array.from({ length: 1000 }, () => l.wait('u', '10/s')))
    await vi.advanceTimersByTimeAsync(100_000)
    const times = out.map((o) => o.at)
    expect(out.every((o) => (o.value as Decision | undefined)?.allowed === true)).toBe(true)
    // The burst of 10 at once, then one every 100 ms exactly: the n-th (from 10) at (n - 9) * 100 ms.
    expect(times.slice(0, 10)).toEqual(Array(10).fill(0))
    for (let n = 10; n < 1000; n++) expect(times[n]).toBe((n - 9) * 100)
    // Per 1-second window of the store's clock: 19 in the first (the burst), then exactly 10 in each.
    const perWindow = new Map<number, number>()
    for (const t of times)
      perWindow.set(
        Math.floor((t as number) / 1000),
        (perWindow.get(Math.floor((t as number) / 1000)) ?? 0) + 1,
      )
    expect(perWindow.get(0)).toBe(19)
    for (let w = 1; w < 99; w++) expect(perWindow.get(w)).toBe(10)
    expect(vi.getTimerCount()).toBe(0)
  })

  for (const algorithm of ALGORITHMS) {
    it(`${algorithm}: every waiter resolves exactly when a perfect retrier would (mixed costs, two rules)`, async () => {
      const rules: RulesInput = [
        { limit: 5, window: '1s', algorithm },
        { limit: 12, window: '4s', algorithm },
      ]
      const costs = Array.from({ length: 40 }, (_, i) => 1 + (i % 3))
      const expected = await reference(rules, costs)
      const l = limiter()
      const out = track(costs.map((cost) => l.wait('u', rules, { cost })))
      await vi.advanceTimersByTimeAsync(expected.at(-1) as number)
      expect(out.map((o) => o.at)).toEqual(expected)
      expect(vi.getTimerCount()).toBe(0)
    })
  }

  it('serves the waiters of one identity first in, first out, whatever their costs', async () => {
    const l = limiter()
    const order: number[] = []
    const costs = [3, 1, 2, 1, 1, 3, 2, 1]
    const all = costs.map((cost, i) => l.wait('u', '3/s', { cost }).then(() => order.push(i)))
    await vi.advanceTimersByTimeAsync(10_000)
    await Promise.all(all)
    expect(order).toEqual(costs.map((_, i) => i))
  })

  it('keeps identities, scopes and rule sets in separate queues', async () => {
    const l = limiter()
    await l.wait('a', '1/s')
    const out = track([l.wait('a', '1/s'), l.wait('b', '1/s'), l.wait('a', '1/s', { scope: 'x' })])
    await settle()
    expect(out.map((o) => o.at)).toEqual([undefined, 0, 0])
    await vi.advanceTimersByTimeAsync(1000)
    expect(out[0]?.at).toBe(1000)
  })

  it('refuses at once a cost that can never pass, even with no maxWaitMs', async () => {
    const l = limiter()
    const err = await l.wait('u', ['10/s', '100/min'], { cost: 11 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(FastlimitError)
    expect((err as FastlimitError).code).toBe('ERR_FASTLIMIT_WAIT_TOO_LONG')
    expect((err as FastlimitError).message).toMatch(/cost 11 can never pass rule "10\/1s".*holds at most 10/)
    expect((err as WaitTooLongError).retryAfterMs).toBe(Number.POSITIVE_INFINITY)
  })

  it('refuses at once, with no time passing, a wait the store says would end after maxWaitMs', async () => {
    const l = limiter()
    await l.wait('u', '1/s')
    const start = performance.now()
    const err = await l.wait('u', '1/s', { maxWaitMs: 999 }).catch((e: unknown) => e)
    expect(performance.now() - start).toBe(0)
    expect((err as FastlimitError).code).toBe('ERR_FASTLIMIT_WAIT_TOO_LONG')
    expect((err as FastlimitError).message).toMatch(/no earlier than in 1000 ms, after maxWaitMs 999/)
    // What a 429 needs: the wait known at the refusal, and the store's decision for its headers.
    expect(err).toBeInstanceOf(WaitTooLongError)
    expect((err as WaitTooLongError).retryAfterMs).toBe(1000)
    expect((err as WaitTooLongError).decision?.allowed).toBe(false)
    expect((err as WaitTooLongError).decision?.resetMs).toBe(Date.now() + 1000)
    // 1000 ms is enough.
    const out = track([l.wait('u', '1/s', { maxWaitMs: 1000 })])
    await vi.advanceTimersByTimeAsync(1000)
    expect(out[0]?.at).toBe(1000)
    expect(resolvedOf(out[0]).allowed).toBe(true)
  })

  it('refuses at once the waiters that the queue ahead of them puts past maxWaitMs, and admits the rest on time', async () => {
    const l = limiter()
    const rule = { limit: 10, window: '1s', burst: 1 }
    // One every 100 ms from 0: within 1000 ms, 11 fit (0, 100, ..., 1000).
    const out = track(Array.from({ length: 20 }, () => l.wait('u', rule, { maxWaitMs: 1000 })))
    await settle()
    const refusedAtOnce = out.filter((o) => o.error !== undefined)
    expect(refusedAtOnce).toHaveLength(9)
    for (const o of refusedAtOnce) {
      expect(o.at).toBe(0)
      expect((o.error as FastlimitError).code).toBe('ERR_FASTLIMIT_WAIT_TOO_LONG')
    }
    // Each would have come 12th (the refused leave no place behind): 1100 ms at the earliest.
    for (const o of refusedAtOnce) expect((o.error as WaitTooLongError).retryAfterMs).toBe(1100)
    await vi.advanceTimersByTimeAsync(1000)
    expect(out.slice(0, 11).map((o) => o.at)).toEqual([0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000])
    expect(vi.getTimerCount()).toBe(0)
  })

  it('refuses a newcomer at once when the queue already holds more than it can admit within its maxWaitMs', async () => {
    const l = limiter()
    const queued = track(Array.from({ length: 30 }, () => l.wait('u', '10/s')))
    await settle()
    // 10 admitted (the burst), 20 wait: the last of them at 2000 ms; a newcomer comes after them.
    const late = track([l.wait('u', '10/s', { maxWaitMs: 2050 })])
    await settle()
    expect(errorOf(late[0]).code).toBe('ERR_FASTLIMIT_WAIT_TOO_LONG')
    expect(errorOf(late[0]).message).toMatch(/takes at least 2\d\d\d ms/)
    const fits = track([l.wait('u', '10/s', { maxWaitMs: 2100 })])
    await vi.advanceTimersByTimeAsync(2100)
    expect(fits[0]?.at).toBe(2100)
    expect(queued.every((o) => o.value !== undefined)).toBe(true)
  })

  it('maxWaitMs 0 admits what passes now and refuses the rest at once', async () => {
    const l = limiter()
    const out = track([0, 1, 2].map(() => l.wait('u', '2/s', { maxWaitMs: 0 })))
    await settle()
    expect(out.map((o) => o.value !== undefined)).toEqual([true, true, false])
    expect(errorOf(out[2]).code).toBe('ERR_FASTLIMIT_WAIT_TOO_LONG')
  })

  it('an abort mid-wait rejects with the signal reason, and the next waiter takes its place on time', async () => {
    const l = limiter()
    await l.wait('u', '1/s')
    const controller = new AbortController()
    const out = track([l.wait('u', '1/s', { signal: controller.signal }), l.wait('u', '1/s')])
    await vi.advanceTimersByTimeAsync(400)
    const reason = new Error('client went away')
    controller.abort(reason)
    await settle()
    expect(out[0]?.error).toBe(reason)
    expect(out[0]?.at).toBe(400)
    // The second waiter is admitted at 1000 ms, the slot the aborted one would have taken.
    await vi.advanceTimersByTimeAsync(600)
    expect(out[1]?.at).toBe(1000)
    expect(vi.getTimerCount()).toBe(0)
  })

  it('an already aborted signal rejects at once with its reason (a DOMException by default)', async () => {
    const l = limiter()
    const err = await l.wait('u', '1/s', { signal: AbortSignal.abort() }).catch((e: unknown) => e)
    expect((err as Error).name).toBe('AbortError')
  })

  it('a waiter aborted in the middle of the queue leaves it; the others keep their order and times', async () => {
    const l = limiter()
    const controller = new AbortController()
    const rule = { limit: 10, window: '1s', burst: 1 }
    const out = track([
      l.wait('u', rule),
      l.wait('u', rule),
      l.wait('u', rule, { signal: controller.signal }),
      l.wait('u', rule),
    ])
    await vi.advanceTimersByTimeAsync(50)
    controller.abort()
    await vi.advanceTimersByTimeAsync(1000)
    expect(out.map((o) => o.at)).toEqual([0, 100, 50, 200])
    expect(errorOf(out[2]).name).toBe('AbortError')
  })

  it('close() rejects every pending wait with ERR_FASTLIMIT_CLOSED and leaves no timer', async () => {
    const l = limiter()
    const out = track(Array.from({ length: 15 }, (_, i) => l.wait(`u${i % 3}`, '2/s', { maxWaitMs: 60_000 })))
    await settle()
    expect(vi.getTimerCount()).toBeGreaterThan(0)
    await l.close()
    await settle()
    const closed = out.filter((o) => (o.error as FastlimitError | undefined)?.code === 'ERR_FASTLIMIT_CLOSED')
    expect(closed).toHaveLength(9)
    expect(out.filter((o) => o.value !== undefined)).toHaveLength(6)
    expect(vi.getTimerCount()).toBe(0)
    const after = await l.wait('u0', '2/s').catch((e: unknown) => e)
    expect((after as FastlimitError).code).toBe('ERR_FASTLIMIT_CLOSED')
  })

  it('a full queue refuses at once with ERR_FASTLIMIT_OVERLOADED; room comes back as waiters leave', async () => {
    const l = limiter()
    await l.wait('u', '1/s')
    // The queue counts every waiter, the one being checked included.
    const out = track(Array.from({ length: 3 }, () => l.wait('u', '1/s', { maxQueue: 3 })))
    const over = await l.wait('u', '1/s', { maxQueue: 3 }).catch((e: unknown) => e)
    expect((over as FastlimitError).code).toBe('ERR_FASTLIMIT_OVERLOADED')
    expect((over as FastlimitError).message).toMatch(/3 waiters are already queued.*maxQueue 3/)
    await vi.advanceTimersByTimeAsync(1000)
    expect(out.map((o) => o.at)).toEqual([1000, undefined, undefined])
    const room = track([l.wait('u', '1/s', { maxQueue: 3 })])
    await vi.advanceTimersByTimeAsync(3000)
    expect(room[0]?.at).toBe(3000)
    expect(out.map((o) => o.error)).toEqual([undefined, undefined, undefined])
    // The default bound is 1000.
    const many = track(Array.from({ length: 1000 }, () => l.wait('v', '1/min')))
    const more = await l.wait('v', '1/min').catch((e: unknown) => e)
    expect((more as FastlimitError).code).toBe('ERR_FASTLIMIT_OVERLOADED')
    await l.close()
    await settle()
    expect(
      many.filter((o) => (o.error as FastlimitError | undefined)?.code === 'ERR_FASTLIMIT_CLOSED'),
    ).toHaveLength(999)
  })

  it('arms one timer for all its waits, and none once nothing waits', async () => {
    const l = limiter()
    const out = track(
      Array.from({ length: 50 }, (_, i) =>
        l.wait(`k${i % 10}`, '1/s', { maxWaitMs: i % 2 ? 5000 : Number.POSITIVE_INFINITY }),
      ),
    )
    await settle()
    expect(vi.getTimerCount()).toBe(1)
    await vi.advanceTimersByTimeAsync(5000)
    expect(out.every((o) => o.at !== undefined)).toBe(true)
    expect(vi.getTimerCount()).toBe(0)
  })

  it('many queues with random deadlines, costs and aborts: each settles by its deadline, in order, with no timer left', async () => {
    let seed = 42
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31
      return seed / 2 ** 31
    }
    const l = limiter()
    const rule = { limit: 3, window: '1s', burst: 2 }
    const calls = Array.from({ length: 400 }, (_, i) => {
      const controller = new AbortController()
      const identity = `k${Math.floor(random() * 15)}`
      const maxWaitMs = random() < 0.5 ? Math.floor(random() * 8000) : Number.POSITIVE_INFINITY
      const abortAt = random() < 0.2 ? Math.floor(random() * 8000) : undefined
      if (abortAt !== undefined) setTimeout(() => controller.abort(), abortAt)
      const cost = 1 + Math.floor(random() * 2)
      return {
        i,
        identity,
        maxWaitMs,
        abortAt,
        cost,
        p: l.wait(identity, rule, { cost, maxWaitMs, signal: controller.signal }),
      }
    })
    const out = track(calls.map((c) => c.p))
    await vi.advanceTimersByTimeAsync(400_000)
    const admittedAt = new Map<string, Array<[number, number]>>()
    for (const c of calls) {
      const o = out[c.i] as Tracked<Decision>
      expect(o.at, `call ${c.i} settled`).toBeDefined()
      expect(o.at as number).toBeLessThanOrEqual(Math.min(c.maxWaitMs, c.abortAt ?? Number.POSITIVE_INFINITY))
      if (o.value !== undefined) {
        const list = admittedAt.get(c.identity) ?? []
        list.push([o.at as number, c.i])
        admittedAt.set(c.identity, list)
      } else if (c.abortAt === undefined || (o.at as number) < c.abortAt) {
        expect(['ERR_FASTLIMIT_WAIT_TOO_LONG']).toContain(errorOf(o).code)
      }
    }
    const settled = out.map((o) =>
      o.value !== undefined ? 'ok' : o.error instanceof FastlimitError ? o.error.code : 'abort',
    )
    // Each way out happens (this seed: 235 admitted, 32 aborted, 133 refused).
    expect(settled.filter((x) => x === 'ok').length).toBeGreaterThan(100)
    expect(settled.filter((x) => x === 'abort').length).toBeGreaterThan(10)
    expect(settled.filter((x) => x === 'ERR_FASTLIMIT_WAIT_TOO_LONG').length).toBeGreaterThan(50)
    // First in, first out per identity: admission times never decrease in call order.
    for (const list of admittedAt.values()) {
      for (let k = 1; k < list.length; k++)
        expect((list[k] as [number, number])[0]).toBeGreaterThanOrEqual((list[k - 1] as [number, number])[0])
    }
    expect(vi.getTimerCount()).toBe(0)
  })

  it('rejects bad arguments with ERR_FASTLIMIT_ARGUMENT and bad rules with ERR_FASTLIMIT_CONFIG', async () => {
    const l = limiter()
    const code = (p: Promise<unknown>) =>
      p.then(
        () => 'resolved',
        (e: FastlimitError) => e.code,
      )
    expect(await code(l.wait(42 as never, '1/s'))).toBe('ERR_FASTLIMIT_ARGUMENT')
    expect(await code(l.wait('u', '1/s', { cost: 0 }))).toBe('ERR_FASTLIMIT_ARGUMENT')
    expect(await code(l.wait('u', '1/s', { maxWaitMs: -1 }))).toBe('ERR_FASTLIMIT_ARGUMENT')
    expect(await code(l.wait('u', '1/s', { maxWaitMs: 1.5 }))).toBe('ERR_FASTLIMIT_ARGUMENT')
    expect(await code(l.wait('u', '1/s', { maxQueue: 0 }))).toBe('ERR_FASTLIMIT_ARGUMENT')
    expect(await code(l.wait('u', '1/s', { scope: 'a b' }))).toBe('ERR_FASTLIMIT_ARGUMENT')
    expect(await code(l.wait('u', '1/s', { signal: {} as AbortSignal }))).toBe('ERR_FASTLIMIT_ARGUMENT')
    expect(await code(l.wait('u', '1/s', { timeout: 5 } as never))).toBe('ERR_FASTLIMIT_ARGUMENT')
    expect(await code(l.wait('u', '1/sec/min'))).toBe('ERR_FASTLIMIT_CONFIG')
  })
})

/** A backend that fails every call while `down` is true. */
function flaky(inner: MemoryBackend): Backend & { down: boolean } {
  const b = {
    down: false,
    kind: 'flaky',
    checkAndIncrement(key: string, bucket: never, cost: number) {
      if (b.down) return Promise.reject(new Error('store down'))
      return inner.checkAndIncrement(key, bucket, cost)
    },
    checkAndIncrementAll(key: string, buckets: never, cost: number) {
      if (b.down) return Promise.reject(new Error('store down'))
      return inner.checkAndIncrementAll(key, buckets, cost)
    },
  }
  return b
}

describe('limiter.wait when the store fails', () => {
  it("'fail-open' admits (source 'policy'), as check would", async () => {
    const b = flaky(memory())
    b.down = true
    const l = limiter(b, { onBackendError: 'fail-open', breaker: false })
    const d = await l.wait('u', '1/s')
    expect(d.allowed).toBe(true)
    expect(d.source).toBe('policy')
  })

  it("'fail-closed' keeps waiting, asks again after the policy's retryAfterMs, and is admitted once the store is back", async () => {
    const b = flaky(memory())
    b.down = true
    const l = limiter(b, { onBackendError: 'fail-closed', breaker: false })
    const calls: number[] = []
    l.on('decision', () => calls.push(performance.now()))
    const out = track([l.wait('u', '1/s')])
    await vi.advanceTimersByTimeAsync(2500)
    expect(out[0]?.at).toBeUndefined()
    // Asked at 0, 1000 and 2000 ms: one check per policy retry, no busy loop.
    expect(calls).toHaveLength(3)
    b.down = false
    await vi.advanceTimersByTimeAsync(500)
    expect(out[0]?.at).toBe(3000)
    expect(resolvedOf(out[0]).source).toBe('backend')
  })

  it("'fail-closed' with maxWaitMs: refused at its deadline, with the store's failure as the cause", async () => {
    const b = flaky(memory())
    b.down = true
    const l = limiter(b, { onBackendError: 'fail-closed', breaker: false })
    const out = track([l.wait('u', '1/s', { maxWaitMs: 1500 })])
    await vi.advanceTimersByTimeAsync(1500)
    const err = out[0]?.error as FastlimitError
    expect(out[0]?.at).toBe(1500)
    expect(err.code).toBe('ERR_FASTLIMIT_WAIT_TOO_LONG')
    expect((err.cause as FastlimitError).code).toBe('ERR_FASTLIMIT_BACKEND')
    // FastLimit's own timeout timer outlives its last call by timeoutMs at most.
    await vi.advanceTimersByTimeAsync(1000)
    expect(vi.getTimerCount()).toBe(0)
  })

  it("'throw' rejects each waiter with the store's error", async () => {
    const b = flaky(memory())
    const l = limiter(b, { onBackendError: 'throw', breaker: false })
    await l.wait('u', '1/s')
    const out = track([l.wait('u', '1/s'), l.wait('u', '1/s')])
    await settle()
    b.down = true
    await vi.advanceTimersByTimeAsync(1000)
    expect(out.map((o) => (o.error as FastlimitError | undefined)?.code)).toEqual([
      'ERR_FASTLIMIT_BACKEND',
      'ERR_FASTLIMIT_BACKEND',
    ])
  })

  it('{ fallback } waits on the fallback backend’s exact retry times', async () => {
    const b = flaky(memory())
    b.down = true
    const l = limiter(b, { onBackendError: { fallback: memory() }, breaker: false })
    const out = track([l.wait('u', '1/s'), l.wait('u', '1/s')])
    await vi.advanceTimersByTimeAsync(1000)
    expect(out.map((o) => o.at)).toEqual([0, 1000])
    expect(resolvedOf(out[1]).source).toBe('fallback')
  })
})

describe('throttle', () => {
  it('keeps the arguments, this and the result, and spaces the calls by the rules', async () => {
    const starts: number[] = []
    const obj = {
      base: 10,
      async add(this: { base: number }, x: number, y = 0): Promise<number> {
        starts.push(Date.now() - T0)
        return this.base + x + y
      },
    }
    const add = throttle(obj.add, { rules: { limit: 2, window: '1s', burst: 1 } })
    const results = Promise.all([add.call(obj, 1), add.call(obj, 2, 3), add.call(obj, 4)])
    await vi.advanceTimersByTimeAsync(1000)
    expect(await results).toEqual([11, 15, 14])
    expect(starts).toEqual([0, 500, 1000])
  })

  it('rejects like fn, and a synchronous throw becomes a rejection', async () => {
    const f = throttle(
      (x: number) => {
        if (x < 0) throw new RangeError('negative')
        return x
      },
      { rules: '10/s' },
    )
    await expect(f(-1)).rejects.toThrow(RangeError)
    await expect(f(2)).resolves.toBe(2)
  })

  it('keeps keys independent: a saturated key does not delay another', async () => {
    const l = limiter()
    const starts: Array<[string, number]> = []
    const call = throttle(async (host: string) => starts.push([host, Date.now() - T0]), {
      limiter: l,
      rules: '1/s',
      key: (host) => host,
    })
    const all = Promise.all(['a', 'a', 'a', 'b', 'b', 'c'].map((h) => call(h)))
    await vi.advanceTimersByTimeAsync(2000)
    await all
    const at = (host: string) => starts.filter(([h]) => h === host).map(([, t]) => t)
    expect(at('a')).toEqual([0, 1000, 2000])
    expect(at('b')).toEqual([0, 1000])
    expect(at('c')).toEqual([0])
  })

  it('caps the calls in flight per key with concurrency, first in first out', async () => {
    let running = 0
    let most = 0
    const order: number[] = []
    const job = throttle(
      async (i: number) => {
        running++
        most = Math.max(most, running)
        order.push(i)
        await new Promise((r) => setTimeout(r, 100 + (i % 3) * 50))
        running--
        return i
      },
      { limiter: limiter(), rules: '1000/s', concurrency: 3 },
    )
    const all = Promise.all(Array.from({ length: 12 }, (_, i) => job(i)))
    await vi.advanceTimersByTimeAsync(2000)
    expect(await all).toEqual(Array.from({ length: 12 }, (_, i) => i))
    expect(most).toBe(3)
    expect(order).toEqual(Array.from({ length: 12 }, (_, i) => i))
    expect(vi.getTimerCount()).toBe(0)
  })

  it('charges a cost per call (a number or a function of the arguments)', async () => {
    const l = limiter()
    const send = throttle(async (batch: string[]) => batch.length, {
      limiter: l,
      rules: '10/s',
      key: 'sms',
      cost: (batch) => batch.length,
    })
    await send(['a', 'b', 'c', 'd', 'e', 'f', 'g'])
    expect((await l.peek('sms', '10/s')).remaining).toBe(3)
  })

  it('maxWaitMs covers the wait for a slot and for the rate; fn is not called when refused', async () => {
    let calls = 0
    const f = throttle(
      async () => {
        calls++
        await new Promise((r) => setTimeout(r, 1000))
      },
      { rules: '100/s', concurrency: 1, maxWaitMs: 500 },
    )
    const out = track([f(), f()])
    await vi.advanceTimersByTimeAsync(1000)
    expect(out[1]?.at).toBe(500)
    expect(errorOf(out[1]).code).toBe('ERR_FASTLIMIT_WAIT_TOO_LONG')
    expect(calls).toBe(1)
  })

  it('fails at construction on bad options, and makes no limiter (no timer) before the first call', () => {
    expect(() => throttle(async () => 1, { rules: '10/x' })).toThrow(/\[fastlimit\] \[core\]/)
    expect(() => throttle(async () => 1, { rules: '10/s', concurrency: 0 })).toThrow(/concurrency/)
    expect(() => throttle(async () => 1, { rules: '10/s', maxWaitMs: -5 })).toThrow(/throttle: maxWaitMs/)
    expect(() => throttle(async () => 1, { rules: '10/s', cost: 0 })).toThrow(/cost/)
    expect(() => throttle(async () => 1, { rules: '10/s', limiter: {} as FastLimit })).toThrow(/FastLimit/)
    expect(() => throttle(async () => 1, { rules: '10/s', speed: 1 } as never)).toThrow(
      /Unknown throttle option/,
    )
    expect(() => throttle(async () => 1, {} as never)).toThrow(/needs rules/)
    throttle(async () => 1, { rules: '10/s' })
    expect(vi.getTimerCount()).toBe(0)
  })

  it('rejects a call whose key function returns no string', async () => {
    const f = throttle(async (x: number) => x, { rules: '10/s', key: (x) => x as unknown as string })
    await expect(f(1)).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_ARGUMENT' })
  })
})
