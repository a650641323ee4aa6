// GCRA: the generic cell rate algorithm, one theoretical arrival time per key.
import { charge, chargedLevel, drainMs } from './meter'
import type { StepFunction } from './types'

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
 *   When the clock steps backwards, a TAT left further ahead than a full bucket is moved back to
 *   now, full (`rebased`), so `retryAfterMs` never exceeds `burst * windowMs / limit` and holds.
 */
export const gcra: StepFunction = (state, now, bucket, cost) => {
  const L = bucket.limit
  const cap = (bucket.burst ?? L) * bucket.windowMs
  let level = 0
  let rebased = false
  if (state !== undefined && state.length === 2) {
    const ahead = (state[0] as number) - now
    if (ahead >= 0) {
      // ahead * L stays below 2^53 only while ahead is bounded by the capacity: clamp first.
      level = ahead > Math.floor(cap / L) ? cap + 1 : ahead * L + (state[1] as number)
      if (level > cap) {
        // Only a clock that stepped back puts the TAT this far ahead: the bucket moves back to now, full.
        level = cap
        rebased = true
      }
    }
  }
  const result = charge(level, now, bucket, cost)
  const after = chargedLevel
  const whole = Math.floor(after / L)
  return { state: [now + whole, after - whole * L], result, ttlMs: drainMs(after, L), rebased }
}
