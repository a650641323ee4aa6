// Token bucket: tokens refill at a constant rate up to a capacity; each call spends its cost.
import type { BucketConfig } from '../backend'
import { adjustMeter, charge, chargedLevel, drain, drainMs, levelAhead } from './meter'
import type { AdjustFunction, StepFunction } from './types'

/**
 * `'token-bucket'`: a bucket holds up to `burst ?? limit` tokens and refills continuously at `limit`
 * tokens per `windowMs`; a call spends `cost` tokens or is denied. A new bucket starts full.
 *
 * - State: `[tokens, lastMs]`, tokens in scaled units (one token is `windowMs` units and `limit`
 *   units refill per millisecond), so refills of a fraction of a token are exact integers.
 * - Bound: over any interval of length `d` ms, at most `burst + limit * d / windowMs` is admitted.
 * - Trade-offs: the classic way to allow a burst (`burst`) on top of a steady rate (`limit` per
 *   `windowMs`). It admits exactly what `'leaky-bucket'` and `'gcra'` admit.
 * - `resetMs` is when the bucket is full again; `retryAfterMs` is when enough tokens have refilled.
 * - Clocks (`skewMs`): a state from ahead of now is seen with the tokens it lacks plus those that
 *   refill until its time, exactly as `'gcra'` sees its TAT; kept within `skewMs`, else moved back to
 *   now, empty (`rebased`). The same bound as `'gcra'`.
 */
export const tokenBucket: StepFunction = (state, now, bucket, cost, skewMs = 0) => {
  const cap = (bucket.burst ?? bucket.limit) * bucket.windowMs
  let missing = 0
  const t = now
  let rebased = false
  if (state !== undefined && state.length === 2) {
    const last = state[1] as number
    const tokens = state[0] as number
    const lacking = tokens >= cap ? 0 : cap - tokens
    if (last > t) {
      missing = levelAhead(lacking, last - t, cap, bucket.limit, skewMs)
      if (missing < 0) {
        // Only a clock that stepped back puts the state this far ahead: back to now, empty.
        missing = cap
        rebased = true
      }
    } else missing = drain(lacking, t - last, bucket.limit)
  }
  const result = charge(missing, t, bucket, cost)
  const after = chargedLevel
  return { state: [cap - after, t], result, ttlMs: drainMs(after, bucket.limit), rebased }
}

/**
 * The adjustment of `'token-bucket'` (see `AdjustFunction`): a refund puts tokens back (never more
 * than the charge still lacks, never above `burst`), an extra charge takes more (never below empty).
 */
export const tokenBucketAdjust: AdjustFunction = (state, now, bucket, delta, charge, skewMs = 0) =>
  adjustMeter(tokenBucket, tokensOf, state, now, bucket, delta, charge, skewMs)

/** The token-bucket state of a meter missing `level` units. */
function tokensOf(level: number, now: number, bucket: BucketConfig): number[] {
  return [(bucket.burst ?? bucket.limit) * bucket.windowMs - level, now]
}
