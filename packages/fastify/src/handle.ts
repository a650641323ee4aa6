// The deprecated reset/peek handle of a request (`request.rateLimitHandle`): a view of `request.rateLimit`.

import type { Decision, RateLimitInfo } from '@fastlimit/core'

/**
 * The limit a request was counted against, for later in the same request: reset it after a
 * successful login, or read where the client stands. Only requests that were counted have one
 * (not skipped, allow-listed or exempt ones).
 *
 * @deprecated `request.rateLimit` is a `RateLimitInfo` with `identity`, `scope`, `reset()` and
 * `peek()` of its own (and `all`, for every limit that counted the request); use it instead.
 *
 * @example
 * ```ts
 * app.post('/login', { config: { rateLimit: { scope: 'login', rules: '5/15m' } } }, async (request) => {
 *   const user = await authenticate(request.body)
 *   await request.rateLimit?.reset() // was: request.rateLimitHandle?.reset()
 *   return user
 * })
 * ```
 */
export interface RateLimitHandle {
  /** The identity that was counted: what `key` returned (normalized), or the client's IP key. */
  readonly identity: string
  /** The scope it was counted in, or `undefined`. */
  readonly scope: string | undefined
  /**
   * Forgets the identity's counts in this scope, under every rule (the next request starts afresh).
   * Needs a backend with `reset`; rejects when the backend fails.
   */
  reset(): Promise<void>
  /**
   * Where the identity stands now under the limit's rules, without charging anything. Needs a
   * backend with `peek`; backend failures follow the limiter's `onBackendError`.
   */
  peek(): Promise<Decision>
}

/** The {@link RateLimitHandle} of what a limit attached to a request. */
export function handleOf(info: RateLimitInfo): RateLimitHandle {
  return {
    identity: info.identity,
    scope: info.scope,
    reset: () => info.reset(),
    peek: () => info.peek().then((peeked) => peeked.decision),
  }
}
