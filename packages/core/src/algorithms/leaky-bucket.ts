// Leaky bucket as a meter: a level that drains at a constant rate.
import { adjustMeter, charge, chargedLevel, drain, drainMs, levelAhead } from './meter'
import type { AdjustFunction, StepFunction } from './types'

/**
 * `'leaky-bucket'` (as a meter): each admitted call pours its cost into a bucket of capacity
 * `burst ?? limit` that leaks `limit` per `windowMs`; a call that would overflow is denied.
 *
 * - State: `[level, lastMs]`, the level in scaled units (one unit of cost is `windowMs` units and
 *   `limit` units leak per millisecond), so the arithmetic is exact integers.
 * - Bound: over any interval of length `d` ms, at most `burst + limit * d / windowMs` is admitted.
 * - Trade-offs: smooth output at a steady rate with a bounded burst. It admits exactly what
 *   `'token-bucket'` and `'gcra'` admit (they are the same meter seen three ways); it is here for
 *   users who think in levels. `'gcra'` keeps a single timestamp instead.
 * - `resetMs` is when the bucket is empty; `retryAfterMs` is exact to the millisecond.
 * - Clocks (`skewMs`): a state from ahead of now is seen with its level plus what leaks until its
 *   time, exactly as `'gcra'` sees its TAT; kept within `skewMs`, else moved back to now, full
 *   (`rebased`). The same bound as `'gcra'`.
 */
export const leakyBucket: StepFunction = (state, now, bucket, cost, skewMs = 0) => {
  let level = 0
  const t = now
  let rebased = false
  if (state !== undefined && state.length === 2) {
    const last = state[1] as number
    const stored = state[0] as number
    if (last > t) {
      const cap = (bucket.burst ?? bucket.limit) * bucket.windowMs
      level = levelAhead(stored < 0 ? 0 : stored, last - t, cap, bucket.limit, skewMs)
      if (level < 0) {
        // Only a clock that stepped back puts the state this far ahead: back to now, full.
        level = cap
        rebased = true
      }
    } else level = drain(stored, t - last, bucket.limit)
  }
  const result = charge(level, t, bucket, cost)
  const after = chargedLevel
  return { state: [after, t], result, ttlMs: drainMs(after, bucket.limit), rebased }
}

/**
 * The adjustment of `'leaky-bucket'` (see `AdjustFunction`): a refund lowers the level (never by more
 * than the charge still holds, never below empty), an extra charge raises it (never above full).
 */
export const leakyBucketAdjust: AdjustFunction = (state, now, bucket, delta, charge, skewMs = 0) =>
  adjustMeter(leakyBucket, levelOf, state, now, bucket, delta, charge, skewMs)

/** The leaky-bucket state of a meter at `level` units. */
function levelOf(level: number, now: number): number[] {
  return [level, now]
}
