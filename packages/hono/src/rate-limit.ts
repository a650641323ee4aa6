// rateLimit() for Hono 4: translates Hono's context; core's HTTP layer does the rest. No node: imports.

import {
  checkHandler,
  createHttpLimiter,
  type Decision,
  type HttpAdapter,
  type HttpDenial,
  type HttpInvalidCost,
  type HttpLimiter,
  isRequestAborted,
  type RateLimitCommonOptions,
  type RateLimitInfo,
} from '@fastlimit/core'
import type { Context, MiddlewareHandler, Next } from 'hono'
import type { ConnInfo } from 'hono/conninfo'
import { copyHeaders, honoRequest, nodeBindings, reapplyHeaders } from './context'

declare module 'hono' {
  interface ContextVariableMap {
    /**
     * What the last fastlimit middleware that counted this request found: `remaining`, `resetMs`,
     * the rule, `reset()` and `peek()` of the bucket, and `all` for every middleware that counted it.
     * Absent when none did (skipped, allow-listed, cost 0).
     */
    rateLimit?: RateLimitInfo
  }
}

/**
 * What {@link rateLimit} returns: a Hono middleware, with `reset(c)` and `peek(c)` for the bucket a
 * request is counted in.
 */
export interface RateLimitMiddleware extends MiddlewareHandler {
  /**
   * Forgets the bucket the request of `c` is counted in by this middleware (the client's address,
   * or what `key` returns, in this middleware's `scope`): after a successful login, for example.
   * Works in any later handler, whether or not this middleware ran for the request. Rejects when
   * the store fails.
   */
  reset(c: Context): Promise<void>
  /**
   * Reads the bucket the request of `c` is counted in by this middleware, charging nothing:
   * `remaining`, `resetMs`, `allowed` (would a request of cost 1 pass). `undefined` for an
   * allow-listed client.
   */
  peek(c: Context): Promise<RateLimitInfo | undefined>
}

/** Options of {@link rateLimit}: the options every fastlimit adapter takes, plus `getConnInfo` and `handler`. */
export interface RateLimitOptions extends RateLimitCommonOptions<Context> {
  /**
   * How to find the client's address on your runtime: Hono's `getConnInfo` helper from
   * `hono/bun`, `hono/deno`, `hono/cloudflare-workers`, `hono/vercel`, ... or
   * `@hono/node-server/conninfo`. Not needed on `@hono/node-server`, where the socket is read directly,
   * nor when `key` identifies clients.
   * @default on `@hono/node-server`, the request's socket; elsewhere none (requests then fail with a
   *   `ConfigError` unless `key` is given)
   */
  getConnInfo?: (c: Context) => ConnInfo
  /**
   * Builds the refusal yourself instead of `statusCode` and `message`. Called for requests over the
   * limit and for outages (`decision.reason === 'fail-closed'`), with the RateLimit headers and
   * `Retry-After` already set on `c`; not for a request whose cost is unusable (that one is answered
   * 400, see `invalidCost`).
   * @default undefined: answers `statusCode` (or `outageStatusCode`) with `message`
   */
  handler?: (c: Context, decision: Decision) => Response | Promise<Response>
}

/** Off @hono/node-server: the release of a request's concurrency slot, called once its handlers are done. */
const finishers = new WeakMap<Context, () => void>()

/**
 * The concurrency option's slot is released when Node's response closes (on @hono/node-server: sent,
 * or the client went away), elsewhere once the handlers after the middleware have returned.
 */
function onFinished(c: Context, _sink: unknown, done: () => void): void {
  const outgoing = nodeBindings(c)?.outgoing
  if (typeof outgoing?.once === 'function') {
    outgoing.once('finish', done)
    outgoing.once('close', done)
  } else finishers.set(c, done)
}

/**
 * Where the limiter writes headers: Node's response on @hono/node-server (no Headers object to
 * build, and Node merges them into whatever Response the handler returns), otherwise a list of
 * name/value pairs the middleware copies onto Hono's response.
 */
type HeaderSink = { setHeader: (name: string, value: string) => unknown } | string[]

function setHeader(sink: HeaderSink, name: string, value: string): void {
  if (Array.isArray(sink)) sink.push(name, value)
  else sink.setHeader(name, value)
}

function attach(c: Context, _sink: HeaderSink, info: RateLimitInfo): void {
  c.set('rateLimit', info)
}

function attached(c: Context): RateLimitInfo | undefined {
  return c.get('rateLimit')
}

