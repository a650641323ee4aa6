// @fastlimit/redis: RedisBackend, one atomic Lua script per algorithm, on standalone Redis, Sentinel or Cluster.

export type { RedisBackendOptions, RedisTimeSource } from './redis-backend'
export { RedisBackend } from './redis-backend'
