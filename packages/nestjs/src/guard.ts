// The guard: finds the limit of the handler (its @RateLimit, its controller's, or the module's) and applies it.

import {
  type ClosableResponse,
  ConfigError,
  closeSignal,
  createHttpLimiter,
  FastLimit,
  type HttpDenial,
  type HttpInvalidCost,
  type HttpLimiter,
  isRequestAborted,
  onResponseClose,
  type RateLimitCommonOptions,
  type RateLimitInfo,
  rateLimitHandleOf,
} from '@fastlimit/core'
import { type CanActivate, type ExecutionContext, HttpException, Inject, Injectable } from '@nestjs/common'
import { Reflector } from '@nestjs/core'
import { requestOf, responseOf, setHeader } from './context'
import { InvalidCostException, RateLimitException } from './exception'
import {
  FASTLIMIT_LIMITER,
  FASTLIMIT_OPTIONS,
  type FastLimitModuleOptions,
  RATE_LIMIT_METADATA,
  RATE_LIMITS_METADATA,
  type RateLimitMetadata,
  type RateLimitOptions,
  type RateLimitRequest,
  type RateLimitResponse,
  SKIP_RATE_LIMIT_METADATA,
} from './options'
import { scopeFor } from './scope'

/** Module options that are not a limit's: taken out before core checks the rest. */
const MODULE_ONLY = ['backend', 'globalGuard', 'exceptionFilter'] as const

/** What the guards of one module (one options object) have compiled. */
interface Compiled {
  readonly declared: WeakMap<RateLimitMetadata, HttpLimiter<RateLimitRequest, unknown>>
  readonly default: HttpLimiter<RateLimitRequest, unknown>
}
const compiledBy = new WeakMap<object, Compiled>()

/** On the platform request: the limits that counted it, each with its answer (`[limit, answer, ...]`). */
const COUNTED = Symbol('fastlimit.counted')

function allow(): boolean {
  return true
}

/**
 * Errors go to Nest's exception handling; a request whose client left while held (mode 'delay') as an
 * `HttpException` 499, which Nest answers (to no one) without logging it as a server error.
 */
function fail(err: unknown): never {
  if (isRequestAborted(err)) throw new HttpException('Client Closed Request', 499, { cause: err })
  throw err
}

function deny(_req: unknown, _res: unknown, denial: HttpDenial): never {
  throw new RateLimitException(denial)
}

/** A request whose cost is unusable: 400, as an exception the module's filter sends. */
function invalid(_req: unknown, _res: unknown, refusal: HttpInvalidCost): never {
  throw new InvalidCostException(refusal)
}

/** Compiles one limit's options into the HTTP layer's limiter, with the Nest adapter. */
function buildLimit(options: RateLimitOptions): HttpLimiter<RateLimitRequest, unknown> {
  const real = options.limiter as FastLimit
  // Anything that is not a limiter is left for core to refuse with its own message.
  if (typeof (real as Partial<FastLimit> | undefined)?.check !== 'function') {
    return createHttpLimiter(options, {
      name: 'nestjs',
      remoteAddress: () => undefined,
      header: () => undefined,
      method: () => 'GET',
      setHeader,
    })
  }
  const adapter = {
    name: 'nestjs',
    extraOptions: MODULE_ONLY,
    remoteAddress: (req: RateLimitRequest): string | undefined => req.socket?.remoteAddress,
    header: (req: RateLimitRequest, name: string): string | undefined => {
      const value = req.headers?.[name]
      return typeof value === 'string' ? value : Array.isArray(value) ? value.join(', ') : undefined
    },
    method: (req: RateLimitRequest): string => req.method,
    setHeader,
    // countWhen and settle: decided when Node's response closes (Express res, or a Fastify reply's raw).
    // Without an HTTP response (not over HTTP), the reservation stays as charged.
    responseEnd: (_req: RateLimitRequest, res: RateLimitResponse, end: () => void): void => {
      const raw = res?.raw ?? res
      if (typeof raw?.on === 'function') onResponseClose(raw, end)
    },
    // concurrency: the slot goes back when Node's response is done (sent, or the client gone). A
    // context without one (no HTTP response to watch) throws: the HTTP layer then releases the
    // slot when the guard has decided, as it does for adapters that cannot tell.
    onFinished: (_req: RateLimitRequest, res: RateLimitResponse, done: () => void): void => {
      const raw = res?.raw ?? res
      if (typeof raw?.once !== 'function') throw new TypeError('no Node response to watch')
      if (raw.closed === true) {
        done()
        return
      }
      let pending = true
      const once = (): void => {
        if (!pending) return
        pending = false
        done()
      }
      raw.once('finish', once)
      raw.once('close', once)
    },
    // req.rateLimit: the RateLimitInfo of the last limit that counted the request (with all of them
    // in `all`); req.rateLimitHandle: its deprecated view.
    attach: (req: RateLimitRequest, _res: unknown, info: RateLimitInfo): void => {
      req.rateLimit = info
      req.rateLimitHandle = rateLimitHandleOf(info)
    },
    attached: (req: RateLimitRequest): RateLimitInfo | undefined => req.rateLimit,
    // mode: 'delay' drops a held request whose client has gone (a Node response, or a Fastify reply's).
    signal: (_req: RateLimitRequest, res: unknown): AbortSignal | undefined => {
      const raw = (res as { raw?: unknown } | undefined)?.raw ?? res
      return typeof (raw as ClosableResponse | undefined)?.once === 'function'
        ? closeSignal(raw as ClosableResponse)
        : undefined
    },
  }
  const common: RateLimitCommonOptions<RateLimitRequest, RateLimitResponse> = options
  return createHttpLimiter(common, adapter)
}

