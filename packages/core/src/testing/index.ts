// @fastlimit/core/testing: the conformance suite every backend runs, ours and users'.

import {
  ALGORITHMS,
  type Algorithm,
  adjustAll,
  type Backend,
  type BackendResult,
  type BucketConfig,
  bucketId,
  type Charge,
  type State,
  step,
  stepAll,
} from '@fastlimit/core'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { leaseCases } from './leases'

export {
  type AdapterAppOptions,
  type AdapterClient,
  type AdapterConformanceOptions,
  adapterConformance,
  adaptOptions,
  type SuiteRequest,
  type SuiteResponse,
} from './adapter'
export {
  type ConcurrencyConformanceOptions,
  concurrencyConformance,
  type ListeningApp,
} from './concurrency-adapter'
export { type LeaseCrowdOptions, type LeaseCrowdResult, leaseCases, leaseCrowd } from './leases'
export { type ReservationPropertyOptions, reservationProperties } from './reservations'

/** A settable clock for tests. */
export interface FakeClock {
  /** The current time in epoch milliseconds; pass `clock.now` as a backend's clock. */
  readonly now: () => number
  /** Sets the time. */
  set(ms: number): void
  /** Moves time forward (or back, with a negative value). */
  advance(ms: number): void
}

/** Creates a {@link FakeClock} starting at `start` (epoch ms). */
export function fakeClock(start = 1_700_000_000_000): FakeClock {
  let t = start
  return {
    now: () => t,
    set: (ms) => {
      t = ms
    },
    advance: (ms) => {
      t += ms
    },
  }
}

/** Options of {@link backendConformance}. */
export interface ConformanceOptions<B extends Backend = Backend> {
  /** The suite's name in the test report, e.g. `'RedisBackend (cluster)'`. */
  name: string
  /**
   * Builds the backend under test. It must read time only from `clock` (so the suite controls
   * time) and must start empty or be emptied by `clear()`. Called once; `clear()` runs before each test.
   */
  make: (clock: () => number) => B | Promise<B>
  /**
   * Closes the backend (and whatever the test opened for it) after the suite.
   * @default backend.close()
   */
  destroy?: (backend: B) => Promise<void>
  /** The algorithms to check. @default every algorithm */
  algorithms?: readonly Algorithm[]
  /** Calls made at once by the atomicity test. @default 1000 */
  concurrency?: number
  /** Random operations per algorithm in the differential test. @default 300 */
  operations?: number
  /**
   * Enables the expiry test: how many keys the backend holds now. The suite checks that keys exist
   * while live and that none remain once every window has passed.
   */
  countKeys?: (backend: B) => Promise<number>
  /**
   * Makes the backend drop expired state now (a sweep), before `countKeys` is read after expiry.
   * @default nothing
   */
  sweep?: (backend: B) => Promise<void>
  /**
   * Set when expiry follows real time rather than the injected clock (Redis `PEXPIRE`): the expiry
   * test then also waits this many real milliseconds after the windows have passed. Such a backend
   * must keep state somewhat longer than its `ttlMs` (a margin), because the suite's fake clock stands
   * still while real time runs between calls: state that expires by real time too early reads as lost.
   * @default 0
   */
  expiryWaitMs?: number
  /** Per-test timeout in ms. @default 30000 */
  timeoutMs?: number
  /**
   * Checks that a call whose `options.deadline` has already passed is refused with
   * `ERR_FASTLIMIT_TIMEOUT` and charges nothing. Enable it for a backend whose calls can be delayed
   * (a network round trip, a lock wait), which must honour the deadline.
   * @default false
   */
  deadlines?: boolean
}

/** The optional methods of {@link Backend} the suite's cases may need. */
type Optional = 'checkAndIncrementAll' | 'peek' | 'reset' | 'clear' | 'adjust'

