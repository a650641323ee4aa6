// Sliding window counter: the current window's count plus the previous one's, weighted by overlap.
import { RETRY_NEVER } from '../backend'
import { ceilDiv, result } from './math'
import type { AdjustFunction, StepFunction } from './types'

/**
 * `'sliding-window'`: the sliding window counter. It estimates the cost in the last `windowMs` as
 * `ceil(previous * (windowMs - elapsed) / windowMs) + current`, where `previous` and `current` are the
 * counts of the two latest epoch-aligned windows and `elapsed` is the time since the current one began.
 *
 * - State: `[windowStart, previous, current]` (three integers), whatever the limit.
 * - Bound: at most `limit` per aligned window; in any interval of `windowMs` strictly less than
 *   `2 * limit`, and in practice close to `limit` (the estimate rounds up, so it errs on denying).
 * - Trade-offs: smooths the boundary bursts of `'fixed-window'` in constant space; it is an estimate
 *   that assumes cost in the previous window was spread evenly. Use `'sliding-log'` for an exact
 *   window. `burst` does not apply.
 * - `resetMs` is when the estimate reaches 0; `retryAfterMs` is exact for the estimate.
 * - Clocks (`skewMs`): a later window, starting no more than `skewMs` after now, is another clock's:
 *   this process counts in it, estimating as at its start (the previous window weighs in full) and
 *   timing its waits on its own clock. Further ahead, this clock stepped back: the counts move to this
 *   clock's window (`rebased`). Shared by clocks up to `S <= skewMs` apart, each aligned window holds
 *   at most `limit`, and over any `d` ms at most `limit * (ceil((d + S) / windowMs) + 1)` is admitted.
 */
export const slidingWindow: StepFunction = (state, now, bucket, cost, skewMs = 0) => {
  const L = bucket.limit
  const W = bucket.windowMs
  // floor(now / W) * W rather than now - now % W: the same integer, without a slow fmod.
  let start = Math.floor(now / W) * W
  let prev = 0
  let curr = 0
  let rebased = false
  if (state !== undefined && state.length === 3) {
    const s0 = state[0] as number
    if (s0 >= start) {
      // The same window; or a later one: another clock's (counted in), or this clock stepped back (the
      // counts move to this window).
      prev = state[1] as number
      curr = state[2] as number
      if (s0 > start) {
        if (s0 - now > skewMs) rebased = true
        else start = s0
      }
    } else if (s0 === start - W) {
      prev = state[2] as number
    }
  }
  const t = now
  // Before the start of another clock's window, estimate as at its start.
  const elapsed = t < start ? 0 : t - start
  const weighted = prev === 0 ? 0 : ceilDiv(prev * (W - elapsed), W)
  let used = weighted + curr
  if (used > L) used = L

  if (cost > 0 && cost <= L && used + cost <= L) {
    curr += cost
    used += cost
    return {
      state: [start, prev, curr],
      result: result(true, L, L - used, start + 2 * W, 0),
      ttlMs: start + 2 * W - t,
      rebased,
    }
  }

  const resetMs = curr > 0 ? start + 2 * W : weighted > 0 ? start + W : t
  const ttlMs = resetMs > t ? resetMs - t : W
  const want = cost === 0 ? 1 : cost
  let retry = 0
  if (cost > L) retry = RETRY_NEVER
  else if (used + want > L) {
    retry = -1
    const room = L - want - curr
    if (room >= 0 && prev > 0) {
      // Still in this window: wait until the previous window's weight has decayed enough.
      const at = W - Math.floor((room * W) / prev)
      if (at < W) retry = start + at - t
    }
    if (retry < 0) {
      // In the next window the current count becomes the previous one.
      let at = 0
      if (curr > 0) {
        at = W - Math.floor(((L - want) * W) / curr)
        if (at < 0) at = 0
      }
      retry = start + W + at - t
    }
  }
  return {
    state: [start, prev, curr],
    result: result(cost === 0 ? used + 1 <= L : false, L, L - used, resetMs, retry),
    ttlMs,
    rebased,
  }
}

/**
 * The adjustment of `'sliding-window'` (see `AdjustFunction`). A refund lowers the count of the window
 * that counted the charge (`charge.resetMs - 2 * windowMs`) while it is the current or the previous
 * one, never below 0 (no charge given: the current window first, then the previous one); so the
 * estimate drops by what the charge still weighs in it. An extra charge counts in the current window,
 * up to `limit`.
 */
export const slidingWindowAdjust: AdjustFunction = (state, now, bucket, delta, charge, skewMs = 0) => {
  const read = slidingWindow(state, now, bucket, 0, skewMs)
  const L = bucket.limit
  const W = bucket.windowMs
  const start = read.state[0] as number
  let prev = read.state[1] as number
  let curr = read.state[2] as number
  let changed = false
  if (delta > 0) {
    if (curr < L) {
      curr = delta >= L - curr ? L : curr + delta
      changed = true
    }
  } else if (delta < 0) {
    let r = -delta
    let inCurr = true
    let inPrev = true
    if (charge !== undefined) {
      if (charge.cost < r) r = charge.cost
      const counted = charge.resetMs - 2 * W
      // The stored windows the counts read come from: [s0 - W, s0] when s0 is this window or a later
      // one (another clock's, or moved back), or s0 alone as the previous window.
      let currWindow = Number.NaN
      let prevWindow = Number.NaN
      if (state !== undefined && state.length === 3) {
        const s0 = state[0] as number
        if (s0 >= Math.floor(now / W) * W) {
          currWindow = s0
          prevWindow = s0 - W
        } else prevWindow = s0
      }
      inCurr = counted === currWindow
      inPrev = counted === prevWindow
    }
    if (inCurr && curr > 0 && r > 0) {
      const take = r < curr ? r : curr
      curr -= take
      r -= take
      changed = true
    }
    if (inPrev && prev > 0 && r > 0) {
      prev -= r < prev ? r : prev
      changed = true
    }
  }
  if (!changed) {
    return {
      state: read.state,
      result: read.result,
      ttlMs: read.ttlMs,
      rebased: read.rebased,
      changed: false,
    }
  }
  const out = slidingWindow([start, prev, curr], now, bucket, 0, skewMs)
  return { state: out.state, result: out.result, ttlMs: out.ttlMs, rebased: read.rebased, changed: true }
}