/**
 * Counts `req` against `http`, once per limit: the guard run again for it (global and @UseGuards
 * both, several resolvers of one GraphQL operation) answers as the first run did.
 */
function count(
  req: RateLimitRequest,
  context: ExecutionContext,
  http: HttpLimiter<RateLimitRequest, unknown>,
): boolean | Promise<boolean> {
  const memo: unknown[] | undefined = req[COUNTED]
  if (memo !== undefined) {
    for (let i = 0; i < memo.length; i += 2) if (memo[i] === http) return memo[i + 1] as Promise<boolean>
  }
  const result = http.run<boolean>(req, responseOf(context), allow, deny, fail, invalid)
  if (memo === undefined) req[COUNTED] = [http, result]
  else memo.push(http, result)
  return result
}

type Target = Function

/**
 * Limits the requests of every handler it guards: with the handler's `@RateLimit`, else its
 * controller's, else the module's options; `@SkipRateLimit` exempts. Installed for the whole app by
 * `FastLimitModule` unless `globalGuard: false`; then use `@UseGuards(FastLimitGuard)`. Works on the
 * Express and Fastify platforms and for GraphQL resolvers; other contexts (microservices,
 * websockets) pass. A refused request throws a {@link RateLimitException}; errors of `key`, `cost`
 * or `skip`, or of the backend under `onBackendError: 'throw'`, go to Nest's exception handling.
 */
export class FastLimitGuard implements CanActivate {
  readonly #reflector: Reflector
  readonly #base: RateLimitOptions
  readonly #default: HttpLimiter<RateLimitRequest, unknown>
  readonly #declared: WeakMap<RateLimitMetadata, HttpLimiter<RateLimitRequest, unknown>>
  readonly #limits = new Map<Target, Map<Target, readonly HttpLimiter<RateLimitRequest, unknown>[] | null>>()

  constructor(reflector: Reflector, options: FastLimitModuleOptions, limiter: FastLimit) {
    this.#reflector = reflector
    const base: Record<string, unknown> = { ...options, limiter }
    for (const name of MODULE_ONLY) delete base[name]
    this.#base = base as RateLimitOptions
    // Guards of one module (the global one, those of @UseGuards) share their compiled limits, so a
    // request they both check is recognized as counted.
    let shared = compiledBy.get(options)
    if (shared === undefined) {
      this.#declared = new WeakMap()
      this.#default = this.#build(this.#base)
      shared = { declared: this.#declared, default: this.#default }
      compiledBy.set(options, shared)
    } else {
      this.#declared = shared.declared
      this.#default = shared.default
    }
  }

  /** Decides one request; rejects with a {@link RateLimitException} when it is refused. */
  canActivate(context: ExecutionContext): boolean | Promise<boolean> {
    const req = requestOf(context)
    if (req === undefined || req === null) return true
    const limits = this.#limitOf(context.getHandler(), context.getClass())
    if (limits === null) return true
    if (limits.length === 1) return count(req, context, limits[0] as HttpLimiter<RateLimitRequest, unknown>)
    return this.#countAll(req, context, limits)
  }

  /** Stacked `@RateLimit`s: counted in the order written; the first refusal stops the rest. */
  async #countAll(
    req: RateLimitRequest,
    context: ExecutionContext,
    limits: readonly HttpLimiter<RateLimitRequest, unknown>[],
  ): Promise<boolean> {
    for (const http of limits) if (!(await count(req, context, http))) return false
    return true
  }

