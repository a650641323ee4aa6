// GCRA: the generic cell rate algorithm, one theoretical arrival time per key.
import type { BucketConfig } from '../backend'
import { adjustMeter, chargedLevel, chargeTo, drainMs, levelAhead } from './meter'
import { resultOfSink, sink } from './sink'
import type { AdjustFunction, StepFunction } from './types'

/**
 * `'gcra'` (the default): the generic cell rate algorithm. It stores one timestamp, the theoretical
 * arrival time (TAT) at which the key's bucket is empty again; a call is admitted when pushing the
 * TAT forward by `cost * windowMs / limit` keeps it within `burst * windowMs / limit` of now.
 *
 * - State: `[tatMs, tatFraction]`: the TAT as whole milliseconds plus a fraction in `1/limit` ms, so
 *   emission intervals such as 60000/7 ms stay exact.
 * - Bound: over any interval of length `d` ms, at most `burst + limit * d / windowMs` is admitted.
 * - Trade-offs: smooth (no window boundaries), constant space, exact `retryAfterMs`, and no background
 *   work; the best default. It admits exactly what `'token-bucket'` and `'leaky-bucket'` admit.
 * - Clocks (`skewMs`, see `StepFunction`): a TAT further ahead than a full bucket was written by a
 *   clock ahead of this one; while within `skewMs` of that it is kept, this process sees the bucket
 *   over-full and waits, on its own clock, until it has room (`retryAfterMs` holds). Further ahead,
 *   this clock stepped back: the TAT moves back to now, full (`rebased`), so `retryAfterMs` never
 *   exceeds `(burst * windowMs / limit) + skewMs`. Shared by clocks up to `S <= skewMs` apart, at most
 *   `burst + limit * (d + S) / windowMs` is admitted over any `d` ms.
 */
export const gcra: StepFunction = (state, now, bucket, cost, skewMs = 0) => {
  const has = state !== undefined && state.length === 2
  gcraTo(has, has ? (state[0] as number) : 0, has ? (state[1] as number) : 0, now, bucket, cost, skewMs)
  const k = sink
  return { state: [k.s0, k.s1], result: resultOfSink(), ttlMs: k.ttlMs, rebased: k.rebased }
}

/**
 * The one definition of {@link gcra}, allocating nothing: the state comes in as its two numbers
 * (`has` false: no state), the answer goes to the kernels' {@link sink} (state in `s0`, `s1`). For a
 * backend that keeps states as numbers (MemoryBackend).
 */
export function gcraTo(
  has: boolean,
  tat: number,
  fraction: number,
  now: number,
  bucket: BucketConfig,
  cost: number,
  skewMs: number,
): void {
  const L = bucket.limit
  const cap = (bucket.burst ?? L) * bucket.windowMs
  let level = 0
  let rebased = false
  if (has) {
    const ahead = tat - now
    if (ahead >= 0) {
      level = levelAhead(fraction, ahead, cap, L, skewMs)
      if (level < 0) {
        // Only a clock that stepped back puts the TAT this far ahead: the bucket moves back to now, full.
        level = cap
        rebased = true
      }
    }
  }
  chargeTo(level, now, bucket, cost)
  const after = chargedLevel
  const whole = Math.floor(after / L)
  const k = sink
  k.n = 2
  k.s0 = now + whole
  k.s1 = after - whole * L
  k.ttlMs = drainMs(after, L)
  k.rebased = rebased
}

/**
 * The adjustment of `'gcra'` (see `AdjustFunction`): the TAT moves back by the refund (never before
 * now, never by more than the charge still holds) or forward by an extra charge (never past a full bucket).
 */
export const gcraAdjust: AdjustFunction = (state, now, bucket, delta, charge, skewMs = 0) =>
  adjustMeter(gcra, tatOf, state, now, bucket, delta, charge, skewMs)

/** The GCRA state of a meter at `level` units: the TAT in whole ms and a fraction in 1/limit ms. */
function tatOf(level: number, now: number, bucket: { readonly limit: number }): number[] {
  const whole = Math.floor(level / bucket.limit)
  return [now + whole, level - whole * bucket.limit]
}
