// @fastlimit/express: rateLimit() middleware for Express 4 and 5.

export type { RateLimitMiddleware, RateLimitOptions } from './rate-limit'
export { rateLimit } from './rate-limit'
