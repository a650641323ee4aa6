// rateLimit() for Koa 2 and 3: translates Koa's context; core's HTTP layer does the rest.

import {
  checkHandler,
  closeSignal,
  createHttpLimiter,
  type Decision,
  type HttpAdapter,
  type HttpDenial,
  type HttpInvalidCost,
  onResponseClose,
  type RateLimitCommonOptions,
  type RateLimitInfo,
} from '@fastlimit/core'
import type { Context, Middleware } from 'koa'

declare module 'koa' {
  interface DefaultState {
    /**
     * What the last fastlimit middleware that counted this request found: `remaining`, `resetMs`,
     * the rule, `reset()` and `peek()` of the bucket, and `all` for every middleware that counted it.
     * Absent when none did (skipped, allow-listed, cost 0).
     */
    rateLimit?: RateLimitInfo
  }
}

/**
 * What {@link rateLimit} returns: a Koa middleware, with `reset(ctx)` and `peek(ctx)` for the bucket
 * a request is counted in.
 */
export interface RateLimitMiddleware extends Middleware {
  /**
   * Forgets the bucket the request of `ctx` is counted in by this middleware (the client's address,
   * or what `key` returns, in this middleware's `scope`): after a successful login, for example.
   * Works in any later middleware, whether or not this middleware ran for the request. Rejects when
   * the store fails.
   */
  reset(ctx: Context): Promise<void>
  /**
   * Reads the bucket the request of `ctx` is counted in by this middleware, charging nothing:
   * `remaining`, `resetMs`, `allowed` (would a request of cost 1 pass). `undefined` for an
   * allow-listed client.
   */
  peek(ctx: Context): Promise<RateLimitInfo | undefined>
}

/** Options of {@link rateLimit}: the options every fastlimit adapter takes, plus `handler`. */
export interface RateLimitOptions extends RateLimitCommonOptions<Context> {
  /**
   * Sends the refusal yourself instead of `statusCode` and `message` (set `ctx.status` and
   * `ctx.body`). Called for requests over the limit and for outages (`decision.reason ===
   * 'fail-closed'`), with the RateLimit headers and `Retry-After` already set; not for a request
   * whose cost is unusable (that one is answered 400, see `invalidCost`).
   * @default undefined: answers `statusCode` (or `outageStatusCode`) with `message`
   */
  handler?: (ctx: Context, decision: Decision) => void | Promise<void>
}

const adapter: HttpAdapter<Context, Context> = {
  name: 'koa',
  extraOptions: ['handler'],
  requestName: 'ctx',
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
  attach: (ctx, _res, info) => {
    ctx.state.rateLimit = info
  },
  attached: (ctx) => ctx.state.rateLimit,
  // The concurrency option's slot is released once the response is sent or the client went away.
  onFinished: (ctx, _res, done) => {
    ctx.res.once('finish', done)
    ctx.res.once('close', done)
  },
  // mode: 'delay' drops a held request whose client has gone.
  signal: (ctx) => closeSignal(ctx.res),
  // countWhen and settle: decided when Node's response closes (sent, or the client gone).
  responseEnd: (ctx, _res, end) => onResponseClose(ctx.res, end),
}

/**
 * Koa middleware (Koa 2 and 3) that limits requests: use it app-wide (`app.use(rateLimit())`) or
 * per route (`router.post('/login', rateLimit({ rules: '5/15m' }), login)`). Options are checked
 * now: a bad one throws a `ConfigError`. Errors (a failing `key`, a backend under
 * `onBackendError: 'throw'`) are thrown to Koa's error handling. Later middleware finds what it
 * found in `ctx.state.rateLimit`; `middleware.reset(ctx)` forgets a request's bucket (after a
 * successful login).
 *
 * @example
 * ```ts
 * import Koa from 'koa'
 * import Router from '@koa/router'
 * import { rateLimit } from '@fastlimit/koa'
 *
 * const app = new Koa()
 * const router = new Router()
 * app.use(rateLimit({ rules: '100/min' }))
 * const loginLimit = rateLimit({ rules: '5/15m', scope: 'login' })
 * router.post('/login', loginLimit, async (ctx) => {
 *   if (!(await checkPassword(ctx.request.body))) return void (ctx.status = 401)
 *   await loginLimit.reset(ctx) // or ctx.state.rateLimit?.reset()
 *   ctx.body = { ok: true }
 * })
 * ```
 */
export function rateLimit(options: RateLimitOptions = {}): RateLimitMiddleware {
  const handler = checkHandler(options, 'koa', '(ctx, decision) => void')
  const http = createHttpLimiter(options, adapter)
  const deny =
    handler === undefined
      ? sendDenial
      : (ctx: Context, _: Context, denial: HttpDenial) => handler(ctx, denial.decision)
  const fastlimit: Middleware = function fastlimit(ctx, next) {
    return http.run<unknown>(ctx, ctx, next, deny, undefined, sendDenial)
  }
  return Object.assign(fastlimit, {
    reset: (ctx: Context) => http.reset(ctx),
    peek: (ctx: Context) => http.peek(ctx),
  })
}

function sendDenial(ctx: Context, _: Context, denial: HttpDenial | HttpInvalidCost): void {
  ctx.status = denial.status
  ctx.set('content-type', denial.contentType)
  ctx.body = denial.body
}
