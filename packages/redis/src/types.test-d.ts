// Type tests: RedisBackend is a Backend, and its options take ioredis clients and a closed set of values.
import type { Backend, BackendResult, Charge } from '@fastlimit/core'
import type { Cluster, Redis } from 'ioredis'
import type { Valkey, Cluster as ValkeyCluster } from 'iovalkey'
import type { createClient, createCluster } from 'redis'
import type { createClient as createClientV5, createCluster as createClusterV5 } from 'redis-v5'
import { describe, expectTypeOf, it } from 'vitest'
import {
  RedisBackend,
  type RedisBackendOptions,
  type RedisClient,
  type RedisTimeSource,
  type RedisWaitReplicas,
} from './index'

describe('public types', () => {
  it('implements the Backend protocol', () => {
    expectTypeOf<RedisBackend>().toExtend<Backend>()
    expectTypeOf<RedisBackend['peek']>().returns.toEqualTypeOf<Promise<BackendResult>>()
    expectTypeOf<RedisBackend['client']>().toEqualTypeOf<Redis | Cluster>()
    expectTypeOf(RedisBackend.fromUrl).returns.toEqualTypeOf<RedisBackend>()
    expectTypeOf<RedisBackend['kind']>().toEqualTypeOf<'redis'>()
    expectTypeOf<RedisBackend['reconnect']>().toEqualTypeOf<(reason?: Error) => void>()
    expectTypeOf<RedisBackend['checkAndIncrement']>()
      .parameter(3)
      .toEqualTypeOf<{ readonly deadline?: number } | undefined>()
  })

  it('implements adjust, the refund and extra charge behind reservations', () => {
    expectTypeOf<RedisBackend['adjust']>().toExtend<NonNullable<Backend['adjust']>>()
    expectTypeOf<RedisBackend['adjust']>().parameter(3).toEqualTypeOf<readonly Charge[] | undefined>()
    expectTypeOf<RedisBackend['adjust']>().returns.toEqualTypeOf<Promise<BackendResult[]>>()
  })

  it('types the options', () => {
    expectTypeOf<RedisTimeSource>().toEqualTypeOf<'server' | 'client'>()
    expectTypeOf<RedisBackendOptions['client']>().toEqualTypeOf<RedisClient | undefined>()
    expectTypeOf<{ url: string; timeSource: 'client'; clock: () => number }>().toExtend<RedisBackendOptions>()
    expectTypeOf<{ url: string; timeSource: 'local' }>().not.toExtend<RedisBackendOptions>()
    expectTypeOf<RedisBackendOptions['waitReplicas']>().toEqualTypeOf<RedisWaitReplicas | false | undefined>()
    expectTypeOf<{
      url: string
      waitReplicas: { replicas: 1; timeoutMs: 50 }
    }>().toExtend<RedisBackendOptions>()
    // fromUrl takes every option but url and client.
    expectTypeOf(RedisBackend.fromUrl).parameter(1).not.toHaveProperty('client')
  })

  it('takes a client of every supported library (ioredis, iovalkey, node-redis 6 and 5, Valkey GLIDE), and types backend.client as the one given', () => {
    // Inline type imports: GLIDE's types without an import line.
    type GlideClient = import('@valkey/valkey-glide').GlideClient
    type GlideClusterClient = import('@valkey/valkey-glide').GlideClusterClient
    type NodeRedis = ReturnType<typeof createClient>
    type NodeRedisCluster = ReturnType<typeof createCluster>
    type NodeRedisV5 = ReturnType<typeof createClientV5>
    type NodeRedisClusterV5 = ReturnType<typeof createClusterV5>
    expectTypeOf<Redis>().toExtend<RedisClient>()
    expectTypeOf<Cluster>().toExtend<RedisClient>()
    expectTypeOf<Valkey>().toExtend<RedisClient>()
    expectTypeOf<ValkeyCluster>().toExtend<RedisClient>()
    expectTypeOf<NodeRedis>().toExtend<RedisClient>()
    expectTypeOf<NodeRedisCluster>().toExtend<RedisClient>()
    expectTypeOf<NodeRedisV5>().toExtend<RedisClient>()
    expectTypeOf<NodeRedisClusterV5>().toExtend<RedisClient>()
    expectTypeOf<GlideClient>().toExtend<RedisClient>()
    expectTypeOf<GlideClusterClient>().toExtend<RedisClient>()
    // Anything else is refused.
    expectTypeOf<{ get(key: string): Promise<string> }>().not.toExtend<RedisClient>()
    expectTypeOf<string>().not.toExtend<RedisClient>()
    // The client keeps its own type.
    expectTypeOf<RedisBackend<NodeRedis>['client']>().toEqualTypeOf<NodeRedis>()
    const glide = {} as GlideClusterClient
    expectTypeOf(new RedisBackend({ client: glide }).client).toEqualTypeOf<GlideClusterClient>()
    const nodeRedis = {} as NodeRedisClusterV5
    expectTypeOf(
      new RedisBackend({ client: nodeRedis, keyPrefix: 'x' }).client,
    ).toEqualTypeOf<NodeRedisClusterV5>()
  })
})
