// The three bucket algorithms share one exact meter in scaled integer units.
//
// One unit of cost is `windowMs` units; the meter drains `limit` units per millisecond, so `limit`
// units of cost drain in exactly `windowMs`. Capacity is `burst * windowMs` units. With these units
// every quantity is an integer and no fraction is ever rounded.

import type { BackendResult, BucketConfig } from '../backend'
import { RETRY_NEVER } from '../backend'
import { ceilDiv, result } from './math'

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
  const L = bucket.limit
  const W = bucket.windowMs
  const B = bucket.burst ?? L
  const cap = B * W
  if (cost > 0 && cost <= B && level + cost * W <= cap) {
    const after = level + cost * W
    chargedLevel = after
    return result(true, B, Math.floor((cap - after) / W), t + ceilDiv(after, L), 0)
  }
  chargedLevel = level
  const want = cost === 0 ? 1 : cost
  let retry = 0
  if (cost > B) retry = RETRY_NEVER
  else if (level + want * W > cap) retry = ceilDiv(level + want * W - cap, L)
  const allowed = cost === 0 ? level + W <= cap : false
  // A level above capacity (a state ahead of this clock) has nothing remaining.
  const remaining = level > cap ? 0 : Math.floor((cap - level) / W)
  return result(allowed, B, remaining, t + ceilDiv(level, L), retry)
}

/** Milliseconds until a meter at `level` is empty (at least 1). */
export function drainMs(level: number, rate: number): number {
  const ms = ceilDiv(level, rate)
  return ms > 0 ? ms : 1
}
