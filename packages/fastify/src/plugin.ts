// The rateLimit plugin for Fastify 4 and 5: translates Fastify's request and reply; core's HTTP layer does the rest.

import {
  ConfigError,
  checkHandler,
  closeSignal,
  createHttpLimiter,
  type Decision,
  FastLimit,
  type HttpDenial,
  type HttpInvalidCost,
  onResponseClose,
  type RateLimitCommonOptions,
  type RateLimitHandle,
  type RateLimitInfo,
  rateLimitHandleOf,
} from '@fastlimit/core'
import type {
  FastifyInstance,
  FastifyPluginCallback,
  FastifyReply,
  FastifyRequest,
  HookHandlerDoneFunction,
  onRequestHookHandler,
  RouteOptions,
} from 'fastify'
import { fastifyPlugin } from 'fastify-plugin'
import { scopeFor } from './scope'

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * What the last fastlimit limit that counted this request found: `remaining`, `resetMs`, the
     * rule, `reset()` and `peek()` of the bucket, and `all` for every limit that counted it.
     * `undefined` when none did (skipped, allow-listed, exempt route).
     */
    rateLimit?: RateLimitInfo
    /**
     * The limit this request was counted against, to reset it (after a successful login) or peek at
     * it later in the request. `undefined` when the request was not counted.
     * @deprecated use `request.rateLimit`, which has `identity`, `scope`, `reset()` and `peek()`
     */
    readonly rateLimitHandle?: RateLimitHandle
  }
  interface FastifyContextConfig {
    /**
     * This route's limit: options that replace the plugin's for this route (`rules`, `key`, `cost`,
     * `skip`, `scope`, ...; the others are inherited), `true` for the plugin's own limit (with
     * `global: false`), or `false` to exempt the route. A route's own limit counts apart from every
     * other, under a scope named after the route (`POST /login`), unless it gives a `scope`: routes
     * with the same `scope` and rules share one count.
     * @default the plugin's limit (with `global: true`), whose count every such route shares
     */
    rateLimit?: RouteRateLimitOptions | boolean
  }
  interface FastifyInstance {
    /**
     * Builds a hook that limits with the plugin's options, overridden by `options`: for routes the
     * plugin does not see (`setNotFoundHandler({ preHandler: fastify.rateLimit() }, ...)`) or a second
     * limit on a route (`{ onRequest: fastify.rateLimit({ scope: 'burst', rules: '5/s' }) }`).
     * Options are checked now: a bad one throws a `ConfigError`. The hook has `reset(request)` and
     * `peek(request)` for the bucket a request is counted in by it.
     */
    rateLimit(options?: RouteRateLimitOptions): RateLimitHookHandler
  }
}

/**
 * A limit's hook, as `fastify.rateLimit(options)` returns it: add it to a route's hooks, and reset
 * or peek at the bucket a request is counted in by it.
 *
 * @example
 * ```ts
 * const loginLimit = app.rateLimit({ scope: 'login', rules: '5/15m' })
 * app.post('/login', { onRequest: loginLimit }, async (request, reply) => {
 *   if (!(await checkPassword(request.body))) return reply.code(401).send()
 *   await loginLimit.reset(request) // or request.rateLimit?.reset()
 *   return { ok: true }
 * })
 * ```
 */
export type RateLimitHookHandler = onRequestHookHandler & {
  /**
   * Forgets the bucket `request` was counted in by this limit (after a successful login, say): the
   * identity it counted the request under, or would (its client address, or what `key` returns),
   * under every rule of the limiter in the limit's scope. Resolves without doing anything for an
   * allow-listed client; rejects when the store fails or `key` throws.
   */
  reset(request: FastifyRequest): Promise<void>
  /**
   * Reads the bucket `request` is counted in by this limit, without charging anything (`cost` 0;
   * `allowed`: would a request of cost 1 pass). `undefined` for an allow-listed client.
   */
  peek(request: FastifyRequest): Promise<RateLimitInfo | undefined>
}

/** The hook stages the limit can run at. */
export type RateLimitHook = 'onRequest' | 'preValidation' | 'preHandler'

/**
 * Options of the {@link rateLimit} plugin: the options every fastlimit adapter takes, plus `global`,
 * `hook`, `handler`, and `trustProxy: 'fastify'`.
 */
