import type { AddressInfo } from 'node:net'
import { ConfigError, FastLimit, MemoryBackend } from '@fastlimit/core'
import {
  type AdapterAppOptions,
  type AdapterClient,
  adapterConformance,
  adaptOptions,
  type SuiteResponse,
} from '@fastlimit/core/testing'
import { serve } from '@hono/node-server'
import { type Context, Hono, type MiddlewareHandler } from 'hono'
import { describe, expect, it } from 'vitest'
import { type RateLimitMiddleware, type RateLimitOptions, rateLimit } from './index'

const view = (c: Context) => ({
  method: c.req.method,
  path: c.req.path,
  header: (name: string) => c.req.header(name),
})

// A clock that does not move: nothing here depends on how fast the machine is.
const frozen = () => {
  const now = () => 1_700_000_040_000
  return {
    clock: now,
    limiter: new FastLimit({ backend: new MemoryBackend({ clock: now, cleanupIntervalMs: 0 }) }),
  }
}

function build(limit: MiddlewareHandler, mount: 'app' | 'route'): Hono {
  const app = new Hono()
  app.onError((err, c) => c.text(String((err as { code?: string }).code ?? 'error'), 500))
  if (mount === 'app') app.use(limit)
  else app.get('/limited', limit, (c) => c.text('ok'))
  app.all('*', (c) => c.text('ok'))
  return app
}

/** The suite's two-middleware app: app-wide and route limits, and its /info, /login and /peek routes. */
function layeredApp(
  make: (options: AdapterAppOptions) => RateLimitMiddleware,
  appOptions: AdapterAppOptions,
  routeOptions: AdapterAppOptions,
): Hono {
  const app = new Hono()
  app.onError((err, c) => c.text(String((err as { code?: string }).code ?? 'error'), 500))
  const routeLimit = make(routeOptions)
  app.use(make(appOptions))
  for (const path of ['/limited', '/info', '/login']) app.use(path, routeLimit)
  app.get('/info', (c) => c.json(c.var.rateLimit ?? null))
  app.post('/login', async (c) => {
    if (c.req.header('x-password') !== 'right') return c.text('wrong', 401)
    if (c.req.header('x-reset') === 'middleware') await routeLimit.reset(c)
    else await c.var.rateLimit?.reset()
    return c.text('welcome')
  })
  app.get('/peek', async (c) => {
    const now = await routeLimit.peek(c)
    return c.json(now === undefined ? null : { remaining: now.remaining })
  })
  app.all('*', (c) => c.text('ok'))
  return app
}

async function read(res: Response): Promise<SuiteResponse> {
  return { status: res.status, headers: Object.fromEntries(res.headers), body: await res.text() }
}

/** In-process: app.request() with @hono/node-server's bindings injected, peer 127.0.0.1. */
function inProcess(app: Hono): AdapterClient {
  const env = { incoming: { socket: { remoteAddress: '127.0.0.1' } } }
  return { request: async (path, init) => read(await app.request(path, init, env)) }
}

/** Over a real socket: @hono/node-server listening on 127.0.0.1. */
async function overSocket(app: Hono): Promise<AdapterClient> {
  const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s))
  })
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    origin: base,
    request: async (path, init) => read(await fetch(base + path, init)),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        ;(server as { closeAllConnections?: () => void }).closeAllConnections?.()
      }),
  }
}

/** The middleware of the suite's options; with `connInfo`, finding the address through getConnInfo (as on Bun, Deno, Workers). */
const make = (options: AdapterAppOptions, connInfo = false) =>
  rateLimit({
    ...adaptOptions(options, view),
    ...(connInfo ? { getConnInfo: () => ({ remote: { address: '127.0.0.1' } }) } : {}),
  })

adapterConformance({
  name: '@fastlimit/hono in process (app.request)',
  makeApp: (options, mount) => inProcess(build(make(options), mount)),
  makeLayeredApp: (appOptions, routeOptions) => inProcess(layeredApp(make, appOptions, routeOptions)),
})

adapterConformance({
  name: '@fastlimit/hono on @hono/node-server',
  makeApp: (options, mount) => overSocket(build(make(options), mount)),
  makeLayeredApp: (appOptions, routeOptions) => overSocket(layeredApp(make, appOptions, routeOptions)),
})

adapterConformance({
  name: '@fastlimit/hono with getConnInfo (as on Bun, Deno, Workers)',
  makeApp: (options, mount) => {
    const app = build(make(options, true), mount)
    return { request: async (path, init) => read(await app.request(path, init)) }
  },
  makeLayeredApp: (appOptions, routeOptions) => {
    const app = layeredApp((o) => make(o, true), appOptions, routeOptions)
    return { request: async (path, init) => read(await app.request(path, init)) }
  },
})

