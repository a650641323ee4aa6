// What the full and the lite middleware read from Hono's context alike: Node's request and response on
// @hono/node-server, and headers set before the handlers run, kept whatever Response the handler returns.
import { ConfigError } from '@fastlimit/core/lite'
import type { Context } from 'hono'
import type { ConnInfo } from 'hono/conninfo'

/** Sets the name/value pairs of `sink` on Hono's context (its response, or the one to come). */
export function copyHeaders(c: Context, sink: readonly string[]): void {
  for (let i = 0; i < sink.length; i += 2) c.header(sink[i] as string, sink[i + 1] as string)
}

/** After the handlers: a handler that returned a Response of its own dropped the headers: set them again. */
export function reapplyHeaders(c: Context, sink: readonly string[]): void {
  if (sink.length > 0 && c.res.headers.get(sink[0] as string) === null) {
    const res = new Response(c.res.body, c.res)
    for (let i = 0; i < sink.length; i += 2) res.headers.set(sink[i] as string, sink[i + 1] as string)
    c.res = res
  }
}

/** What @hono/node-server passes in `env`: Node's request and response. */
export interface NodeBindings {
  incoming?: { socket?: { remoteAddress?: string } }
  outgoing?: {
    setHeader?: (name: string, value: string) => unknown
    once?: (event: string, listener: () => void) => unknown
  }
}

/** Node's request and response on @hono/node-server, or `undefined` elsewhere. */
export function nodeBindings(c: Context): NodeBindings | undefined {
  const env = c.env as (NodeBindings & { server?: NodeBindings }) | undefined
  if (typeof env !== 'object' || env === null) return undefined
  return env.incoming !== undefined ? env : env.server
}

/** The peer address on @hono/node-server, which passes Node's request as `env.incoming`. */
export function nodeRemoteAddress(c: Context): string | undefined {
  return nodeBindings(c)?.incoming?.socket?.remoteAddress
}

/**
 * How both middlewares read a Hono request: the client's address (through `getConnInfo` when given,
 * else Node's socket on @hono/node-server), headers and method. Checks `getConnInfo`.
 */
export function honoRequest(options: { readonly getConnInfo?: (c: Context) => ConnInfo } | undefined) {
  const getConnInfo = options?.getConnInfo
  if (getConnInfo !== undefined && typeof getConnInfo !== 'function') {
    throw new ConfigError(
      "[fastlimit] [hono] getConnInfo must be Hono's getConnInfo helper of your runtime, e.g. import { getConnInfo } from 'hono/bun'.",
    )
  }
  return {
    name: 'hono',
    extraOptions: ['handler', 'getConnInfo'],
    requestName: 'c',
    noAddressHint: 'getConnInfo from your runtime (hono/bun, hono/deno, ...)',
    remoteAddress:
      getConnInfo === undefined
        ? nodeRemoteAddress
        : (c: Context) => getConnInfo(c).remote.address ?? nodeRemoteAddress(c),
    header: (c: Context, name: string): string | undefined => c.req.header(name),
    method: (c: Context): string => c.req.method,
  }
}
