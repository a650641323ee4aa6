import { describe, expect, it } from 'vitest'
import { ALGORITHMS, step } from './algorithms'
import type { Algorithm, Backend, BackendResult, BucketConfig, SyncBackend } from './backend'
import { ConfigError } from './errors'
import { FastLimit } from './limiter'
import { cachedDenial, type LocalTierBackend, localTier } from './local-tier'
import { MemoryBackend } from './memory'
import { fakeClock, prng, withoutAtMs } from './testing'

const T0 = 1_700_000_000_000

/** A backend that counts the calls reaching it, and may hide its synchronous path or its adjust. */
function counted(inner: MemoryBackend, hide: { sync?: boolean; adjust?: boolean } = {}) {
  const calls = { check: 0, adjust: 0, all: 0 }
  const backend: Record<string, unknown> = {
    kind: 'counted',
    checkAndIncrement: (k: string, b: BucketConfig, c: number) => {
      calls.check++
      return inner.checkAndIncrement(k, b, c)
    },
    checkAndIncrementAll: (k: string, b: readonly BucketConfig[], c: number) => {
      calls.all++
      return inner.checkAndIncrementAll(k, b, c)
    },
    peek: (k: string, b: BucketConfig) => inner.peek(k, b),
    reset: (k: string) => inner.reset(k),
    clear: () => inner.clear(),
  }
  if (!hide.adjust) {
    backend.adjust = (...args: Parameters<NonNullable<Backend['adjust']>>) => {
      calls.adjust++
      return inner.adjust(...args)
    }
  }
  if (!hide.sync) {
    backend.checkAndIncrementSync = (k: string, b: BucketConfig, c: number) => {
      calls.check++
      return inner.checkAndIncrementSync(k, b, c)
    }
  }
  return { backend: backend as unknown as Backend, calls }
}

const capacityOf = (b: BucketConfig) =>
  b.algorithm === 'gcra' || b.algorithm === 'token-bucket' || b.algorithm === 'leaky-bucket'
    ? (b.burst ?? b.limit)
    : b.limit

