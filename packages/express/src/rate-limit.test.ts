import type { AddressInfo } from 'node:net'
import { ConfigError, FastLimit, MemoryBackend } from '@fastlimit/core'
import {
  type AdapterAppOptions,
  type AdapterClient,
  adapterConformance,
  adaptOptions,
} from '@fastlimit/core/testing'
import express, { type ErrorRequestHandler, type Request, type RequestHandler, type Response } from 'express'
import express4 from 'express4'
import request from 'supertest'
import { afterEach, describe, expect, it } from 'vitest'
import { type RateLimitMiddleware, type RateLimitOptions, rateLimit } from './index'

type Express = typeof express

// A clock that does not move: nothing here depends on how fast the machine is.
const frozen = () => {
  const now = () => 1_700_000_040_000
  return {
    clock: now,
    limiter: new FastLimit({ backend: new MemoryBackend({ clock: now, cleanupIntervalMs: 0 }) }),
  }
}

const view = (req: Request) => ({
  method: req.method,
  path: req.path,
  header: (name: string) => req.get(name),
})

const servers: import('node:http').Server[] = []

async function serve(
  lib: Express,
  limit: RequestHandler | undefined,
  mount: 'app' | 'route',
  extra?: (app: ReturnType<Express>) => void,
): Promise<AdapterClient> {
  const app = lib()
  if (mount === 'app') {
    if (limit !== undefined) app.use(limit)
  } else if (limit !== undefined) app.get('/limited', limit, (_req, res) => void res.send('ok'))
  extra?.(app)
  app.use((_req, res) => void res.type('text/plain').send('ok'))
  const onError: ErrorRequestHandler = (err, _req, res, _next) => {
    res
      .status(500)
      .type('text/plain')
      .send(String((err as { code?: string }).code ?? 'error'))
  }
  app.use(onError)
  const server = await new Promise<import('node:http').Server>((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s))
  })
  servers.push(server)
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const agent = request(origin)
  return {
    origin,
    async request(path, init = {}) {
      const method = (init.method ?? 'GET').toLowerCase() as 'get' | 'post' | 'options'
      const res = await agent[method](path).set(init.headers ?? {})
      return { status: res.status, headers: res.headers as Record<string, string>, body: res.text }
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

/** The suite's two-middleware app: app-wide and route limits, and its /info, /login and /peek routes. */
function layeredApp(
  lib: Express,
  appOptions: AdapterAppOptions,
  routeOptions: AdapterAppOptions,
): Promise<AdapterClient> {
  const routeLimit: RateLimitMiddleware = rateLimit(adaptOptions(routeOptions, view))
  return serve(lib, rateLimit(adaptOptions(appOptions, view)), 'app', (app) => {
    app.get('/limited', routeLimit, (_req: Request, res: Response) => void res.send('ok'))
    app.get('/info', routeLimit, (req: Request, res: Response) => void res.json(req.rateLimit ?? null))
    app.post('/login', routeLimit, async (req: Request, res: Response, next) => {
      try {
        if (req.get('x-password') !== 'right') return void res.status(401).send('wrong')
        if (req.get('x-reset') === 'middleware') await routeLimit.reset(req)
        else await req.rateLimit?.reset()
        res.send('welcome')
      } catch (err) {
        next(err)
      }
    })
    app.get('/peek', async (req, res, next) => {
      try {
        const now = await routeLimit.peek(req)
        res.json(now === undefined ? null : { remaining: now.remaining })
      } catch (err) {
        next(err)
      }
    })
  })
}

for (const [version, lib] of [
  ['Express 5', express],
  ['Express 4', express4],
] as const) {
  adapterConformance({
    name: `@fastlimit/express on ${version}`,
    makeApp: (options: AdapterAppOptions, mount) => serve(lib, rateLimit(adaptOptions(options, view)), mount),
    makeLayeredApp: (appOptions, routeOptions) => layeredApp(lib, appOptions, routeOptions),
  })

  describe(`@fastlimit/express on ${version}`, () => {
    afterEach(async () => {
      for (const s of servers.splice(0)) await new Promise((r) => s.close(r))
    })

    it('lets a handler send the refusal, with the headers already set', async () => {
      const client = await serve(
        lib,
        rateLimit({
          ...frozen(),
          rules: '1/min',
          handler: (_req, res, _next, decision) => {
            res.status(418).json({ reason: decision.reason, retryAfterMs: decision.retryAfterMs })
          },
        }),
        'app',
      )
      await client.request('/')
      const r = await client.request('/')
      expect(r.status).toBe(418)
      expect(JSON.parse(r.body)).toEqual({ reason: 'rate-limited', retryAfterMs: 60_000 })
      expect(r.headers['retry-after']).toBe('60')
      expect(r.headers.ratelimit).toBe('limit=1, remaining=0, reset=60')
    })

    it('sends the 400 of an unusable cost itself, not through the handler', async () => {
      const client = await serve(
        lib,
        rateLimit({
          ...frozen(),
          rules: '1/min',
          cost: (req) => Number(req.query.w),
          handler: (_req, res) => void res.status(418).send('handler'),
        }),
        'app',
      )
      expect((await client.request('/?w=x')).status).toBe(400)
      expect((await client.request('/?w=1')).status).toBe(200)
      expect((await client.request('/?w=1')).status).toBe(418)
    })

    it('passes a throwing handler to the error handler', async () => {
      const client = await serve(
        lib,
        rateLimit({
          rules: '1/min',
          handler: async () => {
            throw Object.assign(new Error('boom'), { code: 'E_HANDLER' })
          },
        }),
        'app',
      )
      await client.request('/')
      const r = await client.request('/')
      expect(r).toMatchObject({ status: 500, body: 'E_HANDLER' })
    })

    it('hands the decision to later handlers in req.rateLimit, and not for skipped requests', async () => {
      const client = await serve(
        lib,
        rateLimit({ ...frozen(), rules: '3/min', skip: (req) => req.path === '/free' }),
        'app',
        (app) => {
          app.get(['/me', '/free'], (req, res) => {
            const d = req.rateLimit
            res.json(d === undefined ? null : { remaining: d.remaining, limit: d.limit, rule: d.rule.limit })
          })
        },
      )
      expect(JSON.parse((await client.request('/me')).body)).toEqual({ remaining: 2, limit: 3, rule: 3 })
      expect(JSON.parse((await client.request('/me')).body)).toEqual({ remaining: 1, limit: 3, rule: 3 })
      expect(JSON.parse((await client.request('/free')).body)).toBeNull()
    })

    it('uses different limits on different routes, sharing one limiter', async () => {
      const limiter = new FastLimit()
      const client = await serve(lib, rateLimit({ limiter, rules: '5/min' }), 'app', (app) => {
        app.post(
          '/login',
          rateLimit({ limiter, rules: { limit: 1, window: '15m', name: 'login' } }),
          (_req, res) => {
            res.send('welcome')
          },
        )
        app.get(
          '/search',
          rateLimit({ limiter, rules: '3/min', cost: (req) => Number(req.query.w ?? 1) }),
          (_r, res) => {
            res.send('found')
          },
        )
      })
      expect((await client.request('/login', { method: 'POST' })).body).toBe('welcome')
      const login = await client.request('/login', { method: 'POST' })
      expect(login.status).toBe(429)
      // One set of fields for both middlewares: every policy, the most restrictive rule.
      expect(login.headers['ratelimit-policy']).toBe('5;w=60, 1;w=900')
      expect(login.headers.ratelimit).toBe('limit=1, remaining=0, reset=900')
      expect(login.headers['retry-after']).toBe('900')
      expect((await client.request('/search?w=3')).status).toBe(200)
      const search = await client.request('/search?w=1')
      expect(search.status).toBe(429)
      expect(search.headers['ratelimit-policy']).toBe('5;w=60, 3;w=60')
      await limiter.close()
    })
  })
}

describe('rateLimit() options', () => {
  it('rejects a bad handler, and handler with message', () => {
    expect(() => rateLimit({ handler: 'x' } as unknown as RateLimitOptions)).toThrow(ConfigError)
    expect(() => rateLimit({ handler: () => {}, message: 'x' })).toThrow(/Give handler or message, not both/)
    expect(() => rateLimit({ rules: '1/x' })).toThrow(ConfigError)
    expect(() => rateLimit({ windowMs: 1 } as unknown as RateLimitOptions)).toThrow(
      /^\[fastlimit\] \[express\] Unknown option "windowMs"/,
    )
    expect(() => rateLimit()).not.toThrow()
  })
})
