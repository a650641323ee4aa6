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
  let t = now
  if (n > 0) {
    const last = (state as readonly number[])[n - 2] as number
    // A clock that runs behind the last writer's: never let time go backwards inside one log.
    if (last > t) t = last
  }
  const cutoff = t - W
  let first = 0
  while (first < n && ((state as readonly number[])[first] as number) <= cutoff) first += 2
  let used = 0
  for (let i = first + 1; i < n; i += 2) used += (state as readonly number[])[i] as number
  const kept: number[] = first === 0 && n > 0 ? (state as readonly number[]).slice() : []
  if (first > 0) for (let i = first; i < n; i++) kept.push((state as readonly number[])[i] as number)
  const m = kept.length
  const newest = m > 0 ? (kept[m - 2] as number) : t

  if (cost > 0 && cost <= L && used + cost <= L) {
    if (m > 0 && newest === t) kept[m - 1] = (kept[m - 1] as number) + cost
    else kept.push(t, cost)
    used += cost
    return { state: kept, result: result(true, L, L - used, t + W, 0), ttlMs: W }
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
  }
}
