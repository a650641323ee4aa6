// Sliding log: admitted cost with its time, at most SLIDING_LOG_SLOTS entries; exact while they suffice.
import { RETRY_NEVER } from '../backend'
import { ceilDiv, result } from './math'
import type { AdjustFunction, StepFunction, StepOutput } from './types'

/**
 * The most entries a `'sliding-log'` state holds, whatever the limit: its state is at most twice this
 * many integers, and a call's work is bounded by it.
 */
export const SLIDING_LOG_SLOTS = 64

/**
 * The resolution a `'sliding-log'` keeps once its entries overflow {@link SLIDING_LOG_SLOTS}:
 * entries are merged only within aligned slots of this many milliseconds (`ceil(windowMs / 63)`),
 * so an admitted unit is counted at most this much too long (and never too short).
 */
export function slidingLogSlotMs(windowMs: number): number {
  return ceilDiv(windowMs, SLIDING_LOG_SLOTS - 1)
}

/**
 * `'sliding-log'`: keeps the time of admitted cost, one entry per millisecond that admitted any, and
 * admits when the cost in the last `windowMs` (the interval `(now - windowMs, now]`) stays within `limit`.
 *
 * - State: `[time1, cost1, time2, cost2, ...]`, oldest first, at most {@link SLIDING_LOG_SLOTS}
 *   entries (128 integers) whatever the limit; a call's work is bounded by that too.
 * - Exact while the window holds at most 64 distinct milliseconds that admitted something, which is
 *   always the case for a `limit` of 64 or less: then in every interval of `windowMs`, at most `limit`
 *   is admitted, and every unit leaves the window exactly `windowMs` after it was admitted.
 * - Beyond that, conservative: when a 65th entry would be added, the oldest two adjacent entries that
 *   fall in the same aligned slot of `ceil(windowMs / 63)` ms ({@link slidingLogSlotMs}) become one,
 *   at the later time. A unit is then counted for at least `windowMs` and less than
 *   `windowMs + ceil(windowMs / 63)` (about 1.6% longer: 953 ms of a minute), so it still never admits
 *   more than `limit` in any interval of `windowMs`; it may deny for up to that much longer than an
 *   unbounded log would. (After the clock steps back, the slack can reach twice that.)
 * - Trade-offs: the exact window, in bounded space; `'gcra'` is smoother and smaller (two integers),
 *   `'sliding-window'` smaller but an estimate. `burst` does not apply.
 * - `resetMs` is when the newest entry leaves the window; `retryAfterMs` is when enough old entries
 *   have left for the cost to fit (exact for the entries kept).
 */
export const slidingLog: StepFunction = (state, now, bucket, cost, skewMs = 0) =>
  slidingLogInPlace(
    state === undefined || state.length % 2 !== 0 ? [] : state.slice(),
    now,
    bucket,
    cost,
    skewMs,
  )

/**
 * {@link slidingLog} on a state it may change: the returned `state` is `log` itself, updated (expired
 * entries dropped even when nothing is charged, which means the same). For a backend that keeps the
 * state as a mutable array (MemoryBackend), so that a call copies nothing. `log` must be a valid state.
 */
export function slidingLogInPlace(
  log: number[],
  now: number,
  bucket: { readonly limit: number; readonly windowMs: number },
  cost: number,
  skewMs = 0,
): StepOutput {
  const L = bucket.limit
  const W = bucket.windowMs
  const s = log
  const n = s.length
  const t = now
  // A log whose newest entry lies further ahead of now than skewMs (the clock stepped back) moves back
  // whole: the same entries, the same spacing, the newest at now. One ahead by no more than skewMs is
  // another clock's: the window is read at that newest time (e), and a charge is written there, so
  // the log stays sorted and counts as the clock ahead sees it.
  let shift = 0
  let e = t
  if (n > 0 && (s[n - 2] as number) > t) {
    const ahead = (s[n - 2] as number) - t
    if (ahead > skewMs) shift = ahead
    else e = s[n - 2] as number
  }
  const cutoff = e - W
  let first = 0
  while (first < n && (s[first] as number) - shift <= cutoff) first += 2
  // Drop what left the window, in place.
  let used = 0
  let m = 0
  for (let i = first; i < n; i += 2) {
    const c = s[i + 1] as number
    s[m] = (s[i] as number) - shift
    s[m + 1] = c
    used += c
    m += 2
  }
  if (m < n) s.length = m
  const rebased = shift > 0
  const newest = m > 0 ? (s[m - 2] as number) : t

  if (cost > 0 && cost <= L && used + cost <= L) {
    if (m > 0 && newest === e) s[m - 1] = (s[m - 1] as number) + cost
    else {
      s.push(e, cost)
      m += 2
    }
    if (m > 2 * SLIDING_LOG_SLOTS) merge(s, m, W)
    used += cost
    return { state: s, result: result(true, L, L - used, e + W, 0), ttlMs: e + W - t, rebased }
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
      left -= s[i + 1] as number
      i += 2
    }
    retry = (s[i - 2] as number) + W - t
  }
  return {
    state: s,
    result: result(cost === 0 ? used + 1 <= L : false, L, L - used, resetMs, retry),
    ttlMs,
    rebased,
  }
}

