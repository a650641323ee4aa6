// @fastlimit/fastify: the rateLimit plugin for Fastify 4 and 5.

export type { RateLimitHandle } from '@fastlimit/core'
export type { RateLimitHook, RateLimitHookHandler, RateLimitOptions, RouteRateLimitOptions } from './plugin'
export { rateLimit } from './plugin'
