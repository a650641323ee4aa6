// The deprecated reset/peek handle of a request (`@RateLimitHandle()`): a view of its `RateLimitInfo`.

import type { Decision, RateLimitInfo } from '@fastlimit/core'

/**
 * The limit a request was counted against, for later in the same request: reset it after a
 * successful login, or read where the client stands. Only requests that were counted have one
 * (not skipped, allow-listed or exempt ones).
 *
 * @deprecated `@RateLimitInfo()` (and `req.rateLimit`) gives a `RateLimitInfo` with `identity`,
 * `scope`, `reset()` and `peek()` of its own, and `all` for every limit that counted the request.
 *
 * @example
 * ```ts
 * @Post('login')
 * @RateLimit({ limit: 5, window: '15m' }, { scope: 'login' })
 * async login(@Body() body: Credentials, @RateLimitHandle() limit?: RateLimitHandle) {
 *   const user = await this.auth.check(body)
 *   await limit?.reset() // a successful login clears the failed attempts
 *   return user
 * }
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
