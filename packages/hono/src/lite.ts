// @fastlimit/hono/lite: rateLimit() for edge bundles. The full entry's rules, keys, algorithms, client
// IP and headers, on any backend with a timeout and a fail policy; nothing else is bundled.

import {
  checkHandler,
  createLiteHttp,
  type Decision,
  type LiteRateLimitOptions,
  type LiteRefusal,
} from '@fastlimit/core/lite'
import type { Context, MiddlewareHandler } from 'hono'
import type { ConnInfo } from 'hono/conninfo'
import { copyHeaders, honoRequest, reapplyHeaders } from './context'

export type {
  Backend,
  BackendResult,
  BucketConfig,
  Decision,
  LiteMemoryBackend,
  LiteMemoryBackendOptions,
  LiteProxyTrust,
  StepFunction,
} from '@fastlimit/core/lite'
export {
  ConfigError,
  FastlimitError,
  fixedWindow,
  gcra,
  leakyBucket,
  liteMemoryBackend,
  proxyTrust,
  slidingLog,
  slidingWindow,
  tokenBucket,
} from '@fastlimit/core/lite'

/**
 * Options of the lite {@link rateLimit}: the full entry's options of the same names (rules, key,
 * cost, skip, skipMethods, headers, statusCode, outageStatusCode, message, onLimit, trustProxy,
 * proxyHeader, ipv6Subnet, scope, clock), the limiter's (backend, prefix, timeoutMs, onBackendError),
 * plus `getConnInfo` and `handler`.
 */
export interface RateLimitOptions extends LiteRateLimitOptions<Context> {
  /**
   * How to find the client's address on your runtime: Hono's `getConnInfo` helper from
   * `hono/cloudflare-workers`, `hono/bun`, `hono/deno`, ... Not needed on `@hono/node-server`, nor when
   * `key` identifies clients.
   * @default on `@hono/node-server`, the request's socket; elsewhere none (requests then fail with a
   *   `ConfigError` unless `key` is given)
   */
  getConnInfo?: (c: Context) => ConnInfo
  /**
   * Builds the refusal yourself instead of `statusCode` and `message`, for requests over the limit and
   * outages (`decision.reason === 'fail-closed'`), with the RateLimit headers and `Retry-After` already set on `c`.
   * @default undefined: answers `statusCode` (or `outageStatusCode`) with `message`
   */
  handler?: (c: Context, decision: Decision) => Response | Promise<Response>
}

/**
 * The lean Hono middleware for edge bundles (Cloudflare Workers, Vercel Edge, Deno Deploy): a few KB
 * gzipped. Same rule grammar, gcra step, keys, client address rules and RateLimit headers as
 * `@fastlimit/hono`, on a bounded in-memory store by default or any `Backend` (`timeoutMs`, `onBackendError`).
 * Left out, in `@fastlimit/hono` only: delay and shadow modes, countWhen/settle, concurrency, the circuit
 * breaker and maxInFlight, the local tier, events, allowList, rules per request, `c.var.rateLimit`
 * with reset/peek, and headers combined over several middlewares. Options are checked now: a bad one
 * throws a `ConfigError`.
 *
 * @example
 * ```ts
 * import { Hono } from 'hono'
 * import { getConnInfo } from 'hono/cloudflare-workers'
 * import { rateLimit } from '@fastlimit/hono/lite'
 *
 * const app = new Hono()
 * app.use(rateLimit({ rules: '100/min', getConnInfo }))
 * ```
 */
export function rateLimit(options: RateLimitOptions = {}): MiddlewareHandler {
  const handler = checkHandler(options, 'hono', '(c, decision) => Response', 'builds')
  const http = createLiteHttp<Context>(options, honoRequest(options))
  return async function fastlimit(c, next) {
    const sink: string[] = []
    const refusal: LiteRefusal | undefined = await http(c, (name, value) => {
      sink.push(name, value)
    })
    copyHeaders(c, sink)
    if (refusal === undefined) {
      await next()
      reapplyHeaders(c, sink)
      return
    }
    if (handler !== undefined && refusal.decision !== undefined) return handler(c, refusal.decision)
    return c.body(refusal.body, refusal.status as 429, { 'content-type': refusal.contentType })
  }
}
