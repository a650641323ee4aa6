// Type tests: the plugin's options, the route config and the request's decision and handle are typed.
// (Checked against Fastify 4's types too: tsconfig.fastify4.json maps `fastify` to the fastify4 alias.)
import type { RateLimitInfo } from '@fastlimit/core'
import Fastify, { type FastifyRequest, type onRequestHookHandler } from 'fastify'
import { expectTypeOf } from 'vitest'
import {
  type RateLimitHandle,
  type RateLimitHookHandler,
  type RouteRateLimitOptions,
  rateLimit,
} from './index'

const app = Fastify()
await app.register(rateLimit, { rules: '100/min', key: (request) => request.ip, trustProxy: 'fastify' })
// @ts-expect-error hook runs at onRequest, preValidation or preHandler only
await app.register(rateLimit, { hook: 'onSend' })
// @ts-expect-error per-route options have no global
const bad: RouteRateLimitOptions = { global: false }
void bad

app.get('/x', { config: { rateLimit: { scope: 'x', rules: '5/min', cost: () => 2 } } }, (request) => {
  expectTypeOf(request.rateLimit).toEqualTypeOf<RateLimitInfo | undefined>()
  expectTypeOf(request.rateLimitHandle).toEqualTypeOf<RateLimitHandle | undefined>()
  return 'x'
})
app.get('/y', { config: { rateLimit: false } }, () => 'y')
expectTypeOf(app.rateLimit).parameter(0).toEqualTypeOf<RouteRateLimitOptions | undefined>()
expectTypeOf(app.rateLimit()).toEqualTypeOf<RateLimitHookHandler>()
expectTypeOf(app.rateLimit()).toMatchTypeOf<onRequestHookHandler>()
expectTypeOf(app.rateLimit().reset).parameter(0).toEqualTypeOf<FastifyRequest>()
expectTypeOf(app.rateLimit().peek).returns.resolves.toEqualTypeOf<RateLimitInfo | undefined>()
expectTypeOf<Parameters<NonNullable<RouteRateLimitOptions['key']>>[0]>().toEqualTypeOf<FastifyRequest>()
