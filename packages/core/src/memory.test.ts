import fc from 'fast-check'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { ALGORITHMS, type State, step, stepAll } from './algorithms'
import { type BucketConfig, bucketId } from './backend'
import { ConfigError } from './errors'
import { FastLimit } from './limiter'
import { MemoryBackend } from './memory'
import { parseRule } from './rules'
import { backendConformance, fakeClock } from './testing'

backendConformance({
  name: 'MemoryBackend',
  make: (clock) => new MemoryBackend({ clock, cleanupIntervalMs: 0 }),
  countKeys: async (backend) => backend.size,
  sweep: async (backend) => {
    await backend.sweep()
  },
})

const bucket: BucketConfig = { algorithm: 'fixed-window', limit: 1, windowMs: 60_000 }

describe('MemoryBackend', () => {
  it('holds at most maxKeys and, when full, drops the key that expires soonest', async () => {
    const clock = fakeClock()
    const backend = new MemoryBackend({ maxKeys: 3, cleanupIntervalMs: 0, clock: clock.now })
    const minute: BucketConfig = { algorithm: 'fixed-window', limit: 1, windowMs: 60_000 }
    const hour: BucketConfig = { algorithm: 'fixed-window', limit: 1, windowMs: 3_600_000 }
    clock.set(1_700_000_000_000 - (1_700_000_000_000 % 3_600_000))
    await backend.checkAndIncrement('a', hour, 1)
    await backend.checkAndIncrement('b', minute, 1) // expires first
    await backend.checkAndIncrement('c', hour, 1)
    await backend.checkAndIncrement('a', hour, 1) // a use (denied), changes nothing
    await backend.checkAndIncrement('d', hour, 1) // drops b
    expect(backend.size).toBe(3)
    expect((await backend.peek('a', hour)).remaining).toBe(0)
    expect((await backend.peek('b', minute)).remaining).toBe(1)
    expect((await backend.peek('c', hour)).remaining).toBe(0)
    expect((await backend.peek('d', hour)).remaining).toBe(0)
    await backend.close()
  })

  it('stays within maxKeys under 200,000 distinct keys', async () => {
    const clock = fakeClock()
    const backend = new MemoryBackend({ maxKeys: 10_000, cleanupIntervalMs: 0, clock: clock.now })
    const gcra = parseRule('10/s')
    for (let i = 0; i < 200_000; i++) {
      clock.advance(1)
      backend.checkAndIncrementSync(`ip-${i}`, gcra, 1)
    }
    expect(backend.size).toBe(10_000)
    // Each key expires 100 ms after its call: the newest are kept, the oldest went first.
    expect((await backend.peek('ip-199999', gcra)).remaining).toBe(9)
    expect((await backend.peek('ip-0', gcra)).remaining).toBe(10)
    await backend.close()
  })

  it('drops expired keys lazily and in the sweep, and keeps live ones', async () => {
    const clock = fakeClock()
    const backend = new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 })
    const short: BucketConfig = { algorithm: 'gcra', limit: 10, windowMs: 1000 }
    const long: BucketConfig = { algorithm: 'gcra', limit: 10, windowMs: 3_600_000 }
    for (let i = 0; i < 25_000; i++) backend.checkAndIncrementSync(`short-${i}`, short, 1)
    for (let i = 0; i < 100; i++) backend.checkAndIncrementSync(`long-${i}`, long, 1)
    clock.advance(5000)
    expect(await backend.sweep()).toBe(25_000)
    expect(backend.size).toBe(100)
    clock.advance(3_600_000)
    backend.checkAndIncrementSync('long-0', long, 1) // lazily replaced
    expect(backend.size).toBe(100)
    expect(await backend.sweep()).toBe(99)
  })

  it('sweeps on an unref-ed timer by itself', async () => {
    const clock = fakeClock()
    const backend = new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 20 })
    backend.checkAndIncrementSync('x', bucket, 1)
    clock.advance(120_000)
    await new Promise((r) => setTimeout(r, 80))
    expect(backend.size).toBe(0)
    await backend.close()
  })

  it('refuses bad options at construction and calls after close', async () => {
    expect(() => new MemoryBackend({ maxKeys: 0 })).toThrow(ConfigError)
    expect(() => new MemoryBackend({ maxKeys: 1.5 })).toThrow(
      /maxKeys must be a whole number from 1 to 1073741824, got 1.5/,
    )
    expect(() => new MemoryBackend({ cleanupIntervalMs: -1 })).toThrow(/cleanupIntervalMs/)
    expect(() => new MemoryBackend({ clock: 5 as never })).toThrow(/clock must be a function/)
    expect(() => new MemoryBackend({ maxkeys: 5 } as never)).toThrow(/Unknown option "maxkeys"/)
    const backend = new MemoryBackend()
    await backend.close()
    await expect(backend.checkAndIncrement('a', bucket, 1)).rejects.toMatchObject({
      code: 'ERR_FASTLIMIT_CLOSED',
    })
  })
})