/**
 * Hono middleware (Hono 4, on Node, Bun, Deno, Cloudflare Workers) that limits requests: use it
 * app-wide (`app.use(rateLimit())`) or per route (`app.post('/login', rateLimit({ rules: '5/15m' }), login)`).
 * Options are checked now: a bad one throws a `ConfigError`. Errors (a failing `key`, a backend
 * under `onBackendError: 'throw'`) are thrown to Hono's `onError`. Later handlers find what it
 * found in `c.var.rateLimit` (`c.get('rateLimit')`); `middleware.reset(c)` forgets a request's
 * bucket (after a successful login).
 *
 * @example
 * ```ts
 * import { Hono } from 'hono'
 * import { rateLimit } from '@fastlimit/hono'
 *
 * const app = new Hono()
 * app.use(rateLimit({ rules: '100/min' }))
 * const loginLimit = rateLimit({ rules: '5/15m', scope: 'login' })
 * app.post('/login', loginLimit, async (c) => {
 *   if (!(await checkPassword(await c.req.json()))) return c.text('wrong', 401)
 *   await loginLimit.reset(c) // or c.var.rateLimit?.reset()
 *   return c.json({ ok: true })
 * })
 * ```
 */
export function rateLimit(options: RateLimitOptions = {}): RateLimitMiddleware {
  const handler = checkHandler(options, 'hono', '(c, decision) => Response', 'builds')
  const adapter: HttpAdapter<Context, HeaderSink> = {
    ...honoRequest(options),
    setHeader,
    attach,
    attached,
    onFinished,
    // mode: 'delay' drops a held request whose client has gone (@hono/node-server, Bun and Deno abort it).
    signal: (c) => c.req.raw.signal,
  }
  const http = createHttpLimiter(options, adapter)
  const deny =
    handler === undefined
      ? sendDenial
      : (c: Context, _: HeaderSink, denial: HttpDenial) => handler(c, denial.decision)
  const fastlimit: MiddlewareHandler = function fastlimit(c, next) {
    const outgoing = nodeBindings(c)?.outgoing
    if (outgoing !== undefined && typeof outgoing.setHeader === 'function') {
      // Allowed at once (memory): next()'s own promise, with no hop of ours before the handler runs.
      const done = http.run<Response | undefined>(
        c,
        outgoing as NodeOutgoing,
        next as () => Promise<undefined>,
        deny,
        gone,
        sendDenial,
      )
      return done instanceof Promise ? done : Promise.resolve(done)
    }
    return viaHono(http, c, next, deny)
  }
  return Object.assign(fastlimit, {
    reset: (c: Context) => http.reset(c),
    peek: (c: Context) => http.peek(c),
  })
}

type NodeOutgoing = Exclude<HeaderSink, string[]>
type Deny = (c: Context, sink: HeaderSink, denial: HttpDenial) => Response | Promise<Response>

function sendDenial(c: Context, _: HeaderSink, denial: HttpDenial | HttpInvalidCost): Response {
  return c.body(denial.body, denial.status as 429, { 'content-type': denial.contentType })
}

/**
 * Errors go to Hono's error handling, but a request whose client left while held (mode 'delay') ends
 * with an empty 499 that no one receives.
 */
function gone(err: unknown): Response {
  if (isRequestAborted(err)) return new Response(null, { status: 499 })
  throw err
}

function refusal<D>(_c: Context, _sink: HeaderSink, denial: D): D {
  return denial
}

/** Off @hono/node-server: headers go through Hono's context, and survive a Response the handler builds. */
async function viaHono(
  http: HttpLimiter<Context, HeaderSink>,
  c: Context,
  next: Next,
  deny: Deny,
): Promise<Response | undefined> {
  const sink: string[] = []
  // The request goes on inside run(), so that countWhen and settle are decided after the handler.
  const denial = await http.run<HttpDenial | HttpInvalidCost | Response | undefined>(
    c,
    sink,
    () => proceed(c, sink, next),
    refusal,
    gone,
    refusal,
  )
  if (denial instanceof Response) return denial
  if (denial !== undefined) {
    copyHeaders(c, sink)
    return denial.kind === 'invalid-cost' ? sendDenial(c, sink, denial) : deny(c, sink, denial)
  }
  return undefined
}

async function proceed(c: Context, sink: string[], next: Next): Promise<undefined> {
  copyHeaders(c, sink)
  try {
    await next()
  } finally {
    finishers.get(c)?.()
  }
  reapplyHeaders(c, sink)
  return undefined
}
