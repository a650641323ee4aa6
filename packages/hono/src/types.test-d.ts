// Hono's types: route parameters stay precise through the middleware; c.var.rateLimit, reset and peek are typed.
import type { RateLimitInfo } from '@fastlimit/core'
import { type Context, Hono } from 'hono'
import { describe, expectTypeOf, it } from 'vitest'
import { rateLimit } from './index'

describe('@fastlimit/hono types', () => {
  it('keeps route parameters and types c.var.rateLimit, reset and peek', () => {
    const app = new Hono()
    const limit = rateLimit({ rules: '5/15m', key: (c) => c.req.header('x-user') ?? '' })
    app.use(limit)
    app.get('/users/:id', limit, async (c) => {
      expectTypeOf(c.req.param('id')).toEqualTypeOf<string>()
      expectTypeOf(c.var.rateLimit).toEqualTypeOf<RateLimitInfo | undefined>()
      await limit.reset(c)
      expectTypeOf(await limit.peek(c)).toEqualTypeOf<RateLimitInfo | undefined>()
      return c.text(c.req.param('id'))
    })
    expectTypeOf(limit.reset).parameter(0).toEqualTypeOf<Context>()
  })

  it('types countWhen and settle on the context, and rules as a function of it', () => {
    rateLimit({
      rules: async (c) => (c.req.header('x-plan') === 'pro' ? ['10/s', '1000/day'] : '1/s'),
      countWhen: (c) => {
        expectTypeOf(c).toEqualTypeOf<Context>()
        return c.res.status >= 400
      },
      settle: (c) => Number(c.res.headers.get('x-tokens')),
    })
    // @ts-expect-error countWhen returns a boolean
    rateLimit({ countWhen: (c) => c.res.status })
  })
})
