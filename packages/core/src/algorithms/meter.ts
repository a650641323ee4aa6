// The three bucket algorithms share one exact meter in scaled integer units.
//
// One unit of cost is `windowMs` units; the meter drains `limit` units per millisecond, so `limit`
// units of cost drain in exactly `windowMs`. Capacity is `burst * windowMs` units. With these units
// every quantity is an integer and no fraction is ever rounded.

import type { BackendResult, BucketConfig, Charge } from '../backend'
import { RETRY_NEVER } from '../backend'
import { ceilDiv } from './math'
import { answer, resultOfSink } from './sink'
import type { AdjustOutput, State, StepFunction } from './types'

/** The level after draining for `elapsed` ms at `rate` units per ms. */
export function drain(level: number, elapsed: number, rate: number): number {
  if (level <= 0 || elapsed <= 0) return level < 0 ? 0 : level
  return elapsed >= ceilDiv(level, rate) ? 0 : level - elapsed * rate
}

/**
 * The level, seen from now, of a meter whose state lies `ahead` ms in the future (written by a clock
 * ahead of this one, or before this clock stepped back) holding `level` units then: `ahead * rate` units
 * fuller, what drains meanwhile. The three meters see one state alike (GCRA's TAT is such a state).
 * Kept while no fuller than `skewMs` of draining past a full bucket (`cap`); beyond that only a clock
 * that stepped back explains it, and this returns -1: the caller moves the state back to now, full.
 */
export function levelAhead(level: number, ahead: number, cap: number, rate: number, skewMs: number): number {
  // ahead * rate stays below 2^53 only while ahead is bounded: compare the times first.
  if (ahead > Math.floor(cap / rate) + skewMs) return -1
  const seen = ahead * rate + level
  return seen > cap + skewMs * rate ? -1 : seen
}

/**
 * The level after the last {@link charge} (unchanged when it denied or peeked). A module variable
 * rather than a returned pair: the step functions read it right after the call, in the same turn,
 * and the hot path allocates one object less.
 */
export let chargedLevel = 0

/** Applies a cost (or a peek, cost 0) to a meter filled to `level` units; the new level is in {@link chargedLevel}. */
export function charge(level: number, t: number, bucket: BucketConfig, cost: number): BackendResult {
  chargeTo(level, t, bucket, cost)
  return resultOfSink()
}

/**
 * {@link charge} without the result object: the decision goes to the kernels' {@link sink}, the new
 * level to {@link chargedLevel}. The one definition of a meter's charge.
 */
export function chargeTo(level: number, t: number, bucket: BucketConfig, cost: number): void {
  const L = bucket.limit
  const W = bucket.windowMs
  const B = bucket.burst ?? L
  const cap = B * W
  if (cost > 0 && cost <= B && level + cost * W <= cap) {
    const after = level + cost * W
    chargedLevel = after
    answer(true, B, Math.floor((cap - after) / W), t + ceilDiv(after, L), 0)
    return
  }
  chargedLevel = level
  const want = cost === 0 ? 1 : cost
  let retry = 0
  if (cost > B) retry = RETRY_NEVER
  else if (level + want * W > cap) retry = ceilDiv(level + want * W - cap, L)
  const allowed = cost === 0 ? level + W <= cap : false
  // A level above capacity (a state ahead of this clock) has nothing remaining.
  const remaining = level > cap ? 0 : Math.floor((cap - level) / W)
  answer(allowed, B, remaining, t + ceilDiv(level, L), retry)
}

/** Milliseconds until a meter at `level` is empty (at least 1). */
export function drainMs(level: number, rate: number): number {
  const ms = ceilDiv(level, rate)
  return ms > 0 ? ms : 1
}

/**
 * A meter's level after an adjustment (see `AdjustFunction`). A refund takes back at most what the
 * charge still holds: the meter drains oldest first, so a charge that left the level at `a` holds
 * `a - e * limit` units `e` ms later. `a` is known to within a millisecond's drain from the charge's
 * `resetMs` (`at + ceil(a / limit)`), and is at least the charge itself (`cost * windowMs`) when `atMs`
 * is known: the larger of the two lower bounds is used, so a refund is never more than the charge
 * holds, and exact while the charge has not begun to drain out. A positive delta fills up to `cap`.
 */
export function adjustLevel(
  level: number,
  now: number,
  bucket: BucketConfig,
  delta: number,
  charge: Charge | undefined,
): number {
  const L = bucket.limit
  const W = bucket.windowMs
  const B = bucket.burst ?? L
  const cap = B * W
  if (delta > 0) {
    if (level >= cap) return level
    // delta * W stays exact: capped at B first, and B * W <= 2^52.
    const add = delta >= B ? cap : delta * W
    return add >= cap - level ? cap : level + add
  }
  if (delta === 0 || level <= 0) return level
  let r = -delta
  let bound = level
  if (charge !== undefined) {
    if (charge.cost < r) r = charge.cost
    // resetMs = at + ceil(a / L), so a - e * L > (resetMs - now - 1) * L.
    let held = 0
    const k = charge.resetMs - now - 1
    if (k >= ceilDiv(cap, L)) held = cap
    else if (k >= 0) held = k * L + 1
    const at = charge.atMs
    if (at !== undefined) {
      // a >= cost * W (the charge itself), less what drained since.
      const cw = charge.cost >= B ? cap : charge.cost * W
      const e = now - at
      const left = e <= 0 ? cw : e >= ceilDiv(cw, L) ? 0 : cw - e * L
      if (left > held) held = left
    }
    if (held < bound) bound = held
  }
  // r * W stays exact: only computed when r <= ceil(bound / W).
  const back = r > ceilDiv(bound, W) ? bound : r * W < bound ? r * W : bound
  return level - back
}

/**
 * The adjustment of one of the three meters: read the state as `step` does (a peek, which also
 * rebases), adjust the level, and peek again at the new state, written by `encode`.
 */
export function adjustMeter(
  step: StepFunction,
  encode: (level: number, now: number, bucket: BucketConfig) => number[],
  state: State | undefined,
  now: number,
  bucket: BucketConfig,
  delta: number,
  charge: Charge | undefined,
  skewMs: number,
): AdjustOutput {
  const read = step(state, now, bucket, 0, skewMs)
  const level = chargedLevel
  const next = adjustLevel(level, now, bucket, delta, charge)
  if (next === level) {
    return {
      state: read.state,
      result: read.result,
      ttlMs: read.ttlMs,
      rebased: read.rebased,
      changed: false,
    }
  }
  const out = step(encode(next, now, bucket), now, bucket, 0, skewMs)
  return { state: out.state, result: out.result, ttlMs: out.ttlMs, rebased: read.rebased, changed: true }
}
