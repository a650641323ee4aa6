// Several clocks on one state (app servers with timeSource 'client' on a shared store): with `skewMs` at
// least their spread S, every algorithm admits over any d ms at most its single-clock bound over d + S,
// never moves the state back, keeps remaining, resetMs and retryAfterMs exact on the caller's clock; a
// state further ahead than `skewMs` is a clock that stepped back, moved back to now as before.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { Algorithm, BucketConfig } from '../backend'
import { ALGORITHMS, step } from './index'
import type { State } from './types'

const T0 = 1_700_000_000_000
const METERS = new Set<Algorithm>(['token-bucket', 'leaky-bucket', 'gcra'])
const SKEWED = ALGORITHMS

function bucketArb(algorithm: Algorithm): fc.Arbitrary<BucketConfig> {
  return fc
    .record({
      limit: fc.integer({ min: 1, max: 25 }),
      windowMs: fc.oneof(fc.integer({ min: 1, max: 50 }), fc.integer({ min: 51, max: 5000 })),
      burst: METERS.has(algorithm)
        ? fc.option(fc.integer({ min: 1, max: 40 }), { nil: undefined })
        : fc.constant(undefined),
    })
    .map(({ limit, windowMs, burst }) => ({
      algorithm,
      limit,
      windowMs,
      ...(burst === undefined ? {} : { burst }),
    }))
}

/** A bucket, the clocks' offsets (0 and the spread S among them), and calls: real time step, clock, cost. */
const scenario = (algorithm: Algorithm) =>
  bucketArb(algorithm).chain((bucket) => {
    const W = bucket.windowMs
    const spread = fc.oneof(
      fc.constant(0),
      fc.integer({ min: 1, max: W }),
      fc.integer({ min: W, max: 4 * W }),
    )
    return spread.chain((S) =>
      fc.record({
        bucket: fc.constant(bucket),
        skewMs: fc.constantFrom(S, S + 1 + Math.floor(W / 2)),
        offsets: fc
          .array(fc.integer({ min: 0, max: S }), { minLength: 0, maxLength: 2 })
          .map((more) => [0, S, ...more]),
        calls: fc.array(
          fc.tuple(
            fc.oneof(
              fc.constant(0),
              fc.integer({ min: 0, max: Math.max(1, Math.floor(W / 4)) }),
              fc.integer({ min: 0, max: 2 * W }),
            ),
            fc.nat(),
            fc.integer({ min: 1, max: (bucket.burst ?? bucket.limit) + 2 }),
          ),
          { minLength: 1, maxLength: 120 },
        ),
      }),
    )
  })

/** The single-clock bound of `bucket` over `span` ms, in cost. */
function bound(bucket: BucketConfig, span: number): number {
  const L = bucket.limit
  const W = bucket.windowMs
  if (METERS.has(bucket.algorithm)) return (bucket.burst ?? L) + (L * span) / W
  // Every window (t - W, t] of the log holds at most L: admissions spanning `span` ms meet floor(span / W) + 1.
  if (bucket.algorithm === 'sliding-log') return L * (Math.floor(span / W) + 1)
  return L * (Math.ceil(span / W) + 1)
}

describe.each(SKEWED)('%s with clocks up to skewMs apart', (algorithm) => {
  it('admits at most the single-clock bound over d + S, never rebases, and stays exact on each clock', () => {
    fc.assert(
      fc.property(scenario(algorithm), ({ bucket, skewMs, offsets, calls }) => {
        const S = Math.max(...offsets) - Math.min(...offsets)
        let state: State | undefined
        let real = T0
        const admitted: Array<[number, number]> = []
        const capacity = bucket.burst ?? bucket.limit
        for (const [dt, which, cost] of calls) {
          real += dt
          const now = real + (offsets[which % offsets.length] as number)
          const out = step(state, now, bucket, cost, skewMs)
          const res = out.result
          expect(out.rebased).toBe(false)
          expect(res.remaining).toBeGreaterThanOrEqual(0)
          expect(res.remaining).toBeLessThanOrEqual(capacity)
          expect(res.resetMs).toBeGreaterThanOrEqual(now)
          if (res.allowed) {
            admitted.push([real, cost])
            state = out.state
          } else if (cost <= capacity) {
            // On this clock, with nothing written meanwhile: never early, never late.
            expect(res.retryAfterMs).toBeGreaterThan(0)
            expect(step(state, now + res.retryAfterMs, bucket, cost, skewMs).result.allowed).toBe(true)
            expect(step(state, now + res.retryAfterMs - 1, bucket, cost, skewMs).result.allowed).toBe(false)
          }
          if (res.remaining > 0)
            expect(step(state, now, bucket, res.remaining, skewMs).result.allowed).toBe(true)
          expect(step(state, now, bucket, res.remaining + 1, skewMs).result.allowed).toBe(false)
          expect(step(state, res.resetMs, bucket, 0, skewMs).result.remaining).toBe(capacity)
        }
        for (let j = 0; j < admitted.length; j++) {
          let sum = 0
          for (let i = j; i >= 0; i--) {
            const [ri, ci] = admitted[i] as [number, number]
            sum += ci
            const span = (admitted[j] as [number, number])[0] - ri + S
            expect(sum, `${sum} admitted over ${span - S} ms with clocks ${S} ms apart`).toBeLessThanOrEqual(
              bound(bucket, span),
            )
          }
        }
      }),
      { numRuns: 300 },
    )
  })

  it('keeps a state written by a clock ahead by up to skewMs, and moves back one further ahead', () => {
    const bucket: BucketConfig = { algorithm, limit: 3, windowMs: 1000 }
    const T = T0 + 500
    let state: State | undefined
    for (let i = 0; i < 3; i++) state = step(state, T, bucket, 1, 60_000).state
    // 40 s behind, within 60 s: kept, denied, and the wait is the ahead clock's plus the 40 s.
    const behind = step(state, T - 40_000, bucket, 1, 60_000)
    expect(behind.rebased).toBe(false)
    expect(behind.result.allowed).toBe(false)
    expect(behind.result.retryAfterMs).toBeGreaterThan(40_000)
    expect(behind.result.retryAfterMs).toBeLessThanOrEqual(42_000)
    // 2 minutes behind, beyond 60 s: this clock stepped back, and the state moves back to it.
    const back = step(state, T - 120_000, bucket, 1, 60_000)
    expect(back.rebased).toBe(true)
    expect(back.result.retryAfterMs).toBeLessThanOrEqual(2000)
    expect(step(back.state, T - 120_000 + back.result.retryAfterMs, bucket, 1, 60_000).result.allowed).toBe(
      true,
    )
  })
})

describe('the three meters', () => {
  it('make identical decisions whatever the clocks and skewMs, backwards included', () => {
    fc.assert(
      fc.property(
        scenario('gcra'),
        fc.array(fc.integer({ min: -20_000, max: 20_000 }), { minLength: 1, maxLength: 120 }),
        ({ bucket, skewMs, calls }, jumps) => {
          const run = (algorithm: Algorithm) => {
            const b = { ...bucket, algorithm }
            let state: State | undefined
            let now = T0
            return calls.map(([, , cost], i) => {
              now += jumps[i % jumps.length] as number
              const out = step(state, now, b, cost, skewMs)
              if ((out.result.allowed && cost > 0) || out.rebased) state = out.state
              return [out.result, out.rebased]
            })
          }
          const g = run('gcra')
          expect(run('token-bucket')).toEqual(g)
          expect(run('leaky-bucket')).toEqual(g)
        },
      ),
      { numRuns: 300 },
    )
  })
})