describe('localTier: the deny cache', () => {
  for (const algorithm of ALGORITHMS) {
    it(`${algorithm}: answers exactly as the store, over random costs and times, with fewer store calls`, async () => {
      const clock = fakeClock(T0)
      const plain = new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 })
      const { backend, calls } = counted(new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }))
      const tier = localTier(backend, { clock: clock.now, leases: false })
      const random = prng(0xd15c + algorithm.length)
      const bucket: BucketConfig = {
        algorithm,
        limit: 7,
        windowMs: 1000,
        burst: capacityOf({ algorithm, limit: 7, windowMs: 1000 }) === 7 ? undefined : 7,
      }
      let ops = 0
      for (let i = 0; i < 4000; i++) {
        if (random() < 0.15) clock.advance(Math.floor(random() * 120))
        const cost = random() < 0.6 ? 1 : 1 + Math.floor(random() * 8)
        const key = `k${Math.floor(random() * 2)}`
        const expected = await plain.checkAndIncrement(key, bucket, cost)
        const actual = await tier.checkAndIncrement(key, bucket, cost)
        ops++
        expect(withoutAtMs(actual), `op ${i} cost ${cost} at +${clock.now() - T0}`).toEqual(
          withoutAtMs(expected),
        )
      }
      const s = tier.stats()
      expect(s.localDenials).toBeGreaterThan(ops / 4)
      expect(calls.check).toBe(ops - s.localDenials)
    })
  }

  it('a denied key makes no store call until its retryAfterMs, then asks the store again', async () => {
    const clock = fakeClock(T0)
    const { backend, calls } = counted(new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }))
    const tier = localTier(backend, { clock: clock.now, leases: false })
    const bucket: BucketConfig = { algorithm: 'gcra', limit: 10, windowMs: 10_000 }
    for (let i = 0; i < 10; i++) expect((await tier.checkAndIncrement('k', bucket, 1)).allowed).toBe(true)
    const denied = await tier.checkAndIncrement('k', bucket, 1)
    expect(denied.allowed).toBe(false)
    expect(denied.retryAfterMs).toBe(1000)
    const before = calls.check
    for (let t = 0; t < 1000; t += 10) {
      const r = await tier.checkAndIncrement('k', bucket, 1)
      expect(r).toMatchObject({ allowed: false, retryAfterMs: 1000 - t, remaining: 0 })
      clock.advance(10)
    }
    expect(calls.check).toBe(before)
    expect((await tier.checkAndIncrement('k', bucket, 1)).allowed).toBe(true)
    expect(calls.check).toBe(before + 1)
  })

  it('a denial for a large cost does not deny a smaller cost the store would admit', async () => {
    const clock = fakeClock(T0)
    const { backend, calls } = counted(new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }))
    const tier = localTier(backend, { clock: clock.now, leases: false })
    for (const algorithm of ALGORITHMS) {
      const bucket: BucketConfig = { algorithm, limit: 10, windowMs: 1000 }
      await tier.checkAndIncrement(algorithm, bucket, 6)
      expect((await tier.checkAndIncrement(algorithm, bucket, 5)).allowed).toBe(false)
      const n = calls.check
      // 4 units remain: a cost of 4 passes (at the store), a cost of 5 or more stays denied.
      expect((await tier.checkAndIncrement(algorithm, bucket, 4)).allowed).toBe(true)
      expect(calls.check).toBe(n + 1)
    }
  })

  it('cachedDenial: whenever it answers, it is the step on the real state (random states, costs, times)', () => {
    const random = prng(0xca5e)
    let answered = 0
    let otherCost = 0
    let fromAdmission = 0
    for (const algorithm of ALGORITHMS) {
      for (let i = 0; i < 3000; i++) {
        const limit = 1 + Math.floor(random() * 20)
        const windowMs = 100 + Math.floor(random() * 5000)
        const bucket: BucketConfig = {
          algorithm,
          limit,
          windowMs,
          burst: random() < 0.3 ? limit + 3 : undefined,
        }
        const cap = capacityOf(bucket)
        let state: number[] | undefined
        let now = T0
        let admitted: BackendResult | undefined
        for (let j = 0; j < 1 + Math.floor(random() * 30); j++) {
          now += Math.floor(random() * windowMs * 0.2)
          const out = step(state, now, bucket, 1 + Math.floor(random() * 3))
          if (out.result.allowed) {
            state = out.state
            admitted = { ...out.result, atMs: now }
          } else admitted = undefined
        }
        const cost = 1 + Math.floor(random() * cap)
        let d: { cost: number; result: BackendResult; t0: number }
        let later: number
        if (admitted !== undefined && random() < 0.5) {
          // The last admission, kept with the store's clock.
          d = { cost: 1, result: admitted, t0: now }
          later = now + Math.floor(random() * windowMs * 1.2)
        } else {
          const first = step(state, now, bucket, cost)
          if (first.result.allowed || !Number.isFinite(first.result.retryAfterMs)) continue
          d = { cost, result: first.result, t0: now }
          later = now + Math.floor(random() * first.result.retryAfterMs * 1.2)
        }
        const c2 = random() < 0.5 ? cost : 1 + Math.floor(random() * cap)
        const served = cachedDenial(d, bucket, c2, later)
        if (served === undefined) continue
        answered++
        if (c2 !== cost) otherCost++
        if (d.result.allowed) fromAdmission++
        expect(served, `${algorithm} ${JSON.stringify(bucket)} cost ${cost} then ${c2}`).toEqual(
          step(state, later, bucket, c2).result,
        )
      }
    }
    expect(answered).toBeGreaterThan(2000)
    expect(otherCost).toBeGreaterThan(300)
    expect(fromAdmission).toBeGreaterThan(300)
  })

  it('a refund, reset or adjustment through the tier drops the kept denial', async () => {
    const clock = fakeClock(T0)
    const { backend, calls } = counted(new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }))
    const tier = localTier(backend, { clock: clock.now, leases: false })
    const bucket: BucketConfig = { algorithm: 'fixed-window', limit: 2, windowMs: 60_000 }
    const r = await tier.checkAndIncrement('k', bucket, 2)
    expect((await tier.checkAndIncrement('k', bucket, 1)).allowed).toBe(false)
    await tier.adjust?.('k', [bucket], -1, [{ cost: 2, resetMs: r.resetMs, atMs: r.atMs }])
    const n = calls.check
    expect((await tier.checkAndIncrement('k', bucket, 1)).allowed).toBe(true)
    expect(calls.check).toBe(n + 1)
    expect((await tier.checkAndIncrement('k', bucket, 1)).allowed).toBe(false)
    await tier.reset?.('k')
    expect((await tier.checkAndIncrement('k', bucket, 1)).allowed).toBe(true)
  })

  it('stays within maxKeys', async () => {
    const clock = fakeClock(T0)
    const { backend, calls } = counted(new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }))
    const tier = localTier(backend, { clock: clock.now, leases: false, maxKeys: 3 })
    const bucket: BucketConfig = { algorithm: 'fixed-window', limit: 1, windowMs: 60_000 }
    for (let k = 0; k < 5; k++) {
      await tier.checkAndIncrement(`k${k}`, bucket, 1)
      await tier.checkAndIncrement(`k${k}`, bucket, 1)
    }
    const n = calls.check
    // k0 and k1 were evicted (asked again), k2 to k4 are kept.
    for (let k = 4; k >= 0; k--)
      expect((await tier.checkAndIncrement(`k${k}`, bucket, 1)).allowed).toBe(false)
    expect(calls.check).toBe(n + 2)
  })
})

