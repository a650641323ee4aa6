// rateLimit() for Hono 4: translates Hono's context; core's HTTP layer does the rest. No node: imports.

import {
  ConfigError,
  checkHandler,
  createHttpLimiter,
  type Decision,
  type HttpAdapter,
  type HttpDenial,
  type HttpLimiter,
  type RateLimitCommonOptions,
} from '@fastlimit/core'
import type { Context, MiddlewareHandler, Next } from 'hono'
import type { ConnInfo } from 'hono/conninfo'

declare module 'hono' {
  interface ContextVariableMap {
    /**
     * The decision of the last fastlimit middleware that checked this request: `remaining`,
     * `resetMs`, the rule... Absent when no fastlimit middleware checked it (skipped, allow-listed).
     */
    rateLimit?: Decision
  }
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
   * Builds the refusal yourself instead of `statusCode` and `message`. The RateLimit headers and
   * `Retry-After` are already set on `c`.
   * @default undefined: answers `statusCode` with `message`
   */
  handler?: (c: Context, decision: Decision) => Response | Promise<Response>
}

interface NodeBindings {
  incoming?: { socket?: { remoteAddress?: string } }
  outgoing?: { setHeader?: (name: string, value: string) => unknown }
}

function nodeBindings(c: Context): NodeBindings | undefined {
  const env = c.env as (NodeBindings & { server?: NodeBindings }) | undefined
  if (typeof env !== 'object' || env === null) return undefined
  return env.incoming !== undefined ? env : env.server
}

/** The peer address on @hono/node-server, which passes Node's request as `env.incoming`. */
function nodeRemoteAddress(c: Context): string | undefined {
  return nodeBindings(c)?.incoming?.socket?.remoteAddress
}

function header(c: Context, name: string): string | undefined {
  return c.req.header(name)
}

function method(c: Context): string {
  return c.req.method
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

function expose(c: Context, _sink: HeaderSink, decision: Decision): void {
  c.set('rateLimit', decision)
}

function copyHeaders(c: Context, sink: string[]): void {
  for (let i = 0; i < sink.length; i += 2) c.header(sink[i] as string, sink[i + 1] as string)
}

/**
 * Hono middleware (Hono 4, on Node, Bun, Deno, Cloudflare Workers) that limits requests: use it
 * app-wide (`app.use(rateLimit())`) or per route (`app.post('/login', rateLimit({ rules: '5/15m' }), login)`).
 * Options are checked now: a bad one throws a `ConfigError`. Errors (a failing `key`, a backend
 * under `onBackendError: 'throw'`) are thrown to Hono's `onError`. Later handlers find the decision
 * in `c.var.rateLimit` (`c.get('rateLimit')`).
 *
 * @example
 * ```ts
 * import { Hono } from 'hono'
 * import { rateLimit } from '@fastlimit/hono'
 *
 * const app = new Hono()
 * app.use(rateLimit({ rules: '100/min' }))
 * ```
 */
export function rateLimit(options: RateLimitOptions = {}): MiddlewareHandler {
  const handler = checkHandler(options, 'hono', '(c, decision) => Response', 'builds')
  const getConnInfo = options?.getConnInfo
  if (getConnInfo !== undefined && typeof getConnInfo !== 'function') {
    throw new ConfigError(
      "[fastlimit] [hono] getConnInfo must be Hono's getConnInfo helper of your runtime, e.g. import { getConnInfo } from 'hono/bun'.",
    )
  }
  const adapter: HttpAdapter<Context, HeaderSink> = {
    name: 'hono',
    extraOptions: ['handler', 'getConnInfo'],
    noAddressHint: 'getConnInfo from your runtime (hono/bun, hono/deno, ...)',
    remoteAddress:
      getConnInfo === undefined
        ? nodeRemoteAddress
        : (c) => getConnInfo(c).remote.address ?? nodeRemoteAddress(c),
    header,
    method,
    setHeader,
    expose,
  }
  const http = createHttpLimiter(options, adapter)
  const deny =
    handler === undefined
      ? sendDenial
      : (c: Context, _: HeaderSink, denial: HttpDenial) => handler(c, denial.decision)
  return function fastlimit(c, next) {
    const outgoing = nodeBindings(c)?.outgoing
    if (outgoing !== undefined && typeof outgoing.setHeader === 'function') {
      return http.run<Response | undefined>(
        c,
        outgoing as NodeOutgoing,
        next as () => Promise<undefined>,
        deny,
      )
    }
    return viaHono(http, c, next, deny)
  }
}

type NodeOutgoing = Exclude<HeaderSink, string[]>
type Deny = (c: Context, sink: HeaderSink, denial: HttpDenial) => Response | Promise<Response>

function sendDenial(c: Context, _: HeaderSink, denial: HttpDenial): Response {
  return c.body(denial.body, denial.status as 429, { 'content-type': denial.contentType })
}

/** Off @hono/node-server: headers go through Hono's context, and survive a Response the handler builds. */
async function viaHono(
  http: HttpLimiter<Context, HeaderSink>,
  c: Context,
  next: Next,
  deny: Deny,
): Promise<Response | undefined> {
  const sink: string[] = []
  const denial = await http.handle(c, sink)
  copyHeaders(c, sink)
  if (denial !== undefined) return deny(c, sink, denial)
  await next()
  // A handler that returns a Response of its own drops headers set before it: set them again.
  if (sink.length > 0 && c.res.headers.get(sink[0] as string) === null) {
    const res = new Response(c.res.body, c.res)
    for (let i = 0; i < sink.length; i += 2) res.headers.set(sink[i] as string, sink[i + 1] as string)
    c.res = res
  }
  return undefined
}
