import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ConfigError, FastLimit, MemoryBackend } from '@fastlimit/core'
import {
  type AdapterAppOptions,
  type AdapterClient,
  adapterConformance,
  adaptOptions,
} from '@fastlimit/core/testing'
import Koa, { type Context, type Middleware } from 'koa'
import Koa2 from 'koa2'
import request from 'supertest'
import { afterEach, describe, expect, it } from 'vitest'
import { type RateLimitMiddleware, type RateLimitOptions, rateLimit } from './index'

const view = (ctx: Context) => ({
  method: ctx.method,
  path: ctx.path,
  header: (name: string) => ctx.get(name) || undefined,
})

// A clock that does not move: nothing here depends on how fast the machine is.
const frozen = () => {
  const now = () => 1_700_000_040_000
  return {
    clock: now,
    limiter: new FastLimit({ backend: new MemoryBackend({ clock: now, cleanupIntervalMs: 0 }) }),
  }
}

const servers: Server[] = []

async function serve(
  App: typeof Koa,
  limit: Middleware | undefined,
  mount: 'app' | 'route',
  routes: Record<string, Middleware> = {},
): Promise<AdapterClient> {
  const app = new App()
  app.use(async (ctx, next) => {
    try {
      await next()
    } catch (err) {
      ctx.status = 500
      ctx.type = 'text/plain'
      ctx.body = String((err as { code?: string }).code ?? 'error')
    }
  })
  if (mount === 'app' && limit !== undefined) app.use(limit)
  app.use(async (ctx, next) => {
    const ok = async () => {
      ctx.type = 'text/plain'
      ctx.body = 'ok'
    }
    const route = routes[`${ctx.method} ${ctx.path}`]
    if (route !== undefined) return route(ctx, next)
    if (mount === 'route' && limit !== undefined && ctx.method === 'GET' && ctx.path === '/limited')
      return limit(ctx, ok)
    return ok()
  })
  const server = await new Promise<Server>((resolve) => {
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
  App: typeof Koa,
  appOptions: AdapterAppOptions,
  routeOptions: AdapterAppOptions,
): Promise<AdapterClient> {
  const routeLimit: RateLimitMiddleware = rateLimit(adaptOptions(routeOptions, view))
  const onRoute =
    (handler: (ctx: Context) => Promise<void> | void): Middleware =>
    (ctx) =>
      routeLimit(ctx, async () => handler(ctx))
  return serve(App, rateLimit(adaptOptions(appOptions, view)), 'app', {
    'GET /limited': onRoute((ctx) => {
      ctx.body = 'ok'
    }),
    'GET /info': onRoute((ctx) => {
      ctx.body = JSON.stringify(ctx.state.rateLimit ?? null)
    }),
    'POST /login': onRoute(async (ctx) => {
      if (ctx.get('x-password') !== 'right') {
        ctx.status = 401
        ctx.body = 'wrong'
        return
      }
      if (ctx.get('x-reset') === 'middleware') await routeLimit.reset(ctx)
      else await ctx.state.rateLimit?.reset()
      ctx.body = 'welcome'
    }),
    'GET /peek': async (ctx) => {
      const now = await routeLimit.peek(ctx)
      ctx.body = JSON.stringify(now === undefined ? null : { remaining: now.remaining })
    },
  })
}

for (const [version, App] of [
  ['Koa 3', Koa],
  ['Koa 2', Koa2],
] as const) {
  adapterConformance({
    name: `@fastlimit/koa on ${version}`,
    makeApp: (options, mount) => serve(App, rateLimit(adaptOptions(options, view)), mount),
    makeLayeredApp: (appOptions, routeOptions) => layeredApp(App, appOptions, routeOptions),
  })

  describe(`@fastlimit/koa on ${version}`, () => {
    afterEach(async () => {
      for (const s of servers.splice(0)) await new Promise((r) => s.close(r))
    })

    it('lets a handler send the refusal, with the headers already set', async () => {
      const limit = rateLimit({
        ...frozen(),
        rules: '1/min',
        handler: (ctx, decision) => {
          ctx.status = 418
          ctx.body = { reason: decision.reason, retryAfterMs: decision.retryAfterMs }
        },
      })
      const client = await serve(App, limit, 'app')
      await client.request('/')
      const r = await client.request('/')
      expect(r.status).toBe(418)
      expect(JSON.parse(r.body)).toEqual({ reason: 'rate-limited', retryAfterMs: 60_000 })
      expect(r.headers['retry-after']).toBe('60')
      expect(r.headers.ratelimit).toBe('limit=1, remaining=0, reset=60')
    })

    it('sends the 400 of an unusable cost itself, not through the handler', async () => {
      const limit = rateLimit({
        ...frozen(),
        rules: '1/min',
        cost: (ctx) => Number(ctx.query.w),
        handler: (ctx) => {
          ctx.status = 418
        },
      })
      const client = await serve(App, limit, 'app')
      expect((await client.request('/?w=x')).status).toBe(400)
      expect((await client.request('/?w=1')).status).toBe(200)
      expect((await client.request('/?w=1')).status).toBe(418)
    })

    it('names ctx in the error for a request without an address', async () => {
      const limit = rateLimit({ rules: '1/min' })
      const ctx = { req: { socket: {}, headers: {}, method: 'GET' }, state: {} }
      await expect(limit(ctx as never, async () => undefined)).rejects.toThrow(
        /^\[fastlimit\] \[koa\] Cannot find the client's address .*pass key: \(ctx\) => \.\.\./,
      )
    })

    it('keys by the socket, not ctx.ip, even when app.proxy is on', async () => {
      const app = new App()
      app.proxy = true
      app.use(rateLimit({ rules: '1/min' }))
      app.use((ctx) => {
        ctx.body = 'ok'
      })
      const agent = request(app.callback())
      expect((await agent.get('/').set('x-forwarded-for', '198.51.100.1')).status).toBe(200)
      expect((await agent.get('/').set('x-forwarded-for', '198.51.100.2')).status).toBe(429)
    })

    it('hands the decision to later middleware in ctx.state.rateLimit, and not for skipped requests', async () => {
      const app = new App()
      app.use(rateLimit({ ...frozen(), rules: '3/min', skip: (ctx) => ctx.path === '/free' }))
      app.use((ctx) => {
        const d = ctx.state.rateLimit
        ctx.body = d === undefined ? 'none' : { remaining: d.remaining, limit: d.limit, rule: d.rule.limit }
      })
      const agent = request(app.callback())
      expect((await agent.get('/me')).body).toEqual({ remaining: 2, limit: 3, rule: 3 })
      expect((await agent.get('/me')).body).toEqual({ remaining: 1, limit: 3, rule: 3 })
      expect((await agent.get('/free')).text).toBe('none')
    })

    it('uses different limits on different routes, sharing one limiter', async () => {
      const { limiter, clock } = frozen()
      const login = rateLimit({ limiter, clock, rules: { limit: 1, window: '15m', name: 'login' } })
      const search = rateLimit({ limiter, clock, rules: '3/min', cost: (ctx) => Number(ctx.query.w ?? 1) })
      const client = await serve(App, rateLimit({ limiter, clock, rules: '5/min' }), 'app', {
        'POST /login': (ctx) =>
          login(ctx, async () => {
            ctx.body = 'welcome'
          }),
        'GET /search': (ctx) =>
          search(ctx, async () => {
            ctx.body = 'found'
          }),
      })
      expect((await client.request('/login', { method: 'POST' })).body).toBe('welcome')
      const denied = await client.request('/login', { method: 'POST' })
      expect(denied.status).toBe(429)
      // One set of fields for both middlewares: every policy, the most restrictive rule.
      expect(denied.headers['ratelimit-policy']).toBe('5;w=60, 1;w=900')
      expect(denied.headers.ratelimit).toBe('limit=1, remaining=0, reset=900')
      expect((await client.request('/search?w=3')).body).toBe('found')
      const s = await client.request('/search?w=1')
      expect(s.status).toBe(429)
      expect(s.headers['ratelimit-policy']).toBe('5;w=60, 3;w=60')
    })
  })
}

describe('rateLimit() options', () => {
  it('rejects a bad handler, and handler with message', () => {
    expect(() => rateLimit({ handler: 'x' } as unknown as RateLimitOptions)).toThrow(ConfigError)
    expect(() => rateLimit({ handler: () => {}, message: 'x' })).toThrow(/Give handler or message, not both/)
    expect(() => rateLimit({ duration: 1 } as unknown as RateLimitOptions)).toThrow(
      /^\[fastlimit\] \[koa\] Unknown option "duration"/,
    )
    expect(() => rateLimit()).not.toThrow()
  })
})
