// How per-rule results become one decision: which rule speaks, and why. Shared by FastLimit, the
// lean limiter of the edge entries and the RateLimit headers of several middlewares.
import type { BackendResult } from './backend'

/** `retryAfterMs` of a refusal under `onBackendError: 'fail-closed'`: retry in one second. */
export const FAIL_CLOSED_RETRY_MS = 1000

/** The figures of one rule's result that decide which rule is the most restrictive. */
export type Standing = Pick<BackendResult, 'allowed' | 'remaining' | 'resetMs' | 'retryAfterMs'>

/**
 * The index of the most restrictive of several results: a denying one with the longest wait, or, when
 * all admit, the one with the least remaining (the later reset on a tie). The first on a full tie.
 */
export function mostRestrictive(results: readonly Standing[]): number {
  let pick = 0
  let allowed = (results[0] as Standing).allowed
  for (let i = 1; i < results.length; i++) {
    const r = results[i] as Standing
    const p = results[pick] as Standing
    if (!r.allowed) {
      if (allowed || r.retryAfterMs > p.retryAfterMs) pick = i
      allowed = false
    } else if (
      allowed &&
      (r.remaining < p.remaining || (r.remaining === p.remaining && r.resetMs > p.resetMs))
    ) {
      pick = i
    }
  }
  return pick
}

/** Why a store's result came out as it did: admitted, over the limit, or a cost it can never admit. */
export function reasonOf(r: BackendResult): 'ok' | 'rate-limited' | 'cost-exceeds-limit' {
  return r.allowed
    ? 'ok'
    : r.retryAfterMs === Number.POSITIVE_INFINITY
      ? 'cost-exceeds-limit'
      : 'rate-limited'
}
