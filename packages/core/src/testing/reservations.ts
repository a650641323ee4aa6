// Reservation properties: random reserve / settle / cancel / refund / concurrent-check sequences through
// FastLimit on any backend with adjust, against the reference model of the core steps.
import {
  ALGORITHMS,
  type Algorithm,
  type Backend,
  type BackendResult,
  type BucketConfig,
  type Charge,
  FastLimit,
  type Reservation,
  type RuleObject,
} from '@fastlimit/core'
import type { Arbitrary } from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fakeClock, ReferenceModel } from './index'

/** Options of {@link reservationProperties}. */
export interface ReservationPropertyOptions<B extends Backend = Backend> {
  /** The suite's name in the test report. */
  name: string
  /** Builds the backend under test, reading time only from `clock`. Called once. */
  make: (clock: () => number) => B | Promise<B>
  /** Closes the backend after the suite. @default backend.close() */
  destroy?: (backend: B) => Promise<void>
  /** The algorithms to check. @default every algorithm */
  algorithms?: readonly Algorithm[]
  /** Random sequences per algorithm (each up to 30 operations on a key of its own). @default 200 */
  runs?: number
  /** Reservations made and settled at once by the concurrency test. @default 1000 */
  concurrency?: number
  /** Per-test timeout in ms. @default 120000 */
  timeoutMs?: number
}

type Op =
  | { kind: 'time'; ms: number }
  | { kind: 'reserve'; cost: number }
  | { kind: 'settle'; pick: number; how: 'lower' | 'equal' | 'higher'; by: number }
  | { kind: 'cancel'; pick: number }
  | { kind: 'refund'; cost: number }
  | { kind: 'concurrent'; calls: number; cost: number }

/** The five figures every result shares, to compare a backend's with the model's. */
const figures = (r: {
  allowed: boolean
  limit: number
  remaining: number | undefined
  resetMs: number | undefined
  retryAfterMs: number
}) => [r.allowed, r.limit, r.remaining, r.resetMs, r.retryAfterMs]

/**
 * Registers fast-check property tests of `FastLimit.reserve`, `settle`, `cancel` and `refund` on a
 * backend that implements `adjust`: for each algorithm, random sequences of reservations, settles
 * (lower, equal and higher than reserved), cancels, refunds without a reservation, time steps and bursts
 * of concurrent checks, on one rule or two at once, must give exactly the decisions and settlements of
 * the reference model (the core steps applied in order): a denied reservation charges nothing, each
 * settle counts once, no bucket goes above its capacity. And `concurrency` reservations made and settled
 * at once keep the totals exact. Needs `fast-check` installed (a dev dependency).
 *
 * @example
 * ```ts
 * reservationProperties({ name: 'MyBackend', make: (clock) => new MyBackend({ clock }), runs: 100 })
 * ```
 */
