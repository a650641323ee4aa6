// The one scratch object the allocation-free kernels of the algorithms write their answer into.
import type { BackendResult } from '../backend'
import { result } from './math'

/**
 * What a kernel answers: the decision's figures, the new state (up to three numbers, `n` of them),
 * its TTL and whether it was rebased: a `StepOutput` without the objects. One per process; the caller
 * reads it right after the call, in the same turn, so a decision allocates nothing here.
 */
export interface Sink {
  allowed: boolean
  limit: number
  remaining: number
  resetMs: number
  retryAfterMs: number
  ttlMs: number
  rebased: boolean
  /** How many of `s0`, `s1`, `s2` the state holds. */
  n: number
  s0: number
  s1: number
  s2: number
}

/** The kernels' scratch (see {@link Sink}). Initialised with doubles so that its fields stay unboxed. */
export const sink: Sink = {
  allowed: false,
  limit: 0.5,
  remaining: 0.5,
  resetMs: 0.5,
  retryAfterMs: 0.5,
  ttlMs: 0.5,
  rebased: false,
  n: 0,
  s0: 0.5,
  s1: 0.5,
  s2: 0.5,
}

/** Writes the decision part of the sink. */
export function answer(
  allowed: boolean,
  limit: number,
  remaining: number,
  resetMs: number,
  retryAfterMs: number,
): void {
  const k = sink
  k.allowed = allowed
  k.limit = limit
  k.remaining = remaining
  k.resetMs = resetMs
  k.retryAfterMs = retryAfterMs
}

/** The sink's decision as a fresh {@link BackendResult}. */
export function resultOfSink(): BackendResult {
  const k = sink
  return result(k.allowed, k.limit, k.remaining, k.resetMs, k.retryAfterMs)
}

/** The sink's state as a fresh array. */
export function stateOfSink(): number[] {
  const k = sink
  return k.n === 2 ? [k.s0, k.s1] : k.n === 3 ? [k.s0, k.s1, k.s2] : k.n === 1 ? [k.s0] : []
}
