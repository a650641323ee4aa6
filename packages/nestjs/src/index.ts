// @fastlimit/nestjs: FastLimitModule, its guard and decorators, for NestJS 10, 11 and 12.

export { RateLimit, RateLimitDecision, RateLimitHandle, RateLimitInfo, SkipRateLimit } from './decorators'
export { InvalidCostException, RateLimitException, RateLimitExceptionFilter } from './exception'
export { FastLimitGuard, RateLimitGuard, rateLimitGuard } from './guard'
export { FastLimitModule } from './module'
export type {
  FastLimitModuleAsyncOptions,
  FastLimitModuleOptions,
  RateLimitDecoratorOptions,
  RateLimitMetadata,
  RateLimitModuleLimits,
  RateLimitOptions,
  RateLimitRequest,
  RateLimitResponse,
} from './options'
export {
  FASTLIMIT_LIMITER,
  FASTLIMIT_OPTIONS,
  RATE_LIMIT_METADATA,
  RATE_LIMITS_METADATA,
  SKIP_RATE_LIMIT_METADATA,
} from './options'
