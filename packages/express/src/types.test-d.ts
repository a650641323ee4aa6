// Express 5 types (@types/express 5): the middleware keeps route parameters precise, and reset/peek take any request.
import type { RateLimitInfo } from '@fastlimit/core'
import express, { type Request, type Response, Router } from 'express'
import { describe, expectTypeOf, it } from 'vitest'
import { rateLimit } from './index'

describe('@fastlimit/express types (Express 5)', () => {
  it('keeps route parameters through the middleware', () => {
    const app = express()
    const limit = rateLimit({ rules: '5/15m' })
    app.get('/users/:id', limit, (req, res) => {
      expectTypeOf(req.params.id).toEqualTypeOf<string>()
      res.send(req.params.id)
    })
    app.post('/teams/:team/members/:member', rateLimit(), (req, res) => {
      expectTypeOf(req.params).toEqualTypeOf<{ team: string } & { member: string }>()
      res.end()
    })
    const router = Router()
    router.get('/items/:item', limit, (req, res) => {
      expectTypeOf(req.params.item).toEqualTypeOf<string>()
      res.end()
    })
    app.use(limit)
    app.use('/api', limit, router)
  })

  it('types req.rateLimit, reset and peek', () => {
    const limit = rateLimit()
    express().get('/x/:id', limit, async (req, res) => {
      expectTypeOf(req.rateLimit).toEqualTypeOf<RateLimitInfo | undefined>()
      expectTypeOf(req.rateLimit?.remaining).toEqualTypeOf<number | undefined>()
      await limit.reset(req)
      const now = await limit.peek(req)
      expectTypeOf(now).toEqualTypeOf<RateLimitInfo | undefined>()
      res.end()
    })
    // Any request is accepted: a plain one, or one of a route with typed params.
    const plain = {} as Request
    expectTypeOf(limit.reset(plain)).toEqualTypeOf<Promise<void>>()
    expectTypeOf(limit.peek({} as Request<{ id: string }>)).toEqualTypeOf<
      Promise<RateLimitInfo | undefined>
    >()
  })

  it('types countWhen and settle on the request and response, and rules as a function of the request', () => {
    rateLimit({
      rules: (req) => (req.get('x-plan') === 'pro' ? '100/s' : { limit: 5, window: '1s' }),
      countWhen: (req, res) => {
        expectTypeOf(req).toEqualTypeOf<Request>()
        expectTypeOf(res).toEqualTypeOf<Response>()
        return res.statusCode >= 400
      },
      settle: async (_req, res) => Number(res.getHeader('x-tokens')),
    })
    // @ts-expect-error settle returns a number
    rateLimit({ settle: (_req, res) => res.getHeader('x-tokens') })
  })
})
