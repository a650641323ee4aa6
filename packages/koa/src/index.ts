// @fastlimit/koa: rateLimit() middleware for Koa 2 and 3.

export type { RateLimitMiddleware, RateLimitOptions } from './rate-limit'
export { rateLimit } from './rate-limit'
