// Sliding log: every admitted cost with its time; exact over any window.
import { RETRY_NEVER } from '../backend'
import { result } from './math'
import type { StepFunction } from './types'

/**
 * `'sliding-log'`: keeps the time of every admitted call (calls in the same millisecond share an
 * entry) and admits when the cost in the last `windowMs` (the interval `(now - windowMs, now]`)
 * stays within `limit`.
 *
 * - State: `[time1, cost1, time2, cost2, ...]`, oldest first: up to `2 * limit` integers.
 * - Bound: exact. In every interval of `windowMs`, at most `limit` is admitted.
 * - Trade-offs: the only exact window, at the price of memory and time proportional to `limit`
 *   (so `limit` is capped at 100,000 for it). Prefer `'gcra'` for large limits. `burst` does not apply.
 * - `resetMs` is when the newest entry leaves the window; `retryAfterMs` is when enough old entries
 *   have left for the cost to fit.
 */
export const slidingLog: StepFunction = (state, now, bucket, cost) => {
  const L = bucket.limit
  const W = bucket.windowMs
  const n = state === undefined || state.length % 2 !== 0 ? 0 : state.length
  const s = state as readonly number[]
  const t = now
  // A log whose newest entry lies ahead of now (the clock stepped back) moves back whole: the same
  // entries, the same spacing, the newest at now.
  let shift = 0
  if (n > 0 && (s[n - 2] as number) > t) shift = (s[n - 2] as number) - t
  const cutoff = t - W
  let first = 0
  while (first < n && (s[first] as number) - shift <= cutoff) first += 2
  let used = 0
  const kept: number[] = []
  for (let i = first; i < n; i += 2) {
    used += s[i + 1] as number
    kept.push((s[i] as number) - shift, s[i + 1] as number)
  }
  const rebased = shift > 0
  const m = kept.length
  const newest = m > 0 ? (kept[m - 2] as number) : t

  if (cost > 0 && cost <= L && used + cost <= L) {
    if (m > 0 && newest === t) kept[m - 1] = (kept[m - 1] as number) + cost
    else kept.push(t, cost)
    used += cost
    return { state: kept, result: result(true, L, L - used, t + W, 0), ttlMs: W, rebased }
  }

  const resetMs = m > 0 ? newest + W : t
  const ttlMs = m > 0 ? newest + W - t : W
  const want = cost === 0 ? 1 : cost
  let retry = 0
  if (cost > L) retry = RETRY_NEVER
  else if (used + want > L) {
    // Drop the oldest entries until the cost fits; it fits once the last dropped one expires.
    let left = used
    let i = 0
    while (left + want > L) {
      left -= kept[i + 1] as number
      i += 2
    }
    retry = (kept[i - 2] as number) + W - t
  }
  return {
    state: kept,
    result: result(cost === 0 ? used + 1 <= L : false, L, L - used, resetMs, retry),
    ttlMs,
    rebased,
  }
}