export function reservationProperties<B extends Backend>(options: ReservationPropertyOptions<B>): void {
  const algorithms = options.algorithms ?? ALGORITHMS
  const runs = options.runs ?? 200
  const concurrency = options.concurrency ?? 1000
  const timeout = options.timeoutMs ?? 120_000
  const clock = fakeClock(1_700_000_000_123)
  let backend: B
  let limiter: FastLimit
  let sequence = 0

  describe(`reservation properties: ${options.name}`, () => {
    beforeAll(async () => {
      backend = await options.make(clock.now)
      // Every failure surfaces (no policy decides in its place), and nothing times out under load.
      limiter = new FastLimit({ backend, onBackendError: 'throw', timeoutMs: 60_000, breaker: false })
    }, timeout)
    afterAll(async () => {
      if (backend === undefined) return
      if (options.destroy) await options.destroy(backend)
      else await backend.close?.()
    }, timeout)

    it(
      `${concurrency} concurrent reserve + settle through FastLimit keep the totals exact`,
      async () => {
        const identity = `prop:concurrent:${sequence++}`
        const rules = { limit: concurrency * 10, windowMs: 3_600_000, algorithm: algorithms[0] } as RuleObject
        let kept = 0
        await Promise.all(
          Array.from({ length: concurrency }, async (_, i) => {
            const r = await limiter.reserve(identity, rules, { cost: 5 })
            expect(r.allowed).toBe(true)
            const actual = i % 8 // refunds, an equal settle, extra charges
            kept += actual
            await r.settle(actual)
          }),
        )
        expect((await limiter.peek(identity, rules)).remaining).toBe(concurrency * 10 - kept)
      },
      timeout,
    )

    for (const algorithm of algorithms) {
      it(
        `${algorithm}: ${runs} random sequences of reserve, settle, cancel, refund and concurrent checks match the model`,
        async () => {
          const fc = (await import('fast-check')).default
          const meter = algorithm === 'gcra' || algorithm === 'token-bucket' || algorithm === 'leaky-bucket'
          const ruleArb = fc
            .record({
              limit: fc.integer({ min: 1, max: 12 }),
              windowMs: fc.integer({ min: 5, max: 2000 }),
              burst: meter
                ? fc.option(fc.integer({ min: 1, max: 15 }), { nil: undefined })
                : fc.constant(undefined),
            })
            .map(
              ({ limit, windowMs, burst }): RuleObject =>
                ({ limit, windowMs, algorithm, ...(burst === undefined ? {} : { burst }) }) as RuleObject,
            )
          const opArb: Arbitrary<Op> = fc.oneof(
            {
              weight: 3,
              arbitrary: fc.integer({ min: 0, max: 3000 }).map((ms) => ({ kind: 'time' as const, ms })),
            },
            {
              weight: 4,
              arbitrary: fc.integer({ min: 1, max: 14 }).map((cost) => ({ kind: 'reserve' as const, cost })),
            },
            {
              weight: 4,
              arbitrary: fc.record({
                kind: fc.constant('settle' as const),
                pick: fc.nat(),
                how: fc.constantFrom('lower' as const, 'equal' as const, 'higher' as const),
                by: fc.integer({ min: 1, max: 6 }),
              }),
            },
            { weight: 1, arbitrary: fc.nat().map((pick) => ({ kind: 'cancel' as const, pick })) },
            {
              weight: 1,
              arbitrary: fc.integer({ min: 1, max: 6 }).map((cost) => ({ kind: 'refund' as const, cost })),
            },
            {
              weight: 1,
              arbitrary: fc
                .record({ calls: fc.integer({ min: 2, max: 6 }), cost: fc.integer({ min: 1, max: 3 }) })
                .map(({ calls, cost }) => ({ kind: 'concurrent' as const, calls, cost })),
            },
          )
          const multi = typeof backend.checkAndIncrementAll === 'function'
          const arb = fc.tuple(
            fc.uniqueArray(ruleArb, {
              minLength: 1,
              maxLength: multi ? 2 : 1,
              selector: (r) => `${r.limit}/${r.windowMs}`,
            }),
            fc.array(opArb, { minLength: 1, maxLength: 30 }),
          )
          await fc.assert(
            fc.asyncProperty(arb, async ([ruleInput, ops]) => {
              const identity = `prop:${algorithm}:${sequence++}`
              const buckets = limiter.rules(ruleInput).rules as readonly BucketConfig[]
              const model = new ReferenceModel()
              const held: Array<{ r: Reservation; charges: Charge[] }> = []
              for (const op of ops) {
                const now = clock.now()
                if (op.kind === 'time') {
                  clock.advance(op.ms)
                } else if (op.kind === 'reserve') {
                  const r = await limiter.reserve(identity, ruleInput, { cost: op.cost })
                  const m = model.checkAll('k', buckets, op.cost, now)
                  expect(r.rules.map(figures)).toEqual(m.map(figures))
                  expect(r.allowed).toBe(m.every((x) => x.allowed))
                  if (r.allowed) {
                    held.push({
                      r,
                      charges: m.map((x) => ({ cost: op.cost, resetMs: x.resetMs, atMs: now })),
                    })
                  } else {
                    // A denied reservation charged nothing, and settles to nothing.
                    expect(await r.settle(0)).toMatchObject({ outcome: 'skipped' })
                  }
                } else if (op.kind === 'settle' || op.kind === 'cancel') {
                  if (held.length === 0) continue
                  const h = held.splice(op.pick % held.length, 1)[0] as (typeof held)[number]
                  const cost = h.r.cost
                  const actual =
                    op.kind === 'cancel'
                      ? 0
                      : op.how === 'equal'
                        ? cost
                        : op.how === 'lower'
                          ? Math.max(0, cost - op.by)
                          : cost + op.by
                  const s = await h.r.settle(actual)
                  expect(s.delta).toBe(actual - cost)
                  if (actual === cost) expect(s.outcome).toBe('unchanged')
                  else {
                    expect(s.outcome).toBe('adjusted')
                    const m = model.adjust('k', buckets, actual - cost, h.charges, now)
                    expect(s.rules.map(figures)).toEqual(m.map(figures))
                  }
                  // Each reservation settles once.
                  await expect(h.r.cancel()).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_ARGUMENT' })
                } else if (op.kind === 'refund') {
                  const s = await limiter.refund(identity, ruleInput, op.cost)
                  const m = model.adjust('k', buckets, -op.cost, undefined, now)
                  expect(s.rules.map(figures)).toEqual(m.map(figures))
                } else {
                  const all = await Promise.all(
                    Array.from({ length: op.calls }, () =>
                      limiter.check(identity, ruleInput, { cost: op.cost }),
                    ),
                  )
                  const m: BackendResult[][] = []
                  for (let i = 0; i < op.calls; i++) m.push(model.checkAll('k', buckets, op.cost, now))
                  // Applied in any order, calls of one cost at one time give the same answers.
                  const sorted = (rows: unknown[][]) => rows.map((x) => JSON.stringify(x)).sort()
                  expect(sorted(all.map((d) => d.rules.map(figures)))).toEqual(
                    sorted(m.map((rs) => rs.map(figures))),
                  )
                }
                for (const b of buckets) {
                  const x = model.peek('k', b, clock.now())
                  expect(x.remaining).toBeGreaterThanOrEqual(0)
                  expect(x.remaining).toBeLessThanOrEqual(x.limit)
                }
              }
            }),
            { numRuns: runs },
          )
        },
        timeout,
      )
    }
  })
}