  #limitOf(handler: Target, controller: Target): readonly HttpLimiter<RateLimitRequest, unknown>[] | null {
    let byController = this.#limits.get(handler)
    if (byController === undefined) {
      byController = new Map()
      this.#limits.set(handler, byController)
    }
    let http = byController.get(controller)
    if (http === undefined) {
      http = this.#resolve(handler, controller)
      byController.set(controller, http)
    }
    return http
  }

  #resolve(handler: Target, controller: Target): readonly HttpLimiter<RateLimitRequest, unknown>[] | null {
    for (const target of [handler, controller]) {
      if (this.#reflector.get<boolean | undefined>(SKIP_RATE_LIMIT_METADATA, target) === true) return null
      const single = this.#reflector.get<RateLimitMetadata | undefined>(RATE_LIMIT_METADATA, target)
      if (single === undefined) continue
      const stacked = this.#reflector.get<RateLimitMetadata[] | undefined>(RATE_LIMITS_METADATA, target)
      return (stacked ?? [single]).map((declared) => this.#declaredLimit(declared))
    }
    return [this.#default]
  }

  /** The compiled limit of one `@RateLimit`, shared by every guard of the module. */
  #declaredLimit(declared: RateLimitMetadata): HttpLimiter<RateLimitRequest, unknown> {
    let http = this.#declared.get(declared)
    if (http === undefined) {
      http = this.#build({
        ...this.#base,
        ...declared.options,
        rules: declared.rules,
        scope: declared.options.scope ?? scopeFor(declared.origin),
      })
      this.#declared.set(declared, http)
    }
    return http
  }

  #build(options: RateLimitOptions): HttpLimiter<RateLimitRequest, unknown> {
    return buildLimit(options)
  }
}

/**
 * A limit of its own, as a guard instance: `@UseGuards(loginLimit)` on a controller or handler counts
 * its requests on top of the module's guard (which, global, runs first), and `reset(req)` /
 * `peek(req)` reach the bucket a request is counted in by it. Built by {@link rateLimitGuard}.
 */
export class RateLimitGuard implements CanActivate {
  readonly #http: HttpLimiter<RateLimitRequest, unknown>

  /** Prefer {@link rateLimitGuard}. Options are checked now: a bad one throws a `ConfigError`. */
  constructor(options: RateLimitOptions = {}) {
    for (const name of MODULE_ONLY) {
      if (typeof options === 'object' && options !== null && Object.hasOwn(options, name)) {
        throw new ConfigError(
          `[fastlimit] [nestjs] rateLimitGuard() takes a limit's options, not the module's: ${name} belongs in FastLimitModule.forRoot (give a limiter instead of a backend).`,
        )
      }
    }
    this.#http = buildLimit({ ...options, limiter: options.limiter ?? new FastLimit() })
  }

  /** Decides one request; rejects with a {@link RateLimitException} when it is refused. */
  canActivate(context: ExecutionContext): boolean | Promise<boolean> {
    const req = requestOf(context)
    if (req === undefined || req === null) return true
    return count(req, context, this.#http)
  }

  /**
   * Forgets the bucket `req` was counted in by this limit (after a successful login, say): the
   * identity it counted the request under, or would (its client address, or what `key` returns),
   * under every rule of the limiter in the limit's scope. Resolves without doing anything for an
   * allow-listed client; rejects when the store fails or `key` throws.
   */
  reset(req: RateLimitRequest): Promise<void> {
    return this.#http.reset(req)
  }

  /**
   * Reads the bucket `req` is counted in by this limit, without charging anything (`cost` 0;
   * `allowed`: would a request of cost 1 pass). `undefined` for an allow-listed client.
   */
  peek(req: RateLimitRequest): Promise<RateLimitInfo | undefined> {
    return this.#http.peek(req)
  }
}

/**
 * Builds a {@link RateLimitGuard}: a limit with options of its own (not the module's; without a
 * `limiter`, an in-memory one), to apply with `@UseGuards` on top of the module's guard, with
 * `reset(req)` and `peek(req)`. Options are checked now: a bad one throws a `ConfigError`.
 *
 * @example
 * ```ts
 * const loginLimit = rateLimitGuard({ limiter, rules: '5/15m', scope: 'login' })
 *
 * @Controller()
 * class AuthController {
 *   @Post('login')
 *   @UseGuards(loginLimit)
 *   async login(@Body() body: Credentials, @Req() req: Request) {
 *     const user = await this.auth.check(body)
 *     if (!user) throw new UnauthorizedException()
 *     await loginLimit.reset(req) // or, with @RateLimitInfo() limit: limit?.reset()
 *     return user
 *   }
 * }
 * ```
 */
export function rateLimitGuard(options: RateLimitOptions = {}): RateLimitGuard {
  return new RateLimitGuard(options)
}

// Decorators applied as calls: the source then compiles without experimentalDecorators (tsx, vitest),
// and explicit tokens need no emitted design-type metadata.
Injectable()(FastLimitGuard)
Inject(Reflector)(FastLimitGuard, undefined, 0)
Inject(FASTLIMIT_OPTIONS)(FastLimitGuard, undefined, 1)
Inject(FASTLIMIT_LIMITER)(FastLimitGuard, undefined, 2)
