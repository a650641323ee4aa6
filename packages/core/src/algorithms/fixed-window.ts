// Fixed window: one counter per window aligned to the epoch.
import { type BucketConfig, RETRY_NEVER } from '../backend'
import { answer, resultOfSink, sink } from './sink'
import type { AdjustFunction, State, StepFunction } from './types'

/**
 * `'fixed-window'`: counts cost in windows of `windowMs` aligned to the Unix epoch, so every process
 * and every store agrees on where a window starts.
 *
 * - State: `[windowStart, count]` (two integers).
 * - Bound: at most `limit` per aligned window, but up to `2 * limit` inside a `windowMs` that straddles
 *   a boundary (a burst at the end of one window and at the start of the next).
 * - Trade-offs: the cheapest algorithm and the easiest to explain ("100 per calendar minute");
 *   choose `'sliding-window'` or `'gcra'` when boundary bursts matter. `burst` does not apply.
 * - `resetMs` is the end of the window (or now when nothing is counted); a denied call's
 *   `retryAfterMs` is the time to that end.
 * - Clocks (`skewMs`): a later window, starting no more than `skewMs` after now, is another clock's:
 *   this process counts in it, and waits for its end on its own clock. A window starting further
 *   ahead means this clock stepped back: the count moves to this clock's window (`rebased`). Shared by
 *   clocks up to `S <= skewMs` apart, each aligned window holds at most `limit`, and over any `d` ms at
 *   most `limit * (ceil((d + S) / windowMs) + 1)` is admitted.
 */
export const fixedWindow: StepFunction = (state, now, bucket, cost, skewMs = 0) => {
  const has = state !== undefined && state.length === 2
  fixedWindowTo(
    has,
    has ? (state[0] as number) : 0,
    has ? (state[1] as number) : 0,
    now,
    bucket,
    cost,
    skewMs,
  )
  const k = sink
  return { state: [k.s0, k.s1], result: resultOfSink(), ttlMs: k.ttlMs, rebased: k.rebased }
}

/**
 * The one definition of {@link fixedWindow}, allocating nothing: the state comes in as its two numbers
 * (`has` false: no state), the answer goes to the kernels' {@link sink} (state in `s0`, `s1`).
 */
export function fixedWindowTo(
  has: boolean,
  s0: number,
  s1: number,
  now: number,
  bucket: BucketConfig,
  cost: number,
  skewMs: number,
): void {
  const L = bucket.limit
  const W = bucket.windowMs
  // floor(now / W) * W rather than now - now % W: the same integer, without a slow fmod.
  let start = Math.floor(now / W) * W
  let count = 0
  let rebased = false
  if (has && s0 >= start) {
    // The same window; or a later one: another clock's (counted in), or this clock stepped back (the
    // count moves to this window).
    count = s1
    if (s0 > start) {
      if (s0 - now > skewMs) rebased = true
      else start = s0
    }
  }
  const t = now
  const end = start + W
  const k = sink
  k.n = 2
  k.s0 = start
  k.ttlMs = end - t
  k.rebased = rebased
  if (cost === 0) {
    const allowed = count + 1 <= L
    k.s1 = count
    answer(allowed, L, L - count, count > 0 ? end : t, allowed ? 0 : end - t)
  } else if (cost > L) {
    k.s1 = count
    answer(false, L, L - count, count > 0 ? end : t, RETRY_NEVER)
  } else if (count + cost <= L) {
    count += cost
    k.s1 = count
    answer(true, L, L - count, end, 0)
  } else {
    k.s1 = count
    answer(false, L, L - count, end, end - t)
  }
}

/**
 * The adjustment of `'fixed-window'` (see `AdjustFunction`). A refund lowers the count of the window
 * the state holds, only if that window counted the charge (`charge.resetMs - windowMs`; any window with
 * no charge given), never below 0: a charge made in a window that has passed refunds nothing. An extra
 * charge counts in the window a check would count in, up to `limit`.
 */
export const fixedWindowAdjust: AdjustFunction = (state, now, bucket, delta, charge, skewMs = 0) => {
  const read = fixedWindow(state, now, bucket, 0, skewMs)
  const L = bucket.limit
  const count = read.state[1] as number
  let next = count
  if (delta > 0) next = delta >= L - count ? (count > L ? count : L) : count + delta
  else if (delta < 0 && count > 0) {
    let r = -delta
    // A count read is the stored window's (the same window, another clock's, or one moved back).
    let counted = true
    if (charge !== undefined) {
      if (charge.cost < r) r = charge.cost
      counted = ((state as State)[0] as number) === charge.resetMs - bucket.windowMs
    }
    if (counted) next = r >= count ? 0 : count - r
  }
  if (next === count) {
    return {
      state: read.state,
      result: read.result,
      ttlMs: read.ttlMs,
      rebased: read.rebased,
      changed: false,
    }
  }
  const out = fixedWindow([read.state[0] as number, next], now, bucket, 0, skewMs)
  return { state: out.state, result: out.result, ttlMs: out.ttlMs, rebased: read.rebased, changed: true }
}
