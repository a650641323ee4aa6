// GraphQL resolvers: Apollo on the Express platform, Mercurius on the Fastify platform.
import { type Decision, FastLimit, MemoryBackend } from '@fastlimit/core'
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo'
import { Module } from '@nestjs/common'
import { GraphQLModule, Query, Resolver } from '@nestjs/graphql'
import { MercuriusDriver, type MercuriusDriverConfig } from '@nestjs/mercurius'
import { afterEach, describe, expect, it } from 'vitest'
import { FastLimitModule, RateLimit, RateLimitDecision, SkipRateLimit } from '../src/index'
import { closeAll, type Platform, start } from './apps'

const typeDefs = 'type Query { hello: String, free: String, remaining: Int }'

@Resolver()
class HelloResolver {
  @Query('hello')
  @RateLimit('2/min')
  hello() {
    return 'world'
  }

  @Query('free')
  @SkipRateLimit()
  free() {
    return 'free'
  }

  @Query('remaining')
  remaining(@RateLimitDecision() decision?: Decision) {
    return decision?.remaining ?? null
  }
}

function graphqlModule(platform: Platform) {
  const now = () => 1_700_000_040_000
  const limiter = new FastLimit({ backend: new MemoryBackend({ clock: now, cleanupIntervalMs: 0 }) })
  const graphql =
    platform === 'express'
      ? // Apollo's default context ({ req }): the headers go to req.res.
        GraphQLModule.forRoot<ApolloDriverConfig>({ driver: ApolloDriver, typeDefs })
      : GraphQLModule.forRoot<MercuriusDriverConfig>({ driver: MercuriusDriver, typeDefs })
  @Module({
    imports: [FastLimitModule.forRoot({ limiter, clock: now, rules: '10/min' }), graphql],
    providers: [HelloResolver],
  })
  class GraphqlApp {}
  return GraphqlApp
}

afterEach(closeAll)

for (const platform of ['express', 'fastify'] as Platform[]) {
  const driver = platform === 'express' ? 'Apollo on Express' : 'Mercurius on Fastify'
  describe(`@fastlimit/nestjs in GraphQL resolvers (${driver})`, () => {
    it('limits a resolver, reports the refusal as a GraphQL error with the headers, and skips where told', async () => {
      const app = await start(platform, graphqlModule(platform))
      const port = (app.getHttpServer().address() as { port: number }).port
      const query = async (q: string) => {
        const res = await fetch(`http://127.0.0.1:${port}/graphql`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ query: `{ ${q} }` }),
        })
        return {
          headers: res.headers,
          json: (await res.json()) as {
            data?: Record<string, unknown>
            errors?: { message: string; extensions?: Record<string, unknown> }[]
          },
        }
      }
      expect((await query('hello')).json.data).toEqual({ hello: 'world' })
      const second = await query('hello')
      expect(second.headers.get('ratelimit')).toBe('limit=2, remaining=0, reset=60')
      const refused = await query('hello')
      expect(refused.json.data?.hello ?? null).toBeNull()
      expect(refused.json.errors?.[0]?.message).toBe('Too many requests; retry in 30 seconds.')
      expect(refused.json.errors?.[0]?.extensions).toMatchObject({
        code: 'TOO_MANY_REQUESTS',
        status: 429,
        retryAfterMs: 30_000,
      })
      expect(refused.headers.get('retry-after')).toBe('30')
      for (let i = 0; i < 3; i++) expect((await query('free')).json.data).toEqual({ free: 'free' })
      // One operation counts once per limit, however many fields use it (aliases included).
      const twice = await query('a: remaining b: remaining c: remaining')
      expect(twice.json.data).toEqual({ a: 9, b: 9, c: 9 })
      // Undecorated resolvers get the module's default limit, and their decision.
      expect((await query('remaining')).json.data).toEqual({ remaining: 8 })
    })
  })
}

/** An app whose `slow` query waits until `open()`, limited to one operation in progress at once. */
function concurrencyModule(platform: Platform) {
  let open: () => void = () => undefined
  const opened = new Promise<void>((r) => {
    open = r
  })
  let entered = 0
  @Resolver()
  class SlowResolver {
    @Query('slow')
    @RateLimit('100/min', { key: () => 'k', concurrency: 1 })
    async slow() {
      entered++
      await opened
      return 'done'
    }
  }
  const graphql =
    platform === 'express'
      ? GraphQLModule.forRoot<ApolloDriverConfig>({
          driver: ApolloDriver,
          typeDefs: 'type Query { slow: String }',
        })
      : GraphQLModule.forRoot<MercuriusDriverConfig>({
          driver: MercuriusDriver,
          typeDefs: 'type Query { slow: String }',
        })
  @Module({ imports: [FastLimitModule.forRoot({}), graphql], providers: [SlowResolver] })
  class SlowApp {}
  return { module: SlowApp, open: () => open(), entered: () => entered }
}

for (const platform of ['express', 'fastify'] as Platform[]) {
  const driver = platform === 'express' ? 'Apollo on Express' : 'Mercurius on Fastify'
  it(`an operation holds one concurrency slot until its HTTP response ends (${driver})`, async () => {
    const slow = concurrencyModule(platform)
    const app = await start(platform, slow.module)
    const port = (app.getHttpServer().address() as { port: number }).port
    const query = async (q: string) => {
      const res = await fetch(`http://127.0.0.1:${port}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query: `{ ${q} }` }),
      })
      return (await res.json()) as {
        data?: Record<string, unknown>
        errors?: { extensions?: Record<string, unknown> }[]
      }
    }
    // Two fields of one operation: one request, one slot.
    const held = query('a: slow b: slow')
    for (let i = 0; slow.entered() < 2; i++) {
      if (i > 2000) throw new Error('the held operation never reached its resolvers')
      await new Promise((r) => setTimeout(r, 5))
    }
    const refused = await query('slow')
    expect(refused.data?.slow ?? null).toBeNull()
    expect(refused.errors?.[0]?.extensions).toMatchObject({ status: 429 })
    slow.open()
    expect((await held).data).toEqual({ a: 'done', b: 'done' })
    // The slot came back with the response.
    expect((await query('slow')).data).toEqual({ slow: 'done' })
  })
}