/** P tiers over one store on one clock, each sending `perMs` checks per ms; returns admission times. */
async function simulate(options: {
  algorithm: Algorithm
  processes: number
  limit: number
  windowMs: number
  ms: number
  perMs: number
  leaseMs: number
  maxLease: number
  seed: number
}) {
  const clock = fakeClock(T0 - (T0 % options.windowMs) + options.windowMs - options.ms / 2)
  const store = new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 })
  const tiers: LocalTierBackend[] = []
  const counters: Array<{ calls: { check: number; adjust: number } }> = []
  for (let p = 0; p < options.processes; p++) {
    const c = counted(store, { sync: p % 2 === 1 })
    counters.push(c)
    tiers.push(
      localTier(c.backend, {
        clock: clock.now,
        leaseMs: options.leaseMs,
        maxLease: options.maxLease,
        maxLeaseShare: 1,
        hotRate: 20,
      }),
    )
  }
  const bucket: BucketConfig = {
    algorithm: options.algorithm,
    limit: options.limit,
    windowMs: options.windowMs,
  }
  const random = prng(options.seed)
  const admitted: number[] = []
  let requests = 0
  for (let t = 0; t < options.ms; t++) {
    const batch: Promise<BackendResult>[] = []
    for (let p = 0; p < options.processes; p++) {
      const n =
        random() < options.perMs - Math.floor(options.perMs)
          ? Math.ceil(options.perMs)
          : Math.floor(options.perMs)
      for (let i = 0; i < n; i++) {
        requests++
        const tier = tiers[p] as LocalTierBackend
        const sync = tier.checkAndIncrementSync('hot', bucket, 1)
        batch.push(sync !== undefined ? Promise.resolve(sync) : tier.checkAndIncrement('hot', bucket, 1))
      }
    }
    const now = clock.now()
    for (const r of await Promise.all(batch)) if (r.allowed) admitted.push(now)
    clock.advance(1)
  }
  for (const tier of tiers) await tier.flush()
  const storeCalls = tiers.reduce((s, t) => s + t.stats().storeCalls, 0)
  return { admitted, requests, storeCalls, tiers, store, bucket, clock }
}

/** The most admitted in any closed interval [t_i, t_j] beyond `base + slope * (t_j - t_i)`. */
function worstExcess(times: readonly number[], slope: number): number {
  // max over i <= j of (j - i + 1) - slope * (t_j - t_i): keep the best (slope * t_i - i) so far.
  let best = Number.NEGATIVE_INFINITY
  let worst = 0
  for (let j = 0; j < times.length; j++) {
    const tj = times[j] as number
    const here = slope * tj - j
    if (here > best) best = here
    const v = j + 1 - slope * tj + best
    if (v > worst) worst = v
  }
  return worst
}

/** The most admitted in any interval of `windowMs` (closed at both ends over `windowMs - 1` ms). */
function mostInAnyWindow(times: readonly number[], windowMs: number): number {
  let most = 0
  let i = 0
  for (let j = 0; j < times.length; j++) {
    while ((times[j] as number) - (times[i] as number) >= windowMs) i++
    if (j - i + 1 > most) most = j - i + 1
  }
  return most
}

function perAlignedWindow(times: readonly number[], windowMs: number): number {
  const counts = new Map<number, number>()
  for (const t of times) {
    const w = Math.floor(t / windowMs)
    counts.set(w, (counts.get(w) ?? 0) + 1)
  }
  return Math.max(0, ...counts.values())
}