export interface RateLimitOptions
  extends Omit<RateLimitCommonOptions<FastifyRequest, FastifyReply>, 'trustProxy'> {
  /**
   * Whether every route the plugin sees is limited. `false` limits only the routes whose
   * `config.rateLimit` is `true` or an options object.
   * @default true
   */
  global?: boolean
  /**
   * When the limit runs: `'onRequest'` (the earliest and cheapest: before the body is read),
   * `'preValidation'` (after the body is parsed, so `key` or `cost` can read `request.body`), or
   * `'preHandler'` (after validation and any auth hooks, so `key` can read `request.user`).
   * @default 'onRequest'
   */
  hook?: RateLimitHook
  /**
   * Sends the refusal yourself instead of `statusCode` and `message` (`reply.code(...).send(...)`).
   * The RateLimit headers and `Retry-After` are already set. If it returns without sending, the
   * default refusal is sent; errors it throws go to Fastify's error handler.
   * @default undefined: answers `statusCode` with `message`
   */
  handler?: (request: FastifyRequest, reply: FastifyReply, decision: Decision) => void | Promise<void>
  /**
   * Which proxies in front of the app to believe about the client's address, as in every fastlimit
   * adapter (`false`, a number of hops, or a list of addresses and CIDRs, read from the connection's
   * peer and `proxyHeader`), or `'fastify'`: use `request.ip`, which Fastify finds by its own
   * `trustProxy` server option (opt in only if you configured that).
   * @default false: the client is the connection's peer; forwarding headers are ignored
   */
  trustProxy?: RateLimitCommonOptions<FastifyRequest, FastifyReply>['trustProxy'] | 'fastify'
}

/** The options of one route's limit (`config.rateLimit`): the plugin's options but `global`. */
export type RouteRateLimitOptions = Omit<RateLimitOptions, 'global'>

/** Options Fastify itself reads from `register(plugin, options)`: not ours to check. */
const REGISTER_OPTIONS = ['prefix', 'logLevel', 'logSerializers'] as const

const HOOKS: readonly RateLimitHook[] = ['onRequest', 'preValidation', 'preHandler']

/** Marks our `fastify.rateLimit`, to tell it from another plugin's. */
const OURS = Symbol.for('fastlimit.fastify.rateLimit')

type Done = (err?: unknown) => void

/** What the adapter reads and writes. */
function adapterFor(fromFastify: boolean) {
  return {
    name: 'fastify',
    // `hook` and `global` are taken out before core sees the options; listed for its error message.
    extraOptions: ['handler', 'hook', 'global'],
    // The connection's peer, never request.ip (which follows Fastify's trustProxy), unless asked.
    remoteAddress: fromFastify
      ? (request: FastifyRequest): string | undefined => request.ip
      : (request: FastifyRequest): string | undefined => request.raw.socket?.remoteAddress,
    header: (request: FastifyRequest, name: string): string | undefined => {
      const value = request.headers[name]
      return typeof value === 'string' ? value : Array.isArray(value) ? value.join(', ') : undefined
    },
    method: (request: FastifyRequest): string => request.method,
    setHeader: (reply: FastifyReply, name: string, value: string): void => {
      reply.header(name, value)
    },
    attach: (request: FastifyRequest, _reply: FastifyReply, info: RateLimitInfo): void => {
      request.rateLimit = info
    },
    attached: (request: FastifyRequest): RateLimitInfo | undefined => request.rateLimit,
    noAddressHint: "trustProxy: 'fastify' to use request.ip",
    // The concurrency option's slot is released once the response is sent or the client went away.
    onFinished: (_request: FastifyRequest, reply: FastifyReply, done: () => void): void => {
      reply.raw.once('finish', done)
      reply.raw.once('close', done)
    },
    // mode: 'delay' drops a held request whose client has gone.
    signal: (_request: FastifyRequest, reply: FastifyReply): AbortSignal => closeSignal(reply.raw),
    // countWhen and settle: decided when Node's response closes (sent, or the client gone).
    responseEnd: (_request: FastifyRequest, reply: FastifyReply, end: () => void): void =>
      onResponseClose(reply.raw, end),
  }
}

function sendDenial(
  _request: FastifyRequest,
  reply: FastifyReply,
  denial: HttpDenial | HttpInvalidCost,
): void {
  // A Buffer, so Fastify sends the content type as given (it appends a charset to JSON types for strings).
  reply.code(denial.status).header('content-type', denial.contentType).send(Buffer.from(denial.body))
}