describe('MemoryBackend under a flood of new identities', () => {
  const login = parseRule({ limit: 5, window: '15m', name: 'login' })

  /** A victim limited on the login rule, then `expired` keys whose state has expired, then `flood` new identities. */
  function attack(
    backend: MemoryBackend,
    clock: ReturnType<typeof fakeClock>,
    expired: number,
    flood: number,
  ) {
    for (let i = 0; i < 5; i++) backend.checkAndIncrementSync('victim', login, 1)
    expect(backend.checkAndIncrementSync('victim', login, 1).allowed).toBe(false)
    for (let i = 0; i < expired; i++) backend.checkAndIncrementSync(`old-${i}`, parseRule('1/s'), 1)
    clock.advance(2000)
    for (let i = 0; i < flood; i++) backend.checkAndIncrementSync(`junk-${i}`, login, 1)
    let admitted = 0
    for (let i = 0; i < 5; i++) if (backend.checkAndIncrementSync('victim', login, 1).allowed) admitted++
    return admitted
  }

  it('drops expired keys before any live one: a limited client is not reset while expired keys remain', async () => {
    const clock = fakeClock()
    const backend = new MemoryBackend({ maxKeys: 1000, cleanupIntervalMs: 0, clock: clock.now })
    // 999 expired keys make room for 999 new identities; the victim, least recently used, stays limited.
    expect(attack(backend, clock, 999, 999)).toBe(0)
    expect(backend.size).toBe(1000)
    await backend.close()
  })

  it('then drops the live key closest to expiring: new identities charged once go before a limited client', async () => {
    const clock = fakeClock()
    const backend = new MemoryBackend({ maxKeys: 1000, cleanupIntervalMs: 0, clock: clock.now })
    // 100,000 new identities, 100 times maxKeys: each charged once expires in 3 minutes, the victim in 15.
    expect(attack(backend, clock, 0, 100_000)).toBe(0)
    expect(backend.size).toBe(1000)
    await backend.close()
  })

  it("is still a bound: new identities whose state outlives the victim's do evict it", async () => {
    const clock = fakeClock()
    const backend = new MemoryBackend({ maxKeys: 100, cleanupIntervalMs: 0, clock: clock.now })
    for (let i = 0; i < 5; i++) backend.checkAndIncrementSync('victim', login, 1)
    clock.advance(1000)
    for (let i = 0; i < 100; i++) backend.checkAndIncrementSync(`junk-${i}`, login, 5)
    expect(backend.checkAndIncrementSync('victim', login, 1).allowed).toBe(true)
    await backend.close()
  })

  it('finds the key that expires soonest however many keys were charged again since (hot keys are never taken for cold)', async () => {
    const clock = fakeClock()
    const N = 2000
    const backend = new MemoryBackend({ maxKeys: 2 * N, cleanupIntervalMs: 0, clock: clock.now })
    const rule = parseRule({ limit: 1000, window: '1h' })
    // Hot keys first (the soonest expiries when they were created), then cold ones, then the hot keys
    // are charged again and again: their expiries grow past the cold ones'.
    for (let i = 0; i < N; i++) backend.checkAndIncrementSync(`hot-${i}`, rule, 1)
    clock.advance(1)
    for (let i = 0; i < N; i++) backend.checkAndIncrementSync(`cold-${i}`, rule, 1)
    for (let round = 0; round < 5; round++)
      for (let i = 0; i < N; i++) backend.checkAndIncrementSync(`hot-${i}`, rule, 1)
    // N new keys a little later: the cold ones (one unit each, expiring soonest) go, every hot key stays.
    clock.advance(10)
    for (let i = 0; i < N; i++) backend.checkAndIncrementSync(`new-${i}`, rule, 1)
    for (let i = 0; i < N; i++) expect(backend.peekSync(`hot-${i}`, rule).remaining).toBe(1000 - 6)
    for (let i = 0; i < N; i++) expect(backend.peekSync(`cold-${i}`, rule).remaining).toBe(1000)
    await backend.close()
  })
})

