// FastLimitModule: the options, the limiter, the guard (global by default) and the refusal's filter.

import { FastLimit } from '@fastlimit/core'
import {
  type DynamicModule,
  Global,
  Inject,
  Module,
  type OnApplicationShutdown,
  type Provider,
} from '@nestjs/common'
import { APP_FILTER, APP_GUARD } from '@nestjs/core'
import { RateLimitExceptionFilter } from './exception'
import { FastLimitGuard } from './guard'
import {
  FASTLIMIT_LIMITER,
  FASTLIMIT_OPTIONS,
  type FastLimitModuleAsyncOptions,
  type FastLimitModuleOptions,
  type RateLimitModuleLimits,
} from './options'

/** Limiters the module built itself, and so closes when the app shuts down. */
const owned = new WeakSet<FastLimit>()

function limiterOf(options: RateLimitModuleLimits): FastLimit {
  if (options.limiter !== undefined) return options.limiter
  const limiter = new FastLimit(options.backend === undefined ? {} : { backend: options.backend })
  owned.add(limiter)
  return limiter
}

function providers(options: Provider, globalGuard: boolean, exceptionFilter: boolean): Provider[] {
  const list: Provider[] = [
    options,
    { provide: FASTLIMIT_LIMITER, useFactory: limiterOf, inject: [FASTLIMIT_OPTIONS] },
    { provide: FastLimit, useExisting: FASTLIMIT_LIMITER },
    FastLimitGuard,
  ]
  if (globalGuard) list.push({ provide: APP_GUARD, useExisting: FastLimitGuard })
  if (exceptionFilter) list.push({ provide: APP_FILTER, useClass: RateLimitExceptionFilter })
  return list
}

function flag(value: unknown, name: string): boolean {
  if (value === undefined) return true
  if (typeof value !== 'boolean') {
    throw new TypeError(`[fastlimit] [nestjs] ${name} must be true or false, got ${String(value)}.`)
  }
  return value
}

/**
 * fastlimit for NestJS 10, 11 and 12: `FastLimitModule.forRoot({ rules: '100/min' })` in your root
 * module limits every route (a global guard), `@RateLimit(...)` gives a controller or handler its
 * own limit, `@SkipRateLimit()` exempts one. The module is global: `FastLimitGuard`, the
 * `FastLimit` (by its class) and the options token can be injected anywhere. A limiter the module
 * built is closed when the app shuts down.
 *
 * @example
 * ```ts
 * @Module({
 *   imports: [FastLimitModule.forRoot({ rules: '100/min' })],
 *   controllers: [CatsController],
 * })
 * export class AppModule {}
 * ```
 */
export class FastLimitModule implements OnApplicationShutdown {
  readonly #limiter: FastLimit

  constructor(limiter: FastLimit) {
    this.#limiter = limiter
  }

  /**
   * The module with options known now: the default limit of every route (`rules`, `key`, `limiter`
   * or `backend`, ...), `globalGuard` and `exceptionFilter`. Options are checked when the app is
   * created: a bad one fails `NestFactory.create` with a `ConfigError`.
   */
  static forRoot(options: FastLimitModuleOptions = {}): DynamicModule {
    const { globalGuard, exceptionFilter, ...limits } = options
    return {
      module: FastLimitModule,
      providers: providers(
        { provide: FASTLIMIT_OPTIONS, useValue: limits },
        flag(globalGuard, 'globalGuard'),
        flag(exceptionFilter, 'exceptionFilter'),
      ),
      exports: [FASTLIMIT_OPTIONS, FASTLIMIT_LIMITER, FastLimit, FastLimitGuard],
    }
  }

  /**
   * The module with options from a factory (a `ConfigService`, a Redis client from another
   * module...): `useFactory` with `inject` and `imports`.
   *
   * @example
   * ```ts
   * FastLimitModule.forRootAsync({
   *   inject: [ConfigService],
   *   useFactory: (config: ConfigService) => ({
   *     backend: RedisBackend.fromUrl(config.getOrThrow('REDIS_URL')),
   *     rules: config.get('RATE_LIMIT', '100/min'),
   *   }),
   * })
   * ```
   */
  static forRootAsync(options: FastLimitModuleAsyncOptions): DynamicModule {
    if (typeof options?.useFactory !== 'function') {
      throw new TypeError(
        '[fastlimit] [nestjs] forRootAsync() needs useFactory: (...injected) => options, e.g. { inject: [ConfigService], useFactory: (config) => ({ rules: config.get("RATE_LIMIT") }) }.',
      )
    }
    return {
      module: FastLimitModule,
      imports: options.imports ?? [],
      providers: providers(
        { provide: FASTLIMIT_OPTIONS, useFactory: options.useFactory, inject: options.inject ?? [] },
        flag(options.globalGuard, 'globalGuard'),
        flag(options.exceptionFilter, 'exceptionFilter'),
      ),
      exports: [FASTLIMIT_OPTIONS, FASTLIMIT_LIMITER, FastLimit, FastLimitGuard],
    }
  }

  /** Closes the limiter the module built (not one you passed in). */
  async onApplicationShutdown(): Promise<void> {
    if (owned.has(this.#limiter)) await this.#limiter.close()
  }
}

// Decorators applied as calls: the source then compiles without experimentalDecorators (tsx, vitest).
Global()(FastLimitModule)
Module({})(FastLimitModule)
Inject(FASTLIMIT_LIMITER)(FastLimitModule, undefined, 0)
