// @RateLimit, @SkipRateLimit, and the parameter decorators that hand a handler its decision and handle.

import {
  createHttpLimiter,
  type Decision,
  FastLimit,
  type RateLimitHandle as Handle,
  type RateLimitInfo as Info,
  type RuleSet,
  type RulesInput,
} from '@fastlimit/core'
import { createParamDecorator, type ExecutionContext, SetMetadata } from '@nestjs/common'
import { requestOf } from './context'
import {
  RATE_LIMIT_METADATA,
  RATE_LIMITS_METADATA,
  type RateLimitDecoratorOptions,
  type RateLimitMetadata,
  SKIP_RATE_LIMIT_METADATA,
} from './options'

/** Only checks options: never asked to decide. */
let checker: FastLimit | undefined

const noAdapter = {
  name: 'nestjs',
  remoteAddress: () => undefined,
  header: () => undefined,
  method: () => 'GET',
  setHeader: () => {},
  // The guard tells when a response ends (the concurrency option): the check must not refuse it.
  onFinished: () => {},
}

/**
 * Limits a controller (every handler in it, counted together) or one handler, instead of the
 * module's default limit: `@RateLimit('10/s')`, `@RateLimit(['10/s', '1000/day'], { cost })`.
 * The options are those of `forRoot` (`key`, `cost`, `skip`, `scope`, `message`, ...); those not
 * given are the module's. Without a `scope`, the limit counts apart from every other, under a scope
 * named after where it is declared (`CatsController`, `CatsController.create`); give several the
 * same `scope` (and rules) to count them together. A handler's `@RateLimit` or `@SkipRateLimit`
 * wins over its controller's. Stack several on one handler (or controller) to count it in each, in
 * the order written (a route in two groups). Options are checked now: a bad one throws a `ConfigError`.
 *
 * @example
 * ```ts
 * @Controller('auth')
 * export class AuthController {
 *   @Post('login')
 *   @RateLimit({ limit: 5, window: '15m' }, { scope: 'login' })
 *   login() {}
 * }
 * ```
 */
export function RateLimit(
  rules: RulesInput | RuleSet,
  options: RateLimitDecoratorOptions = {},
): ClassDecorator & MethodDecorator {
  if (checker === undefined) checker = new FastLimit()
  createHttpLimiter({ limiter: checker, ...options, rules }, noAdapter)
  return (target: object | Function, key?: string | symbol, descriptor?: PropertyDescriptor): void => {
    const origin =
      key === undefined
        ? (target as { name: string }).name
        : `${(target as { constructor: { name: string } }).constructor.name}.${String(key)}`
    const metadata: RateLimitMetadata = { rules, options, origin }
    // Decorators apply bottom-up: the one written first is applied last, and counts first.
    const holder = descriptor === undefined ? target : descriptor.value
    const read = (Reflect as unknown as { getMetadata?: (key: string, target: object) => unknown })
      .getMetadata
    const stacked = (read?.(RATE_LIMITS_METADATA, holder) as RateLimitMetadata[] | undefined) ?? []
    SetMetadata(RATE_LIMITS_METADATA, [metadata, ...stacked])(
      target,
      key as string | symbol,
      descriptor as PropertyDescriptor,
    )
    SetMetadata(RATE_LIMIT_METADATA, metadata)(
      target,
      key as string | symbol,
      descriptor as PropertyDescriptor,
    )
  }
}

/**
 * Exempts a controller or a handler from every limit of the guard (health checks, webhooks from
 * a trusted partner). A handler's `@RateLimit` wins over its controller's `@SkipRateLimit`.
 */
export function SkipRateLimit(): ClassDecorator & MethodDecorator {
  return SetMetadata(SKIP_RATE_LIMIT_METADATA, true)
}

/**
 * Parameter decorator: the decision of the limit that checked this request (`remaining`,
 * `resetMs`, the rule...), or `undefined` when none did (skipped). Works in controllers and GraphQL
 * resolvers.
 *
 * @example
 * ```ts
 * @Get('quota')
 * quota(@RateLimitDecision() decision?: Decision) {
 *   return { remaining: decision?.remaining }
 * }
 * ```
 */
export const RateLimitDecision: () => ParameterDecorator = createParamDecorator(
  (_data: unknown, context: ExecutionContext): Decision | undefined =>
    (requestOf(context)?.rateLimit as Info | undefined)?.decision,
)

/**
 * Parameter decorator: what the last limit that counted this request found (also `req.rateLimit`),
 * a `RateLimitInfo`: `remaining`, `resetMs`, the rule, `identity` and `scope`, `reset()` and
 * `peek()` of the bucket, and `all` for every limit that counted it; `undefined` when none did.
 * Nothing is invented: when the store could not be asked (`source: 'policy'`), `remaining` and
 * `resetMs` are `undefined`.
 *
 * @example
 * ```ts
 * @Post('login')
 * @RateLimit('5/15m', { scope: 'login' })
 * async login(@Body() body: Credentials, @RateLimitInfo() limit?: RateLimitInfo) {
 *   const user = await this.auth.check(body)
 *   await limit?.reset() // a successful login clears the failed attempts
 *   return user
 * }
 * ```
 */
export const RateLimitInfo: () => ParameterDecorator = createParamDecorator(
  (_data: unknown, context: ExecutionContext): Info | undefined => requestOf(context)?.rateLimit,
)

/** What a limit found for a request: core's `RateLimitInfo`, received with {@link RateLimitInfo}. */
export type RateLimitInfo = Info

/**
 * Parameter decorator: the {@link RateLimitHandle} of the limit that counted this request (to reset
 * it after a successful login, or peek at it), or `undefined` when none did.
 * @deprecated use {@link RateLimitInfo}, which has `identity`, `scope`, `reset()` and `peek()`
 */
export const RateLimitHandle: () => ParameterDecorator = createParamDecorator(
  (_data: unknown, context: ExecutionContext): Handle | undefined => requestOf(context)?.rateLimitHandle,
)

/**
 * The limit a request was counted against: its `identity` and `scope`, `reset()` and `peek()`.
 * Received with the {@link RateLimitHandle} parameter decorator.
 * @deprecated use {@link RateLimitInfo}
 */
export type RateLimitHandle = Handle
