// @fastlimit/hono: rateLimit() middleware for Hono 4 on Node, Bun, Deno and Workers.

export type { RateLimitMiddleware, RateLimitOptions } from './rate-limit'
export { rateLimit } from './rate-limit'
