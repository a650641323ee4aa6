// Type tests: RedisBackend is a Backend, and its options take ioredis clients and a closed set of values.
import type { Backend, BackendResult, Charge } from '@fastlimit/core'
import type { Cluster, Redis } from 'ioredis'
import { describe, expectTypeOf, it } from 'vitest'
import { RedisBackend, type RedisBackendOptions, type RedisTimeSource, type RedisWaitReplicas } from './index'

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
    expectTypeOf<RedisBackendOptions['client']>().toEqualTypeOf<Redis | Cluster | undefined>()
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
})
