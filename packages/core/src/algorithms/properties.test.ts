// Property tests: for random buckets and random (time, cost) sequences, every algorithm keeps its
// documented bound, and remaining, resetMs and retryAfterMs are exact (never early, never late).
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { Algorithm, BucketConfig } from '../backend'
import { ALGORITHMS, step } from './index'
import type { State } from './types'

const T0 = 1_700_000_000_000
const METERS = new Set<Algorithm>(['token-bucket', 'leaky-bucket', 'gcra'])

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

const callsArb = (b: BucketConfig) =>
  fc.array(
    fc.tuple(
      fc.oneof(
        fc.constant(0),
        fc.integer({ min: 0, max: Math.max(1, Math.floor(b.windowMs / 4)) }),
        fc.integer({ min: 0, max: 2 * b.windowMs }),
      ),
      fc.integer({ min: 1, max: (b.burst ?? b.limit) + 2 }),
    ),
    { minLength: 1, maxLength: 120 },
  )

const scenario = (algorithm: Algorithm) =>
  bucketArb(algorithm).chain((bucket) =>
    fc.tuple(fc.constant(bucket), callsArb(bucket), fc.integer({ min: 0, max: 10_000 })),
  )

/** Checks the admitted calls against the algorithm's documented bound. */
function checkBound(b: BucketConfig, admitted: Array<[number, number]>): void {
  const L = b.limit
  const W = b.windowMs
  if (b.algorithm === 'fixed-window' || b.algorithm === 'sliding-window') {
    const perWindow = new Map<number, number>()
    for (const [t, c] of admitted) perWindow.set(t - (t % W), (perWindow.get(t - (t % W)) ?? 0) + c)
    for (const sum of perWindow.values()) expect(sum).toBeLessThanOrEqual(L)
  }
  for (let j = 0; j < admitted.length; j++) {
    const tj = (admitted[j] as [number, number])[0]
    let inWindow = 0
    let sinceI = 0
    for (let i = j; i >= 0; i--) {
      const [ti, ci] = admitted[i] as [number, number]
      sinceI += ci
      if (ti > tj - W) inWindow += ci
      if (METERS.has(b.algorithm)) {
        // burst + limit * d / windowMs, in integers.
        expect(sinceI * W).toBeLessThanOrEqual((b.burst ?? L) * W + L * (tj - ti))
      }
    }
    if (b.algorithm === 'sliding-log') expect(inWindow).toBeLessThanOrEqual(L)
    if (b.algorithm === 'sliding-window') expect(inWindow).toBeLessThan(2 * L)
    if (b.algorithm === 'fixed-window') expect(inWindow).toBeLessThanOrEqual(2 * L)
  }
}

describe.each(ALGORITHMS)('%s properties', (algorithm) => {
  it('admits within the documented bound, and remaining, resetMs, retryAfterMs are exact', () => {
    fc.assert(
      fc.property(scenario(algorithm), ([bucket, calls, offset]) => {
        let state: State | undefined
        let now = T0 + offset
        const admitted: Array<[number, number]> = []
        for (const [dt, cost] of calls) {
          now += dt
          const out = step(state, now, bucket, cost)
          const res = out.result
          const capacity = bucket.burst ?? bucket.limit
          expect(res.limit).toBe(capacity)
          expect(res.remaining).toBeGreaterThanOrEqual(0)
          expect(res.remaining).toBeLessThanOrEqual(capacity)
          expect(res.resetMs).toBeGreaterThanOrEqual(now)
          if (res.allowed) {
            expect(res.retryAfterMs).toBe(0)
            admitted.push([now, cost])
            state = out.state
          } else if (cost > capacity) {
            expect(res.retryAfterMs).toBe(Number.POSITIVE_INFINITY)
          } else {
            // Never early: a retry after exactly retryAfterMs with the same cost passes; never late: 1 ms before, it does not.
            expect(res.retryAfterMs).toBeGreaterThan(0)
            expect(step(state, now + res.retryAfterMs, bucket, cost).result.allowed).toBe(true)
            expect(step(state, now + res.retryAfterMs - 1, bucket, cost).result.allowed).toBe(false)
          }
          // remaining is what would pass now; resetMs is when the bucket is full again.
          if (res.remaining > 0) expect(step(state, now, bucket, res.remaining).result.allowed).toBe(true)
          expect(step(state, now, bucket, res.remaining + 1).result.allowed).toBe(false)
          expect(step(state, res.resetMs, bucket, 0).result.remaining).toBe(capacity)
          if (res.resetMs > now)
            expect(step(state, res.resetMs - 1, bucket, 0).result.remaining).toBeLessThan(capacity)
        }
        checkBound(bucket, admitted)
      }),
      { numRuns: 300 },
    )
  })

  it('peek agrees with check and never changes the state', () => {
    fc.assert(
      fc.property(scenario(algorithm), ([bucket, calls, offset]) => {
        let state: State | undefined
        let now = T0 + offset
        for (const [dt, cost] of calls) {
          now += dt
          const peek = step(state, now, bucket, 0)
          const one = step(state, now, bucket, 1)
          expect(peek.result.allowed).toBe(one.result.allowed)
          expect(peek.result.allowed ? 0 : one.result.retryAfterMs).toBe(peek.result.retryAfterMs)
          const out = step(state, now, bucket, cost)
          if (out.result.allowed) state = out.state
        }
      }),
      { numRuns: 150 },
    )
  })
})