describe('localTier: leases', () => {
  const P = 4
  const M = 25
  // The numbers: 1,000 per minute, 2,000 requests a second per process; 8 s across a window's end.
  const limit = 1000
  const windowMs = 60_000
  const leaseMs = 1000
  for (const algorithm of ALGORITHMS) {
    it(`${algorithm}: ${P} processes on one hot key stay within the stated bound, with few store calls`, async () => {
      const sim = await simulate({
        algorithm,
        processes: P,
        limit,
        windowMs,
        ms: 8000,
        perMs: 2,
        leaseMs,
        maxLease: M,
        seed: 0x1ea5e + algorithm.length,
      })
      const { admitted } = sim
      const meter = algorithm === 'gcra' || algorithm === 'token-bucket' || algorithm === 'leaky-bucket'
      if (algorithm === 'fixed-window' || algorithm === 'sliding-window') {
        expect(perAlignedWindow(admitted, windowMs)).toBeLessThanOrEqual(limit)
      } else if (algorithm === 'sliding-log') {
        expect(mostInAnyWindow(admitted, windowMs)).toBeLessThanOrEqual(limit + P * M)
      } else if (meter) {
        const extra = Math.min(P * M, (limit * leaseMs) / windowMs)
        expect(worstExcess(admitted, limit / windowMs)).toBeLessThanOrEqual(limit + extra)
      }
      // Saturated (8,000 requests a second against 500 a second): few store calls per request.
      expect(sim.storeCalls / sim.requests).toBeLessThanOrEqual(0.05)
      expect(sim.tiers.reduce((s, t) => s + t.stats().leases, 0)).toBeGreaterThan(0)
      // Exact accounting: after flush, the store counts exactly what the processes admitted (in the
      // current window; every unused unit of a lease of this window came back).
      const peek = await sim.store.peek('hot', sim.bucket)
      const now = sim.clock.now()
      if (algorithm === 'fixed-window') {
        const inWindow = admitted.filter((t) => t >= now - (now % windowMs)).length
        expect(limit - peek.remaining).toBe(inWindow)
      }
      if (algorithm === 'sliding-log') expect(limit - peek.remaining).toBe(admitted.length)
    })
  }

  it('without contention: leases cut store calls per decision below 1 in 20, and refund unused units', async () => {
    const clock = fakeClock(T0)
    const store = new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 })
    const { backend, calls } = counted(store, { sync: true })
    const tier = localTier(backend, { clock: clock.now, leaseMs: 1000, maxLease: 100 })
    expect(tier.leasesEnabled).toBe(true)
    const bucket: BucketConfig = { algorithm: 'gcra', limit: 1_000_000, windowMs: 60_000 }
    let n = 0
    for (let t = 0; t < 3000; t++) {
      for (let i = 0; i < 5; i++) {
        n++
        const sync = tier.checkAndIncrementSync('k', bucket, 1)
        const r = sync ?? (await tier.checkAndIncrement('k', bucket, 1))
        expect(r.allowed).toBe(true)
      }
      clock.advance(1)
    }
    const s = tier.stats()
    expect(s.storeCalls / n).toBeLessThan(0.05)
    expect(s.localAdmits).toBeGreaterThan(n * 0.9)
    await tier.flush()
    expect(calls.adjust).toBeGreaterThan(0)
    // Every unit leased and not admitted went back: the store holds exactly the admitted units.
    const after = await store.peek('k', bucket)
    const drained = Math.floor(3000 * (1_000_000 / 60_000))
    expect(after.remaining).toBeGreaterThanOrEqual(1_000_000 - n)
    expect(after.remaining).toBeLessThanOrEqual(1_000_000 - n + drained)
    expect(tier.stats().heldUnits).toBe(0)
  })

  it('a lease ends after leaseMs: its unused units go back at the next call, and a fixed window lease ends with its window', async () => {
    const clock = fakeClock(60_000 * 28_333_334)
    const store = new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 })
    const tier = localTier(store, {
      clock: clock.now,
      leaseMs: 500,
      maxLease: 50,
      maxLeaseShare: 1,
      hotRate: 10,
    })
    const bucket: BucketConfig = { algorithm: 'fixed-window', limit: 1000, windowMs: 60_000 }
    // Hot: 100 calls a second for a second.
    for (let t = 0; t < 1000; t += 10) {
      await tier.checkAndIncrement('k', bucket, 1)
      clock.advance(10)
    }
    expect(tier.stats().leases).toBeGreaterThan(0)
    const held = tier.stats().heldUnits
    expect(held).toBeGreaterThan(0)
    const peek = await store.peek('k', bucket)
    expect(1000 - peek.remaining).toBe(100 + held)
    clock.advance(500)
    await tier.checkAndIncrement('other', bucket, 1)
    expect((await store.peek('k', bucket)).remaining).toBe(1000 - 100)
    // A lease taken 100 ms before the window ends is not used after it.
    const end = 60_000 * 28_333_335
    clock.set(end - 100)
    for (let i = 0; i < 300; i++) {
      await tier.checkAndIncrement('k2', bucket, 1)
      if (i % 3 === 0 && clock.now() < end - 1) clock.advance(1)
    }
    expect(tier.stats().localAdmits).toBeGreaterThan(200)
    const before = tier.stats().localAdmits
    clock.set(end)
    await tier.checkAndIncrement('k2', bucket, 1)
    expect(tier.stats().localAdmits).toBe(before)
  })

  it('is off without adjust on the inner backend (the deny cache still works)', async () => {
    const clock = fakeClock(T0)
    const { backend, calls } = counted(new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }), {
      adjust: true,
    })
    const tier = localTier(backend, { clock: clock.now, hotRate: 1 })
    expect(tier.leasesEnabled).toBe(false)
    expect(tier.adjust).toBeUndefined()
    const bucket: BucketConfig = { algorithm: 'gcra', limit: 100, windowMs: 1000 }
    for (let i = 0; i < 2000; i++) {
      await tier.checkAndIncrement('k', bucket, 1)
      clock.advance(1)
    }
    expect(tier.stats().leases).toBe(0)
    expect(tier.stats().localDenials).toBeGreaterThan(0)
    expect(calls.check).toBe(2000 - tier.stats().localDenials)
  })

  it('close() gives unused units back and closes the inner backend', async () => {
    const clock = fakeClock(T0)
    const store = new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 })
    let closed = 0
    const inner = new Proxy(store, {
      get: (target, p) => {
        if (p !== 'close') return Reflect.get(target, p, target)
        return () => {
          closed++
          return target.close()
        }
      },
    })
    const tier = localTier(inner as unknown as SyncBackend, {
      clock: clock.now,
      hotRate: 10,
      maxLeaseShare: 1,
    })
    const bucket: BucketConfig = { algorithm: 'sliding-log', limit: 1000, windowMs: 60_000 }
    for (let i = 0; i < 400; i++) {
      tier.checkAndIncrementSync('k', bucket, 1)
      clock.advance(1)
    }
    expect(tier.stats().leases).toBeGreaterThan(0)
    await tier.close()
    await tier.close()
    expect(closed).toBe(1)
    expect(tier.stats().refundedUnits).toBeGreaterThan(0)
  })
})

