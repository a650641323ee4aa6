// Koa's types: ctx.state.rateLimit, reset and peek are typed; the middleware is a Koa Middleware.
import type { RateLimitInfo } from '@fastlimit/core'
import Koa, { type Context, type Middleware } from 'koa'
import { describe, expectTypeOf, it } from 'vitest'
import { rateLimit } from './index'

describe('@fastlimit/koa types', () => {
  it('types ctx.state.rateLimit, reset and peek', () => {
    const app = new Koa()
    const limit = rateLimit({ rules: '5/15m', key: (ctx) => ctx.get('x-user') })
    expectTypeOf(limit).toMatchTypeOf<Middleware>()
    app.use(limit)
    app.use(async (ctx) => {
      expectTypeOf(ctx.state.rateLimit).toEqualTypeOf<RateLimitInfo | undefined>()
      await limit.reset(ctx)
      expectTypeOf(await limit.peek(ctx)).toEqualTypeOf<RateLimitInfo | undefined>()
    })
    expectTypeOf(limit.reset).parameter(0).toEqualTypeOf<Context>()
  })
})