describe('@fastlimit/hono', () => {
  it('lets a handler build the refusal, with the headers already set', async () => {
    const app = build(
      rateLimit({
        ...frozen(),
        rules: '1/min',
        handler: (c, decision) =>
          c.json({ reason: decision.reason, retryAfterMs: decision.retryAfterMs }, 418),
      }),
      'app',
    )
    const client = inProcess(app)
    await client.request('/')
    const r = await client.request('/')
    expect(r.status).toBe(418)
    expect(JSON.parse(r.body)).toEqual({ reason: 'rate-limited', retryAfterMs: 60_000 })
    expect(r.headers['retry-after']).toBe('60')
    expect(r.headers.ratelimit).toBe('limit=1, remaining=0, reset=60')
  })

  it('keeps the headers on responses a handler builds itself', async () => {
    for (const connect of [inProcess, overSocket]) {
      const app = new Hono()
      app.use(rateLimit({ ...frozen(), rules: '2/min' }))
      app.get('/', () => new Response('raw', { status: 201 }))
      app.get('/json', () => Response.json({ a: 1 })) // immutable headers, as from fetch()
      const client = await connect(app)
      const r = await client.request('/')
      expect(r.status).toBe(201)
      expect(r.body).toBe('raw')
      expect(r.headers.ratelimit).toBe('limit=2, remaining=1, reset=30')
      const j = await client.request('/json')
      expect(j.body).toBe('{"a":1}')
      expect(j.headers.ratelimit).toBe('limit=2, remaining=0, reset=60')
      await client.close?.()
    }
  })

  it('hands the decision to later handlers in c.var.rateLimit, and not for skipped requests', async () => {
    for (const connect of [inProcess, overSocket]) {
      const app = new Hono()
      app.use(rateLimit({ ...frozen(), key: () => 'k', rules: '3/min', skip: (c) => c.req.path === '/free' }))
      app.get('*', (c) => {
        const d = c.var.rateLimit
        return c.json(d === undefined ? null : { remaining: d.remaining, limit: d.limit, rule: d.rule.limit })
      })
      const client = await connect(app)
      expect(JSON.parse((await client.request('/me')).body)).toEqual({ remaining: 2, limit: 3, rule: 3 })
      expect(JSON.parse((await client.request('/me')).body)).toEqual({ remaining: 1, limit: 3, rule: 3 })
      expect(JSON.parse((await client.request('/free')).body)).toBeNull()
      await client.close?.()
    }
  })

  it('fails with a clear error when no address can be found and no key is given', async () => {
    const app = build(rateLimit({ rules: '1/min' }), 'app')
    const r = await app.request('/')
    expect(r.status).toBe(500)
    const direct = new Hono()
    let error: unknown
    direct.onError((err, c) => {
      error = err
      return c.text('x', 500)
    })
    direct.use(rateLimit({ rules: '1/min' }))
    direct.get('/', (c) => c.text('ok'))
    await direct.request('/')
    expect(error).toBeInstanceOf(ConfigError)
    // Hono passes c to key, and the message says so.
    expect((error as Error).message).toMatch(
      /^\[fastlimit\] \[hono\] Cannot find the client's address .*pass key: \(c\) => \.\.\. .*getConnInfo/,
    )
    // With a key of its own, no address is needed.
    const keyed = build(rateLimit({ rules: '1/min', key: (c) => c.req.header('x-api-key') ?? 'anon' }), 'app')
    expect((await keyed.request('/', { headers: { 'x-api-key': 'a' } })).status).toBe(200)
    expect((await keyed.request('/', { headers: { 'x-api-key': 'a' } })).status).toBe(429)
  })

  it('uses different limits on different routes, sharing one limiter', async () => {
    const { limiter, clock } = frozen()
    const app = new Hono()
    app.use(rateLimit({ limiter, clock, rules: '5/min' }))
    app.post(
      '/login',
      rateLimit({ limiter, clock, rules: { limit: 1, window: '15m', name: 'login' } }),
      (c) => c.text('welcome'),
    )
    app.get(
      '/search',
      rateLimit({ limiter, clock, rules: '3/min', cost: (c) => Number(c.req.query('w') ?? 1) }),
      (c) => c.text('found'),
    )
    const client = inProcess(app)
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

  it('sends the 400 of an unusable cost itself, not through the handler', async () => {
    const app = build(
      rateLimit({
        ...frozen(),
        key: () => 'k',
        rules: '1/min',
        cost: (c) => Number(c.req.query('w')),
        handler: (c) => c.text('handler', 418),
      }),
      'app',
    )
    expect((await app.request('/?w=x')).status).toBe(400)
    expect((await app.request('/?w=1')).status).toBe(200)
    expect((await app.request('/?w=1')).status).toBe(418)
  })

  it('rejects bad adapter options', () => {
    expect(() => rateLimit({ handler: 'x' } as unknown as RateLimitOptions)).toThrow(ConfigError)
    expect(() => rateLimit({ getConnInfo: 'x' } as unknown as RateLimitOptions)).toThrow(
      /getConnInfo must be/,
    )
    expect(() => rateLimit({ handler: () => new Response(), message: 'x' })).toThrow(/not both/)
    expect(() => rateLimit({ limit: 1 } as unknown as RateLimitOptions)).toThrow(
      /^\[fastlimit\] \[hono\] Unknown option "limit"/,
    )
  })
})