describe('localTier: the protocol', () => {
  it('forwards what the inner backend has, and only that', () => {
    const tier = localTier(new MemoryBackend({ cleanupIntervalMs: 0 }))
    for (const m of [
      'checkAndIncrementAll',
      'checkAndIncrementAllSync',
      'peek',
      'peekSync',
      'reset',
      'clear',
      'adjust',
      'adjustSync',
      'checkAndIncrementSync',
    ])
      expect(typeof (tier as unknown as Record<string, unknown>)[m], m).toBe('function')
    expect(tier.kind).toBe('memory')
    const bare = localTier({ checkAndIncrement: () => Promise.reject(new Error('x')) })
    for (const m of [
      'checkAndIncrementAll',
      'peek',
      'reset',
      'clear',
      'adjust',
      'adjustSync',
      'reconnect',
      'peekSync',
    ])
      expect((bare as unknown as Record<string, unknown>)[m], m).toBeUndefined()
    expect(bare.leasesEnabled).toBe(false)
  })

  it('in front of an asynchronous store, FastLimit gets local decisions in the same turn', async () => {
    const clock = fakeClock(T0)
    const { backend } = counted(new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }), { sync: true })
    const tier = localTier(backend, { clock: clock.now })
    const limiter = new FastLimit({ backend: tier })
    await limiter.check('u', '1/min')
    const denied = await limiter.check('u', '1/min')
    expect(denied.allowed).toBe(false)
    let seen = false
    limiter.check('u', '1/min').then((d) => {
      seen = d.allowed === false
    })
    await Promise.resolve()
    expect(seen).toBe(true)
    expect(tier.stats().localDenials).toBeGreaterThan(0)
    await limiter.close()
  })

  it('refuses bad options at construction', () => {
    const m = new MemoryBackend({ cleanupIntervalMs: 0 })
    expect(() => localTier(m, { leaseMs: 0 })).toThrow(ConfigError)
    expect(() => localTier(m, { maxLease: 1.5 })).toThrow(/maxLease/)
    expect(() => localTier(m, { maxLeaseShare: 2 })).toThrow(/maxLeaseShare/)
    expect(() => localTier(m, { hotRate: -1 })).toThrow(/hotRate/)
    expect(() => localTier(m, { maxKeys: Number.NaN })).toThrow(/maxKeys/)
    expect(() => localTier(m, { leases: 'yes' as never })).toThrow(/leases/)
    expect(() => localTier(m, { nope: 1 } as never)).toThrow(/Unknown option/)
    expect(() => localTier({} as never)).toThrow(/checkAndIncrement/)
  })
})