/**
 * Brings a log of `m / 2` entries back to {@link SLIDING_LOG_SLOTS}: in one pass from the oldest,
 * an entry in the same aligned slot as the one before it joins it (at its own, later time) until
 * enough have. The entries lie within one window, which spans at most 64 slots of
 * `ceil(windowMs / 63)` ms, so 65 entries always hold such a pair. (A longer state, written by an
 * older release, is brought down in the same pass.)
 */
function merge(s: number[], m: number, W: number): void {
  const g = slidingLogSlotMs(W)
  let excess = m / 2 - SLIDING_LOG_SLOTS
  let w = 0
  let prev = Math.floor((s[0] as number) / g)
  for (let r = 2; r < m; r += 2) {
    const slot = Math.floor((s[r] as number) / g)
    if (excess > 0 && slot === prev) {
      s[w] = s[r] as number
      s[w + 1] = (s[w + 1] as number) + (s[r + 1] as number)
      excess--
    } else {
      w += 2
      s[w] = s[r] as number
      s[w + 1] = s[r + 1] as number
      prev = slot
    }
  }
  s.length = w + 2
}

/**
 * The adjustment of `'sliding-log'` (see `AdjustFunction`). A refund lowers the entry that counted the
 * charge (at `charge.resetMs - windowMs`; above a `limit` of {@link SLIDING_LOG_SLOTS}, where entries
 * merge, the later entry of the same slot it may have been merged into while that time is still in
 * the window), never below 0, and drops an entry that reaches 0; a charge whose
 * entry has left the window refunds nothing. With no charge given, the newest entries give back first.
 * An extra charge is logged where a check would log it, up to `limit` in the window, merging entries
 * as a check does when there are more than {@link SLIDING_LOG_SLOTS}.
 */
export const slidingLogAdjust: AdjustFunction = (state, now, bucket, delta, charge, skewMs = 0) => {
  const raw = state === undefined || state.length % 2 !== 0 ? [] : state
  const read = slidingLogInPlace(raw.slice(), now, bucket, 0, skewMs)
  const s = read.state
  const m = s.length
  const L = bucket.limit
  const W = bucket.windowMs
  // Where a check reads and writes: now, or the newest entry when it is another clock's, ahead.
  const e = m > 0 && (s[m - 2] as number) > now ? (s[m - 2] as number) : now
  let changed = false
  if (delta > 0) {
    let used = 0
    for (let i = 1; i < m; i += 2) used += s[i] as number
    if (used < L) {
      const add = delta >= L - used ? L - used : delta
      if (m > 0 && s[m - 2] === e) s[m - 1] = (s[m - 1] as number) + add
      else s.push(e, add)
      if (s.length > 2 * SLIDING_LOG_SLOTS) merge(s, s.length, W)
      changed = true
    }
  } else if (delta < 0 && m > 0) {
    let r = -delta
    if (charge !== undefined) {
      if (charge.cost < r) r = charge.cost
      // A log moved back (rebased) moved every entry by the same amount; its newest entry stays.
      const shift = read.rebased ? (raw[raw.length - 2] as number) - (s[m - 2] as number) : 0
      const at = charge.resetMs - W - shift
      let i = 0
      while (i < m && (s[i] as number) < at) i += 2
      if (i < m) {
        const t = s[i] as number
        const g = slidingLogSlotMs(W)
        // Entries merge only when more than SLIDING_LOG_SLOTS hold cost in one window, so only
        // above that limit can a later entry of the same slot hold the charge.
        const merged =
          L > SLIDING_LOG_SLOTS && !read.rebased && at > e - W && Math.floor(t / g) === Math.floor(at / g)
        if (t === at || merged) {
          const c = s[i + 1] as number
          if (r >= c) s.splice(i, 2)
          else s[i + 1] = c - r
          changed = true
        }
      }
    } else {
      let i = m - 2
      while (i >= 0 && r > 0) {
        const c = s[i + 1] as number
        if (r >= c) {
          r -= c
          i -= 2
        } else {
          s[i + 1] = c - r
          r = 0
        }
      }
      // Entries after i were emptied.
      s.length = i + 2
      changed = true
    }
  }
  if (!changed) {
    return { state: s, result: read.result, ttlMs: read.ttlMs, rebased: read.rebased, changed: false }
  }
  const out = slidingLogInPlace(s, now, bucket, 0, skewMs)
  return { state: out.state, result: out.result, ttlMs: out.ttlMs, rebased: read.rebased, changed: true }
}