describe('MemoryBackend on every runtime, through the public protocol', () => {
  afterEach(() => {
    vi.restoreAllMocks()
  })

  it('starts no timer at construction; the sweep timer starts at the first write, once', async () => {
    const spy = vi.spyOn(globalThis, 'setInterval')
    const backend = new MemoryBackend({ cleanupIntervalMs: 1000 })
    expect(spy).not.toHaveBeenCalled()
    backend.peekSync('a', bucket)
    expect(spy).not.toHaveBeenCalled()
    backend.checkAndIncrementSync('a', bucket, 1)
    backend.checkAndIncrementSync('b', bucket, 1)
    expect(spy).toHaveBeenCalledTimes(1)
    await backend.close()
  })

  it('works where timers are forbidden (a Worker at module scope): no sweep, counts still exact', async () => {
    vi.spyOn(globalThis, 'setInterval').mockImplementation(() => {
      throw new Error('Disallowed operation called within global scope')
    })
    const backend = new MemoryBackend()
    const limiter = new FastLimit({ backend })
    expect((await limiter.check('x', '2/min')).allowed).toBe(true)
    expect((await limiter.check('x', '2/min')).allowed).toBe(true)
    expect((await limiter.check('x', '2/min')).allowed).toBe(false)
    await limiter.close()
    await backend.close()
  })

  it('works through a Proxy, as instrumentation wraps objects', async () => {
    const target = new MemoryBackend({ cleanupIntervalMs: 0 })
    const backend = new Proxy(target, {})
    const limiter = new FastLimit({ backend })
    expect((await limiter.check('x', '2/min')).remaining).toBe(1)
    expect((await limiter.check('x', ['2/min', '10/h'])).allowed).toBe(true)
    expect((await limiter.check('x', '2/min')).allowed).toBe(false)
    expect((await limiter.peek('x', '10/h')).remaining).toBe(9)
    await limiter.reset('x')
    expect((await limiter.check('x', '2/min')).remaining).toBe(1)
    expect(backend.size).toBe(1)
    expect(await backend.sweep()).toBe(0)
    expect(backend.kind).toBe('memory')
    await backend.clear()
    expect(target.size).toBe(0)
    await backend.close()
  })

  it('decides a single rule through checkAndIncrementSyncTo, a Proxy included; false falls back to the asynchronous call', async () => {
    const target = new MemoryBackend({ cleanupIntervalMs: 0 })
    const calls = { to: 0 }
    let decide = true
    const backend = new Proxy(target, {
      get(t, name, receiver) {
        if (name === 'checkAndIncrementSyncTo') {
          return (...args: Parameters<MemoryBackend['checkAndIncrementSyncTo']>) => {
            calls.to++
            return decide ? t.checkAndIncrementSyncTo(...args) : false
          }
        }
        return Reflect.get(t, name, receiver)
      },
    })
    const limiter = new FastLimit({ backend })
    for (const algorithm of ALGORITHMS) {
      const rules = limiter.rules({ algorithm, limit: 2, window: '1m' })
      expect(rules.single).toBe(rules.rules[0])
      expect((await limiter.check(algorithm, rules)).remaining).toBe(1)
      decide = false
      expect((await limiter.check(algorithm, rules)).remaining).toBe(0)
      decide = true
      const denied = await limiter.check(algorithm, rules)
      expect([denied.allowed, denied.reason, denied.remaining]).toEqual([false, 'rate-limited', 0])
    }
    expect(calls.to).toBe(3 * ALGORITHMS.length)
    await target.close()
  })

  it('says what it is', () => {
    expect(new MemoryBackend().kind).toBe('memory')
  })

  it('decides exactly as the steps do, with several rules per key, slots and lanes reused (property)', () => {
    const rules = ALGORITHMS.flatMap((algorithm) => [
      parseRule({ algorithm, limit: 3, window: 1000 }),
      parseRule({ algorithm, limit: 70, window: 5000, name: 'b' }),
    ])
    const op = fc.record({
      dt: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 50 }), fc.integer({ min: 0, max: 6000 })),
      key: fc.integer({ min: 0, max: 7 }),
      rules: fc.uniqueArray(fc.constantFrom(...rules), { minLength: 1, maxLength: 3 }),
      kind: fc.constantFrom('check', 'check', 'check', 'into', 'peek', 'reset'),
      cost: fc.integer({ min: 1, max: 4 }),
    })
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 300 }), (ops) => {
        const clock = fakeClock()
        const backend = new MemoryBackend({ cleanupIntervalMs: 0, clock: clock.now })
        // The model: per key, the latest expiry of its states and each bucket's state.
        const model = new Map<string, { expires: number; states: Map<string, State> }>()
        for (const o of ops) {
          clock.advance(o.dt)
          const now = clock.now()
          const key = `k${o.key}`
          const entry = model.get(key) ?? { expires: 0, states: new Map<string, State>() }
          if (o.kind === 'reset') {
            void backend.reset(key)
            model.delete(key)
          } else if (o.kind === 'peek') {
            const b = o.rules[0] as BucketConfig
            const state = entry.expires > now ? entry.states.get(bucketId(b)) : undefined
            expect(backend.peekSync(key, b)).toEqual(step(state, now, b, 0).result)
          } else {
            // 'into': one rule through checkAndIncrementSyncTo, the answer written into the caller's object.
            const rules = o.kind === 'into' ? o.rules.slice(0, 1) : o.rules
            const all = stepAll(
              rules.map((b) => entry.states.get(bucketId(b))),
              now,
              rules,
              o.cost,
            )
            // An admitting call reports its clock (atMs), for a reservation's refund.
            const expected = all.allowed ? all.results.map((r) => ({ ...r, atMs: now })) : all.results
            if (o.kind === 'into') {
              const out = { allowed: false, limit: 0, remaining: 0, resetMs: 0, retryAfterMs: 0 }
              expect(backend.checkAndIncrementSyncTo(key, rules[0] as BucketConfig, o.cost, out)).toBe(true)
              expect(out).toEqual(all.results[0])
            } else expect(backend.checkAndIncrementAllSync(key, rules, o.cost)).toEqual(expected)
            for (const [i, out] of all.outputs.entries()) {
              if (!all.allowed && !out.rebased) continue
              // Every state of an expired key is stale: it starts afresh.
              if (entry.expires <= now) entry.states.clear()
              entry.states.set(bucketId(rules[i] as BucketConfig), out.state)
              entry.expires = Math.max(entry.expires, now + out.ttlMs)
              model.set(key, entry)
            }
          }
        }
        void backend.close()
      }),
      { numRuns: 300 },
    )
  })
})

describe('MemoryBackend keys', () => {
  it('FastLimit (prefix, identity) lookups and direct prefix:{identity} keys reach the same state', async () => {
    const { FastLimit } = await import('./limiter')
    const backend = new MemoryBackend()
    const limiter = new FastLimit({ backend, prefix: 'app:v1' })
    const rule = limiter.rules('2/min').rules[0] as BucketConfig
    await limiter.check('user-{1}', '2/min')
    expect((await backend.peek('app:v1:{user-%7B1%7D}', rule)).remaining).toBe(1)
    await backend.checkAndIncrement('app:v1:{user-%7B1%7D}', rule, 1)
    expect((await limiter.check('user-{1}', '2/min')).allowed).toBe(false)
    await backend.reset('app:v1:{user-%7B1%7D}')
    expect((await limiter.check('user-{1}', '2/min')).remaining).toBe(1)
    // Keys of other shapes never alias a prefixed one.
    await backend.checkAndIncrement('app:v1:{x}}', rule, 2)
    await backend.checkAndIncrement('{x}', rule, 2)
    expect((await limiter.peek('x', '2/min')).remaining).toBe(2)
    expect(backend.size).toBe(3)
  })
})