function denyWith(handler: NonNullable<RateLimitOptions['handler']>) {
  return async (request: FastifyRequest, reply: FastifyReply, denial: HttpDenial, next: () => void) => {
    try {
      await handler(request, reply, denial.decision)
      if (!reply.sent) sendDenial(request, reply, denial)
    } catch (err) {
      ;(next as Done)(err)
    }
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return 'a function'
  if (Array.isArray(value)) return 'an array'
  return String(value)
}

/** A compiled limit: its hook function and the stage it runs at. */
interface Compiled {
  readonly fn: RateLimitHookHandler
  readonly hook: RateLimitHook
}

/** Compiles options into a hook. */
function compiler() {
  return (options: RouteRateLimitOptions): Compiled => {
    const { hook = 'onRequest', trustProxy, limiter, ...rest } = options
    if (!HOOKS.includes(hook)) {
      throw new ConfigError(
        `[fastlimit] [fastify] hook must be 'onRequest', 'preValidation' or 'preHandler', got ${show(hook)}.`,
      )
    }
    const handler = checkHandler(options, 'fastify', '(request, reply, decision) => void')
    // Anything that is not a limiter is left for core to refuse with its own message.
    const fromFastify = trustProxy === 'fastify'
    const common: RateLimitCommonOptions<FastifyRequest, FastifyReply> = {
      ...rest,
      limiter: limiter ?? new FastLimit(),
    }
    if (!fromFastify && trustProxy !== undefined) common.trustProxy = trustProxy
    const http = createHttpLimiter(common, adapterFor(fromFastify))
    const deny = handler === undefined ? sendDenial : denyWith(handler)
    const hookFn: onRequestHookHandler = function fastlimit(request, reply, done) {
      void http.run<void>(
        request,
        reply,
        done as () => void,
        deny,
        done as HookHandlerDoneFunction as Done,
        sendDenial,
      )
    }
    const fn = Object.assign(hookFn, {
      reset: (request: FastifyRequest) => http.reset(request),
      peek: (request: FastifyRequest) => http.peek(request),
    })
    return { fn, hook }
  }
}

function routeName(route: RouteOptions): string {
  const method = Array.isArray(route.method) ? route.method.join(',') : route.method
  return `${method} ${route.url}`
}

/** Adds `fn` to the route's hooks of its stage, after the route's own (once: not if the route already has it). */
function attach(route: RouteOptions, compiled: Compiled): void {
  const hooks = route as unknown as Record<RateLimitHook, unknown>
  const existing = hooks[compiled.hook]
  if (existing === compiled.fn || (Array.isArray(existing) && existing.includes(compiled.fn))) return
  hooks[compiled.hook] =
    existing === undefined || existing === null
      ? [compiled.fn]
      : Array.isArray(existing)
        ? [...existing, compiled.fn]
        : [existing, compiled.fn]
}

/** Takes `compiled.fn` out of the route's hooks of its stage. */
function detach(route: RouteOptions, compiled: Compiled): void {
  const hooks = route as unknown as Record<RateLimitHook, unknown>
  const existing = hooks[compiled.hook]
  if (Array.isArray(existing)) hooks[compiled.hook] = existing.filter((fn) => fn !== compiled.fn)
}

/**
 * The route-level limit attached to each route: when the plugin is registered in a context and again
 * in one below it, both see the route's `config.rateLimit`; the innermost (the last to see it) wins,
 * so the route's own limit is counted once.
 */
const routeLimits = new WeakMap<RouteOptions, Compiled>()

const plugin: FastifyPluginCallback<RateLimitOptions> = (fastify, options, done) => {
  let compile: (options: RouteRateLimitOptions) => Compiled
  let app: Compiled
  let global: boolean
  let owned: FastLimit | undefined
  try {
    if (!isPlainObject(options)) {
      throw new ConfigError(
        `[fastlimit] [fastify] register(rateLimit, options) takes an options object, got ${show(options)}: e.g. { rules: '100/min' }.`,
      )
    }
    const base: Record<string, unknown> = { ...options }
    for (const name of REGISTER_OPTIONS) delete base[name]
    global = (base.global as boolean | undefined) ?? true
    delete base.global
    if (typeof global !== 'boolean') {
      throw new ConfigError(`[fastlimit] [fastify] global must be true or false, got ${show(global)}.`)
    }
    if (base.limiter === undefined) {
      owned = new FastLimit()
      base.limiter = owned
    }
    const compileOne = compiler()
    compile = (route) => compileOne({ ...(base as RouteRateLimitOptions), ...route })
    app = compile({})
  } catch (err) {
    done(err as Error)
    return
  }

  if (!fastify.hasRequestDecorator('rateLimit')) fastify.decorateRequest('rateLimit', undefined)
  if (!fastify.hasRequestDecorator('rateLimitHandle')) {
    // Deprecated: a view of request.rateLimit, built only when read.
    fastify.decorateRequest('rateLimitHandle', {
      getter(this: FastifyRequest): RateLimitHandle | undefined {
        const info = this.rateLimit
        return info === undefined ? undefined : rateLimitHandleOf(info)
      },
    } as never)
  }
  // fastify.rateLimit(): the first registration in a context keeps it; another plugin's is an error.
  const existing = Object.hasOwn(fastify, 'rateLimit')
    ? (fastify as { rateLimit?: unknown }).rateLimit
    : undefined
  if (existing !== undefined && (existing as { [OURS]?: boolean })[OURS] !== true) {
    done(
      new ConfigError(
        '[fastlimit] [fastify] fastify.rateLimit is already decorated by another plugin (@fastify/rate-limit?) in this context: register one rate limit plugin per context.',
      ),
    )
    return
  }
  if (existing === undefined) {
    const decorator = (options?: RouteRateLimitOptions) => {
      if (options !== undefined && !isPlainObject(options)) {
        throw new ConfigError(
          `[fastlimit] [fastify] fastify.rateLimit(options) takes an options object, got ${show(options)}.`,
        )
      }
      return options === undefined ? app.fn : compile(options).fn
    }
    Object.defineProperty(decorator, OURS, { value: true })
    // Cast: with @fastify/rate-limit's types in the same program, fastify.rateLimit has its overload too.
    fastify.decorate('rateLimit', decorator as never)
  }

  // One compiled limit per route options object (a GET route and its HEAD twin share it).
  const compiled = new WeakMap<object, Compiled>()
  fastify.addHook('onRoute', (route) => {
    const config = (route.config as { rateLimit?: unknown } | undefined)?.rateLimit
    if (config === false) return
    if (config === undefined || config === null) {
      if (global) attach(route, app)
      return
    }
    if (config === true) {
      attach(route, app)
      return
    }
    if (!isPlainObject(config)) {
      throw new ConfigError(
        `[fastlimit] [fastify] config.rateLimit of ${routeName(route)} must be an options object, true or false, got ${show(config)}.`,
      )
    }
    let c = compiled.get(config)
    if (c === undefined) {
      // A route's own limit counts apart from every other unless it names a scope to share.
      const own = config as RouteRateLimitOptions
      try {
        c = compile(own.scope === undefined ? { ...own, scope: scopeFor(routeName(route)) } : own)
      } catch (err) {
        // Name the route: `[fastlimit] [fastify] GET /login: Rule "5/fortnight": ...`.
        if (err instanceof ConfigError) {
          err.message = err.message.replace(
            /^\[fastlimit\] \[[a-z]+\] /,
            `[fastlimit] [fastify] ${routeName(route)}: `,
          )
        }
        throw err
      }
      compiled.set(config, c)
    }
    const previous = routeLimits.get(route)
    if (previous !== undefined) detach(route, previous)
    routeLimits.set(route, c)
    attach(route, c)
  })

  if (owned !== undefined) {
    const limiter = owned
    fastify.addHook('onClose', (_instance: FastifyInstance, closed: HookHandlerDoneFunction) => {
      limiter.close().then(() => closed(), closed)
    })
  }
  done()
}

/**
 * The fastlimit plugin for Fastify 4 and 5: limits every route registered after it in its context
 * and the contexts below (it is not encapsulated, through `fastify-plugin`), on `onRequest` by
 * default. Options apply app-wide; a route's `config.rateLimit` replaces them for that route, or
 * exempts it with `false`. Options are checked at registration: a bad one fails `register` with a
 * `ConfigError`, and a bad `config.rateLimit` fails the route's registration. Handlers find what
 * the limit found in `request.rateLimit` (a `RateLimitInfo`, with `reset()` and `peek()`).
 *
 * @example
 * ```ts
 * import Fastify from 'fastify'
 * import { rateLimit } from '@fastlimit/fastify'
 *
 * const app = Fastify()
 * await app.register(rateLimit, { rules: '100/min' })
 * app.post('/login', { config: { rateLimit: { scope: 'login', rules: '5/15m' } } }, login)
 * app.get('/health', { config: { rateLimit: false } }, () => 'ok')
 * ```
 */
export const rateLimit: FastifyPluginCallback<RateLimitOptions> = fastifyPlugin(plugin, {
  fastify: '4.x || 5.x',
  name: '@fastlimit/fastify',
})
