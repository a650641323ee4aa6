// @fastlimit/redis: RedisBackend, one atomic Lua script per algorithm, on standalone Redis, Sentinel or Cluster.

export type {
  GlideClient,
  GlideClusterClient,
  IovalkeyClient,
  NodeRedisClient,
  NodeRedisCluster,
  RedisClient,
} from './driver'
export type { RedisBackendOptions, RedisTimeSource, RedisWaitReplicas } from './redis-backend'
export { RedisBackend } from './redis-backend'