/** A result without `atMs` (which the steps leave out and backends with `adjust` add). */
export function withoutAtMs(r: BackendResult): BackendResult {
  return {
    allowed: r.allowed,
    limit: r.limit,
    remaining: r.remaining,
    resetMs: r.resetMs,
    retryAfterMs: r.retryAfterMs,
  }
}

/** A reference model of the protocol: the core `step` applied to a plain Map. Backends must agree with it. */
export class ReferenceModel {
  readonly #states = new Map<string, { state: State; expiresAt: number }>()

  #read(key: string, bucket: BucketConfig, now: number): State | undefined {
    const s = this.#states.get(`${key}\u0000${bucketId(bucket)}`)
    return s !== undefined && s.expiresAt > now ? s.state : undefined
  }

  check(key: string, bucket: BucketConfig, cost: number, now: number): BackendResult {
    return this.checkAll(key, [bucket], cost, now)[0] as BackendResult
  }

  checkAll(key: string, buckets: readonly BucketConfig[], cost: number, now: number): BackendResult[] {
    const all = stepAll(
      buckets.map((b) => this.#read(key, b, now)),
      now,
      buckets,
      cost,
    )
    all.outputs.forEach((o, i) => {
      if (!all.allowed && !o.rebased) return
      const id = `${key}\u0000${bucketId(buckets[i] as BucketConfig)}`
      this.#states.set(id, { state: o.state, expiresAt: now + o.ttlMs })
    })
    return all.results
  }

  peek(key: string, bucket: BucketConfig, now: number): BackendResult {
    return step(this.#read(key, bucket, now), now, bucket, 0).result
  }

  adjust(
    key: string,
    buckets: readonly BucketConfig[],
    delta: number,
    charges: readonly Charge[] | undefined,
    now: number,
  ): BackendResult[] {
    const outs = adjustAll(
      buckets.map((b) => this.#read(key, b, now)),
      now,
      buckets,
      delta,
      charges,
    )
    outs.forEach((o, i) => {
      if (!o.changed && !o.rebased) return
      const id = `${key}\u0000${bucketId(buckets[i] as BucketConfig)}`
      this.#states.set(id, { state: o.state, expiresAt: now + o.ttlMs })
    })
    return outs.map((o) => o.result)
  }

  reset(key: string): void {
    for (const id of [...this.#states.keys()]) if (id.startsWith(`${key}\u0000`)) this.#states.delete(id)
  }
}

/** A small deterministic PRNG (mulberry32), so a failing sequence can be replayed from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const BUCKET_ALGORITHMS = new Set<Algorithm>(['token-bucket', 'leaky-bucket', 'gcra'])

/** The bucket shapes the suite checks each algorithm with. */
function shapes(algorithm: Algorithm): BucketConfig[] {
  const list: BucketConfig[] = [
    { algorithm, limit: 5, windowMs: 1000 },
    { algorithm, limit: 7, windowMs: 1000 }, // 1000/7 ms per unit: fractions must stay exact
  ]
  if (BUCKET_ALGORITHMS.has(algorithm)) list.push({ algorithm, limit: 3, windowMs: 900, burst: 8 })
  return list
}

function checkInvariants(r: BackendResult, now: number, charged: boolean): void {
  expect(Number.isInteger(r.limit) && r.limit >= 1).toBe(true)
  expect(Number.isInteger(r.remaining)).toBe(true)
  expect(r.remaining).toBeGreaterThanOrEqual(0)
  expect(r.remaining).toBeLessThanOrEqual(r.limit)
  expect(Number.isInteger(r.resetMs)).toBe(true)
  expect(r.resetMs).toBeGreaterThanOrEqual(now)
  if (charged && r.allowed) expect(r.retryAfterMs).toBe(0)
  if (!r.allowed) {
    expect(
      r.retryAfterMs === Number.POSITIVE_INFINITY || (Number.isInteger(r.retryAfterMs) && r.retryAfterMs > 0),
    ).toBe(true)
  }
}

/**
 * Registers the conformance suite for a backend as vitest tests. Every backend, ours and yours,
 * passes the same cases: each algorithm's exact decisions on a fake clock (against a reference model
 * of the core `step`), windows rolling over, cost, cost above the limit, denied and peeked calls
 * consuming nothing, reset, all-or-nothing checks, a clock stepping back, expiry, hostile keys, and
 * atomicity under concurrency.
 *
 * @example
 * ```ts
 * // my-backend.test.ts
 * import { backendConformance } from '@fastlimit/core/testing'
 * backendConformance({ name: 'PostgresBackend', make: (clock) => new PostgresBackend({ pool, clock }) })
 * ```
 */
export function backendConformance<B extends Backend>(options: ConformanceOptions<B>): void {
  const algorithms = options.algorithms ?? ALGORITHMS
  const concurrency = options.concurrency ?? 1000
  const operations = options.operations ?? 300
  const timeout = options.timeoutMs ?? 30_000
  const T0 = 1_700_000_000_123
  const clock = fakeClock(T0)
  let backend: B
  // Without clear(), every test works on keys of its own (`t<n>:...`) instead of an emptied store.
  let run = 0
  const k = (key: string): string => (typeof backend.clear === 'function' ? key : `t${run}:${key}`)
  const has = (method: Optional): boolean => typeof backend[method] === 'function'
  /** Skips the case when the backend lacks a method it needs: the suite runs what is implemented. */
  const needs = (skip: (note?: string) => void, ...methods: Optional[]): void => {
    const absent = methods.filter((m) => !has(m))
    if (absent.length > 0) skip(`the backend has no ${absent.join(', ')}`)
  }
  // The optional methods, called once the case has checked that they exist.
  const chargeAll = (key: string, buckets: readonly BucketConfig[], cost: number) =>
    (backend.checkAndIncrementAll as NonNullable<Backend['checkAndIncrementAll']>).call(
      backend,
      k(key),
      buckets,
      cost,
    )
  const peekAt = (key: string, bucket: BucketConfig) =>
    (backend.peek as NonNullable<Backend['peek']>).call(backend, k(key), bucket)
  const resetAt = (key: string) => (backend.reset as NonNullable<Backend['reset']>).call(backend, k(key))
  const charge = (key: string, bucket: BucketConfig, cost: number) =>
    backend.checkAndIncrement(k(key), bucket, cost)
  const adjustAt = (
    key: string,
    buckets: readonly BucketConfig[],
    delta: number,
    charges: readonly Charge[] | undefined,
  ) => (backend.adjust as NonNullable<Backend['adjust']>).call(backend, k(key), buckets, delta, charges)
  /** What a reservation keeps of an admitting result. */
  const chargeFrom = (r: BackendResult, cost: number): Charge =>
    r.atMs === undefined ? { cost, resetMs: r.resetMs } : { cost, resetMs: r.resetMs, atMs: r.atMs }

  describe(`backend conformance: ${options.name}`, () => {
    beforeAll(async () => {
      backend = await options.make(clock.now)
    }, timeout * 2)
    afterAll(async () => {
      if (backend === undefined) return
      if (options.destroy) await options.destroy(backend)
      else await backend.close?.()
    }, timeout)
    beforeEach(async () => {
      clock.set(T0)
      run++
      await backend.clear?.()
    }, timeout)

    for (const algorithm of algorithms) {
      describe(algorithm, () => {
        it(
          'admits exactly the limit, then denies with an exact retry-after, then admits again',
          async () => {
            const bucket: BucketConfig = { algorithm, limit: 3, windowMs: 1000 }
            const seen: BackendResult[] = []
            for (let i = 0; i < 4; i++) seen.push(await charge('seq', bucket, 1))
            expect(seen.map((r) => r.allowed)).toEqual([true, true, true, false])
            expect(seen.map((r) => r.remaining)).toEqual([2, 1, 0, 0])
            for (const r of seen) {
              expect(r.limit).toBe(3)
              checkInvariants(r, T0, true)
            }
            const denied = seen[3] as BackendResult
            clock.advance(denied.retryAfterMs - 1)
            expect((await charge('seq', bucket, 1)).allowed).toBe(false)
            clock.advance(1)
            const again = await charge('seq', bucket, 1)
            expect(again.allowed).toBe(true)
          },
          timeout,
        )

        it(
          'matches the reference step exactly over random sequences of time, cost, peek, reset and adjust',
          async () => {
            const model = new ReferenceModel()
            const charged = new Map<string, { buckets: BucketConfig[]; charges: Charge[] }>()
            for (const [n, bucket] of shapes(algorithm).entries()) {
              const random = prng(0x5eed + n * 7919 + algorithm.length)
              const pair: BucketConfig[] = [bucket, { algorithm: 'fixed-window', limit: 9, windowMs: 2000 }]
              for (let i = 0; i < operations; i++) {
                const roll = random()
                if (roll < 0.3) clock.advance(Math.floor(random() ** 3 * bucket.windowMs * 1.5))
                const key = `diff:${Math.floor(random() * 3)}`
                const now = clock.now()
                const op = random()
                let expected: unknown
                let actual: unknown
                if (has('adjust') && op >= 0.5 && op < 0.6) {
                  // A refund or extra charge, of the last admitting charge on the key or of none.
                  const last = charged.get(key)
                  const delta = random() < 0.75 ? -1 - Math.floor(random() * 4) : 1 + Math.floor(random() * 3)
                  const use = last !== undefined && random() < 0.7 ? last : undefined
                  const buckets = use?.buckets ?? [bucket]
                  expected = model.adjust(key, buckets, delta, use?.charges, now)
                  actual = await adjustAt(key, buckets, delta, use?.charges)
                  for (const r of actual as BackendResult[]) checkInvariants(r, now, false)
                } else if (
                  op < 0.6 ||
                  (op < 0.8 && !has('checkAndIncrementAll')) ||
                  (op >= 0.8 && op < 0.97 && !has('peek'))
                ) {
                  const cost =
                    random() < 0.85 ? 1 : 1 + Math.floor(random() * ((bucket.burst ?? bucket.limit) + 2))
                  expected = model.check(key, bucket, cost, now)
                  const r = await charge(key, bucket, cost)
                  checkInvariants(r, now, true)
                  if (has('adjust') && r.allowed) {
                    expect(r.atMs, 'an admitting result of a backend with adjust carries atMs').toBe(now)
                    charged.set(key, { buckets: [bucket], charges: [chargeFrom(r, cost)] })
                  }
                  actual = withoutAtMs(r)
                } else if (op < 0.8) {
                  const cost = 1 + Math.floor(random() * 2)
                  expected = model.checkAll(key, pair, cost, now)
                  const rs = await chargeAll(key, pair, cost)
                  if (has('adjust') && rs.every((r) => r.allowed)) {
                    for (const r of rs) expect(r.atMs).toBe(now)
                    charged.set(key, { buckets: pair, charges: rs.map((r) => chargeFrom(r, cost)) })
                  }
                  actual = rs.map(withoutAtMs)
                } else if (op < 0.97) {
                  expected = model.peek(key, bucket, now)
                  actual = await peekAt(key, bucket)
                  checkInvariants(actual as BackendResult, now, false)
                } else {
                  if (!has('reset')) continue
                  model.reset(key)
                  await resetAt(key)
                  continue
                }
                expect(
                  actual,
                  `operation ${i} of ${JSON.stringify(bucket)} at +${now - T0} ms on ${key}`,
                ).toEqual(expected)
              }
            }
          },
          timeout,
        )

        it(
          'rolls over: after the bucket is full again, the whole limit is admitted',
          async (ctx) => {
            needs(ctx.skip, 'peek')
            const bucket: BucketConfig = { algorithm, limit: 4, windowMs: 500 }
            for (let i = 0; i < 4; i++) expect((await charge('roll', bucket, 1)).allowed).toBe(true)
            const denied = await charge('roll', bucket, 1)
            expect(denied.allowed).toBe(false)
            clock.set(denied.resetMs + 2 * bucket.windowMs)
            const fresh = await peekAt('roll', bucket)
            expect(fresh.remaining).toBe(4)
            for (let i = 0; i < 4; i++) expect((await charge('roll', bucket, 1)).allowed).toBe(true)
            expect((await charge('roll', bucket, 1)).allowed).toBe(false)
          },
          timeout,
        )

        it(
          'charges the cost; a cost above the capacity is denied with retryAfterMs Infinity and charges nothing',
          async () => {
            const bucket: BucketConfig = { algorithm, limit: 10, windowMs: 1000 }
            const a = await charge('cost', bucket, 4)
            expect(a).toMatchObject({ allowed: true, remaining: 6, retryAfterMs: 0 })
            const b = await charge('cost', bucket, 7)
            expect(b).toMatchObject({ allowed: false, remaining: 6 })
            expect(b.retryAfterMs).toBeGreaterThan(0)
            expect(Number.isFinite(b.retryAfterMs)).toBe(true)
            const never = await charge('cost', bucket, 11)
            expect(never).toMatchObject({
              allowed: false,
              remaining: 6,
              retryAfterMs: Number.POSITIVE_INFINITY,
            })
            const c = await charge('cost', bucket, 6)
            expect(c).toMatchObject({ allowed: true, remaining: 0 })
          },
          timeout,
        )

        it(
          'a denied call consumes nothing',
          async () => {
            const bucket: BucketConfig = { algorithm, limit: 2, windowMs: 1000 }
            await charge('deny:a', bucket, 2)
            await charge('deny:b', bucket, 2)
            for (let i = 0; i < 50; i++) await charge('deny:a', bucket, 1)
            clock.advance(400)
            for (let i = 0; i < 50; i++) await charge('deny:a', bucket, 1)
            clock.advance(1700)
            // 'a' was hammered while denied, 'b' was left alone: they must stand exactly alike.
            if (has('peek')) expect(await peekAt('deny:a', bucket)).toEqual(await peekAt('deny:b', bucket))
            expect(await charge('deny:a', bucket, 1)).toEqual(await charge('deny:b', bucket, 1))
          },
          timeout,
        )

        it(
          'peek reads without charging',
          async (ctx) => {
            needs(ctx.skip, 'peek')
            const bucket: BucketConfig = { algorithm, limit: 3, windowMs: 1000 }
            const empty = await peekAt('peek', bucket)
            expect(empty).toMatchObject({
              allowed: true,
              limit: 3,
              remaining: 3,
              retryAfterMs: 0,
              resetMs: T0,
            })
            for (let i = 0; i < 10; i++) await peekAt('peek', bucket)
            await charge('peek', bucket, 3)
            const full = await peekAt('peek', bucket)
            expect(full.allowed).toBe(false)
            expect(full.remaining).toBe(0)
            expect(full.retryAfterMs).toBeGreaterThan(0)
            const check = await charge('peek', bucket, 1)
            expect(check.retryAfterMs).toBe(full.retryAfterMs)
          },
          timeout,
        )

        it(
          'reset forgets every bucket of the key, and only that key',
          async (ctx) => {
            needs(ctx.skip, 'checkAndIncrementAll', 'peek', 'reset')
            const a: BucketConfig = { algorithm, limit: 2, windowMs: 60_000 }
            const b: BucketConfig = { algorithm, limit: 3, windowMs: 60_000 }
            await chargeAll('reset:1', [a, b], 2)
            await charge('reset:2', a, 2)
            await resetAt('reset:1')
            expect((await peekAt('reset:1', a)).remaining).toBe(2)
            expect((await peekAt('reset:1', b)).remaining).toBe(3)
            expect((await peekAt('reset:2', a)).remaining).toBe(0)
            await resetAt('reset:never-seen')
          },
          timeout,
        )

        it(
          'checkAndIncrementAll is all-or-nothing',
          async (ctx) => {
            needs(ctx.skip, 'checkAndIncrementAll', 'peek')
            const small: BucketConfig = { algorithm, limit: 2, windowMs: 1000 }
            const large: BucketConfig = { algorithm, limit: 10, windowMs: 60_000 }
            const first = await chargeAll('all', [large, small], 2)
            expect(first.map((r) => [r.allowed, r.remaining])).toEqual([
              [true, 8],
              [true, 0],
            ])
            const denied = await chargeAll('all', [large, small], 1)
            expect(denied.map((r) => [r.allowed, r.remaining])).toEqual([
              [true, 8],
              [false, 0],
            ])
            expect((await peekAt('all', large)).remaining).toBe(8)
            const results = await chargeAll('all', [small, large], 1)
            expect(results).toHaveLength(2)
            expect(results[0]?.allowed).toBe(false)
            expect((await peekAt('all', large)).remaining).toBe(8)
          },
          timeout,
        )

        it(
          'adjust: a cancel in the same millisecond restores the bucket exactly, a lower settle equals the lower charge',
          async (ctx) => {
            needs(ctx.skip, 'adjust', 'peek')
            const bucket: BucketConfig = { algorithm, limit: 7, windowMs: 1000 }
            await charge('adj:a', bucket, 2)
            await charge('adj:b', bucket, 2)
            const before = await peekAt('adj:a', bucket)
            const r = await charge('adj:a', bucket, 5)
            expect(r.allowed).toBe(true)
            const back = await adjustAt('adj:a', [bucket], -5, [chargeFrom(r, 5)])
            expect(back.map(withoutAtMs)).toEqual([withoutAtMs(before)])
            expect(await peekAt('adj:a', bucket)).toEqual(before)
            clock.advance(30)
            const six = await charge('adj:a', bucket, 5)
            await charge('adj:b', bucket, 2)
            await adjustAt('adj:a', [bucket], -3, [chargeFrom(six, 5)])
            expect(await peekAt('adj:a', bucket)).toEqual(await peekAt('adj:b', bucket))
            clock.advance(450)
            expect(await peekAt('adj:a', bucket)).toEqual(await peekAt('adj:b', bucket))
          },
          timeout,
        )

        it(
          'adjust: a refund never lifts a bucket above its capacity nor gives back a charge that has passed; an extra charge saturates',
          async (ctx) => {
            needs(ctx.skip, 'adjust', 'peek')
            const bucket: BucketConfig = { algorithm, limit: 5, windowMs: 1000 }
            const none = await adjustAt('adj:empty', [bucket], -3, undefined)
            expect(none[0]).toMatchObject({ allowed: true, remaining: 5 })
            const r = await charge('adj:cap', bucket, 2)
            await adjustAt('adj:cap', [bucket], -2, [chargeFrom(r, 2)])
            await adjustAt('adj:cap', [bucket], -9, undefined)
            expect((await peekAt('adj:cap', bucket)).remaining).toBe(5)
            // A charge two windows old (drained, or in a window that has passed) gives nothing back.
            const old = await charge('adj:old', bucket, 4)
            clock.advance(2500)
            await charge('adj:old', bucket, 3)
            const late = await adjustAt('adj:old', [bucket], -4, [chargeFrom(old, 4)])
            expect(late[0]?.remaining).toBe(2)
            // An extra charge is never denied, and fills the bucket at most.
            const more = await adjustAt('adj:old', [bucket], 50, undefined)
            expect(more[0]).toMatchObject({ allowed: false, remaining: 0 })
            expect(Number.isFinite(more[0]?.retryAfterMs)).toBe(true)
            const full = await charge('adj:full', bucket, 5)
            expect(more[0]?.retryAfterMs).toBe((await peekAt('adj:full', bucket)).retryAfterMs)
            expect(full.allowed).toBe(true)
          },
          timeout,
        )

        it(
          `adjust: ${concurrency} concurrent charges and settles keep the totals exact`,
          async (ctx) => {
            needs(ctx.skip, 'adjust', 'peek', 'checkAndIncrementAll')
            const big: BucketConfig = { algorithm, limit: concurrency * 10, windowMs: 3_600_000 }
            const pair: BucketConfig[] = [big, { algorithm, limit: concurrency * 20, windowMs: 7_200_000 }]
            let kept = 0
            await Promise.all(
              Array.from({ length: concurrency }, async (_, i) => {
                const rs = await chargeAll('adj:atomic', pair, 5)
                expect(rs.every((r) => r.allowed)).toBe(true)
                const actual = i % 7 // 0 to 6: refunds, an equal settle, extra charges
                kept += actual
                if (actual !== 5)
                  await adjustAt(
                    'adj:atomic',
                    pair,
                    actual - 5,
                    rs.map((r) => chargeFrom(r, 5)),
                  )
              }),
            )
            expect((await peekAt('adj:atomic', big)).remaining).toBe(concurrency * 10 - kept)
            expect((await peekAt('adj:atomic', pair[1] as BucketConfig)).remaining).toBe(
              concurrency * 20 - kept,
            )
          },
          timeout,
        )

        it(
          'after the clock steps back a day, a full key admits again once retryAfterMs has passed',
          async () => {
            const bucket: BucketConfig = { algorithm, limit: 3, windowMs: 1000 }
            for (let i = 0; i < 3; i++) await charge('stepback', bucket, 1)
            clock.advance(-86_400_000)
            let retries = 0
            for (; retries < 5; retries++) {
              const r = await charge('stepback', bucket, 1)
              if (r.allowed) break
              expect(r.retryAfterMs).toBeGreaterThan(0)
              expect(r.retryAfterMs).toBeLessThanOrEqual(2000)
              clock.advance(r.retryAfterMs)
            }
            // The first denial moves the state back to now (write it when the step says rebased).
            expect(retries).toBeLessThanOrEqual(2)
          },
          timeout,
        )

        it(
          `admits exactly the limit under ${concurrency} concurrent calls`,
          async () => {
            const limit = Math.max(1, Math.floor(concurrency / 10))
            const bucket: BucketConfig = { algorithm, limit, windowMs: 60_000 }
            const calls = Array.from({ length: concurrency }, () => charge('atomic', bucket, 1))
            const results = await Promise.all(calls)
            expect(results.filter((r) => r.allowed)).toHaveLength(limit)
            const remaining = results.filter((r) => r.allowed).map((r) => r.remaining)
            expect(new Set(remaining).size).toBe(limit)
            if (!has('checkAndIncrementAll') || !has('peek')) return
            const pair: BucketConfig[] = [bucket, { algorithm, limit: limit + 5, windowMs: 60_000 }]
            const all = await Promise.all(
              Array.from({ length: concurrency }, () => chargeAll('atomic-all', pair, 1)),
            )
            expect(all.filter((r) => r.every((x) => x.allowed))).toHaveLength(limit)
            expect((await peekAt('atomic-all', pair[1] as BucketConfig)).remaining).toBe(5)
          },
          timeout,
        )
      })
    }

    leaseCases({
      backend: () => backend,
      clock,
      k,
      timeout,
      concurrency,
      deadlines: options.deadlines === true,
    })

    if (options.deadlines) {
      it(
        'refuses a call whose deadline has passed, and charges nothing',
        async () => {
          const bucket: BucketConfig = { algorithm: algorithms[0] as Algorithm, limit: 2, windowMs: 60_000 }
          const late = { deadline: Date.now() - 1 }
          await expect(backend.checkAndIncrement(k('late'), bucket, 1, late)).rejects.toMatchObject({
            code: 'ERR_FASTLIMIT_TIMEOUT',
          })
          if (has('checkAndIncrementAll')) {
            const pair = [bucket, { algorithm: 'fixed-window' as const, limit: 3, windowMs: 1000 }]
            const callAll = backend.checkAndIncrementAll as NonNullable<Backend['checkAndIncrementAll']>
            await expect(callAll.call(backend, k('late'), pair, 1, late)).rejects.toMatchObject({
              code: 'ERR_FASTLIMIT_TIMEOUT',
            })
          }
          if (has('adjust')) {
            const adjust = backend.adjust as NonNullable<Backend['adjust']>
            await expect(adjust.call(backend, k('late'), [bucket], 1, undefined, late)).rejects.toMatchObject(
              {
                code: 'ERR_FASTLIMIT_TIMEOUT',
              },
            )
          }
          const onTime = { deadline: Date.now() + 60_000 }
          expect(await backend.checkAndIncrement(k('late'), bucket, 1, onTime)).toMatchObject({
            allowed: true,
            remaining: 1,
          })
        },
        timeout,
      )
    }

    it(
      'keeps hostile and unicode keys apart',
      async () => {
        const bucket: BucketConfig = { algorithm: algorithms[0] as Algorithm, limit: 1, windowMs: 60_000 }
        const keys = [
          'plain',
          '{braces}',
          'a{b}c',
          '}{',
          'line\nbreak',
          'nul\u0000byte',
          'tab\tcr\r',
          '__proto__',
          'constructor',
          'hasOwnProperty',
          '',
          ' ',
          'ünïcødé-日本語-🚦',
          '\ud800',
          '\udc00',
          '%7B',
          'x'.repeat(10_000),
          'x'.repeat(10_001),
          'key:with:colons',
          '*',
          '?',
          '[a-z]',
        ]
        for (const key of keys) {
          const r = await charge(key, bucket, 1)
          expect(r.allowed, `first call on ${JSON.stringify(key.slice(0, 20))}`).toBe(true)
        }
        for (const key of keys) {
          const r = await charge(key, bucket, 1)
          expect(r.allowed, `second call on ${JSON.stringify(key.slice(0, 20))}`).toBe(false)
        }
        if (!has('reset') || !has('peek')) return
        await resetAt('{braces}')
        expect((await peekAt('{braces}', bucket)).remaining).toBe(1)
        expect((await peekAt('a{b}c', bucket)).remaining).toBe(0)
      },
      timeout,
    )

    it(
      'clear forgets everything',
      async (ctx) => {
        needs(ctx.skip, 'clear', 'peek')
        const bucket: BucketConfig = { algorithm: algorithms[0] as Algorithm, limit: 1, windowMs: 60_000 }
        await charge('c1', bucket, 1)
        await charge('c2', bucket, 1)
        await backend.clear?.()
        expect((await peekAt('c1', bucket)).remaining).toBe(1)
        expect((await peekAt('c2', bucket)).remaining).toBe(1)
      },
      timeout,
    )

    if (options.countKeys) {
      const countKeys = options.countKeys
      it(
        'expires state once every window has passed',
        async () => {
          for (const algorithm of algorithms) {
            const bucket: BucketConfig = { algorithm, limit: 3, windowMs: 200 }
            await charge(`ttl:${algorithm}`, bucket, 2)
            if (has('checkAndIncrementAll'))
              await chargeAll(`ttl-all:${algorithm}`, [bucket, { algorithm, limit: 5, windowMs: 300 }], 1)
          }
          const live = await countKeys(backend)
          expect(live).toBeGreaterThanOrEqual(algorithms.length)
          if (options.sweep) await options.sweep(backend)
          expect(await countKeys(backend)).toBe(live)
          clock.advance(10_000)
          if (options.expiryWaitMs) await new Promise((r) => setTimeout(r, options.expiryWaitMs))
          if (options.sweep) await options.sweep(backend)
          expect(await countKeys(backend)).toBe(0)
        },
        timeout,
      )
    }
  })
}
