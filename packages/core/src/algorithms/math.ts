// Integer helpers that give the same answer in JavaScript and in Lua 5.1 (both IEEE doubles).
// Every operand stays below 2^53 because rules enforce (burst ?? limit) * windowMs <= 2^52.
import type { BackendResult } from '../backend'

/** ceil(a / b) for integers a >= 0, b >= 1, exact below 2^53. */
export function ceilDiv(a: number, b: number): number {
  const q = Math.floor(a / b)
  return q * b < a ? q + 1 : q
}

/** Builds a result with one fixed property order, so every result object shares one hidden class. */
export function result(
  allowed: boolean,
  limit: number,
  remaining: number,
  resetMs: number,
  retryAfterMs: number,
): BackendResult {
  return { allowed, limit, remaining, resetMs, retryAfterMs }
}
