// rateLimit() for Koa 2 and 3: translates Koa's context; core's HTTP layer does the rest.

import {
  checkHandler,
  createHttpLimiter,
  type Decision,
  type HttpAdapter,
  type HttpDenial,
  type RateLimitCommonOptions,
} from '@fastlimit/core'
import type { Context, Middleware } from 'koa'

declare module 'koa' {
  interface DefaultState {
    /**
     * The decision of the last fastlimit middleware that checked this request: `remaining`,
     * `resetMs`, the rule... Absent when no fastlimit middleware checked it (skipped, allow-listed).
     */
    rateLimit?: Decision
  }
}

/** Options of {@link rateLimit}: the options every fastlimit adapter takes, plus `handler`. */
export interface RateLimitOptions extends RateLimitCommonOptions<Context> {
  /**
   * Sends the refusal yourself instead of `statusCode` and `message` (set `ctx.status` and
   * `ctx.body`). The RateLimit headers and `Retry-After` are already set.
   * @default undefined: answers `statusCode` with `message`
   */
  handler?: (ctx: Context, decision: Decision) => void | Promise<void>
}

const adapter: HttpAdapter<Context, Context> = {
  name: 'koa',
  extraOptions: ['handler'],
  // The connection's peer, never ctx.ip (which depends on app.proxy): trustProxy decides what to believe.
  remoteAddress: (ctx) => ctx.req.socket.remoteAddress,
  header: (ctx, name) => {
    const value = ctx.req.headers[name]
    return typeof value === 'string' ? value : Array.isArray(value) ? value.join(', ') : undefined
  },
  method: (ctx) => ctx.req.method ?? '',
  // Straight to Node's response: Koa reads its headers from there, and skips ctx.set's checks.
  setHeader: (ctx, name, value) => {
    ctx.res.setHeader(name, value)
  },
  expose: (ctx, _res, decision) => {
    ctx.state.rateLimit = decision
  },
}

/**
 * Koa middleware (Koa 2 and 3) that limits requests: use it app-wide (`app.use(rateLimit())`) or
 * per route (`router.post('/login', rateLimit({ rules: '5/15m' }), login)`). Options are checked
 * now: a bad one throws a `ConfigError`. Errors (a failing `key`, a backend under
 * `onBackendError: 'throw'`) are thrown to Koa's error handling. Later middleware finds the decision
 * in `ctx.state.rateLimit`.
 *
 * @example
 * ```ts
 * import Koa from 'koa'
 * import { rateLimit } from '@fastlimit/koa'
 *
 * const app = new Koa()
 * app.use(rateLimit({ rules: '100/min' }))
 * ```
 */
export function rateLimit(options: RateLimitOptions = {}): Middleware {
  const handler = checkHandler(options, 'koa', '(ctx, decision) => void')
  const http = createHttpLimiter(options, adapter)
  const deny =
    handler === undefined
      ? sendDenial
      : (ctx: Context, _: Context, denial: HttpDenial) => handler(ctx, denial.decision)
  return function fastlimit(ctx, next) {
    return http.run<unknown>(ctx, ctx, next, deny)
  }
}

function sendDenial(ctx: Context, _: Context, denial: HttpDenial): void {
  ctx.status = denial.status
  ctx.set('content-type', denial.contentType)
  ctx.body = denial.body
}
