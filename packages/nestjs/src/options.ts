// The module's options and injection tokens.

import type { Backend, RateLimitCommonOptions, RuleSet, RulesInput } from '@fastlimit/core'
import type { ModuleMetadata } from '@nestjs/common'

/**
 * The request the option functions (`key`, `cost`, `skip`, `message`, `onLimit`) receive: the
 * platform's own request, an Express `Request` or a Fastify `FastifyRequest` (for GraphQL, the
 * request behind the operation). Both have `headers`, `ip`, `method`, and whatever your auth put
 * there (`req.user`).
 */
// biome-ignore lint/suspicious/noExplicitAny: the platform decides; annotate the parameter with yours.
export type RateLimitRequest = any

/**
 * The platform's response, as `countWhen` and `settle` get it: an Express `Response` or a Fastify
 * `FastifyReply` (both have `statusCode` and `getHeader`).
 */
// biome-ignore lint/suspicious/noExplicitAny: the platform decides; annotate the parameter with yours.
export type RateLimitResponse = any

/**
 * The options of one limit: what every fastlimit adapter takes. In `forRoot` they are the
 * defaults of every route; in `@RateLimit(rules, options)` they replace them for a controller or a
 * handler.
 */
export type RateLimitOptions = RateLimitCommonOptions<RateLimitRequest, RateLimitResponse>

/** Options of {@link FastLimitModule.forRoot}: the default limit, and how the module installs itself. */
export interface FastLimitModuleOptions extends RateLimitOptions {
  /**
   * Where counts live when no `limiter` is given: the module builds `new FastLimit({ backend })` on
   * it (and closes that limiter, not your backend, when the app shuts down). Give `limiter` instead
   * to set the error policy, timeout or breaker yourself.
   * @default an in-memory backend
   */
  backend?: Backend
  /**
   * Installs the guard for every route of the app (`APP_GUARD`). `false`: apply it yourself with
   * `@UseGuards(FastLimitGuard)` on the controllers or handlers to limit.
   * @default true
   */
  globalGuard?: boolean
  /**
   * Installs a filter (`APP_FILTER`) that answers a {@link RateLimitException} as every fastlimit
   * adapter does: the exact status, `Content-Type` and body. `false`: the exception goes through
   * Nest's exception handling like any `HttpException` (your filters, or Nest's JSON answer with the
   * problem details as its body). A filter of yours on a controller or handler always comes first.
   * @default true
   */
  exceptionFilter?: boolean
}

/** Options of {@link FastLimitModule.forRootAsync}: the limit's options from a factory. */
export interface FastLimitModuleAsyncOptions extends Pick<ModuleMetadata, 'imports'> {
  /**
   * Returns the module's options (all but `globalGuard` and `exceptionFilter`, which are needed
   * before it runs), from the providers in `inject`.
   */
  // biome-ignore lint/suspicious/noExplicitAny: the injected providers' types are the caller's.
  useFactory: (...args: any[]) => RateLimitModuleLimits | Promise<RateLimitModuleLimits>
  /**
   * Providers whose instances `useFactory` receives, in order (e.g. `[ConfigService]`).
   * @default []
   */
  // biome-ignore lint/suspicious/noExplicitAny: Nest's own type for injection tokens.
  inject?: any[]
  /** See {@link FastLimitModuleOptions.globalGuard}. @default true */
  globalGuard?: boolean
  /** See {@link FastLimitModuleOptions.exceptionFilter}. @default true */
  exceptionFilter?: boolean
}

/** What `forRootAsync`'s factory returns: the module's options but `globalGuard` and `exceptionFilter`. */
export type RateLimitModuleLimits = Omit<FastLimitModuleOptions, 'globalGuard' | 'exceptionFilter'>

/** The options of `@RateLimit(rules, options)`: a limit's options, the rules given apart. */
export type RateLimitDecoratorOptions = Omit<RateLimitOptions, 'rules'>

/** What `@RateLimit` records on a controller or handler. */
export interface RateLimitMetadata {
  /** The rules. */
  readonly rules: RulesInput | RuleSet
  /** The other options. */
  readonly options: RateLimitDecoratorOptions
  /** Where it was declared (`CatsController` or `CatsController.create`): the scope when none is given. */
  readonly origin: string
}

/** Injection token of the module's options (the default limit). */
export const FASTLIMIT_OPTIONS: unique symbol = Symbol('fastlimit:options')

/** Injection token of the `FastLimit` every limit of the module uses (also provided as `FastLimit`). */
export const FASTLIMIT_LIMITER: unique symbol = Symbol('fastlimit:limiter')

/** Metadata key of `@RateLimit`. */
export const RATE_LIMIT_METADATA = 'fastlimit:rate-limit'

/** Metadata key of every `@RateLimit` on a handler or controller, in the order written (stacked limits). */
export const RATE_LIMITS_METADATA = 'fastlimit:rate-limits'

/** Metadata key of `@SkipRateLimit`. */
export const SKIP_RATE_LIMIT_METADATA = 'fastlimit:skip'
