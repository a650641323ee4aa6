import { PassThrough } from 'node:stream'
import { ConfigError, FastLimit, MemoryBackend } from '@fastlimit/core'
import {
  type AdapterAppOptions,
  type AdapterClient,
  adapterConformance,
  adaptOptions,
  type SuiteResponse,
} from '@fastlimit/core/testing'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import Fastify4 from 'fastify4'
import { afterEach, describe, expect, it } from 'vitest'
import { type RateLimitOptions, type RouteRateLimitOptions, rateLimit } from './index'

type Factory = typeof Fastify

// A clock that does not move: nothing here depends on how fast the machine is.
const T0 = 1_700_000_040_000
const frozen = () => {
  const now = () => T0
  return {
    clock: now,
    limiter: new FastLimit({ backend: new MemoryBackend({ clock: now, cleanupIntervalMs: 0 }) }),
  }
}

const view = (request: FastifyRequest) => ({
  method: request.method,
  path: request.url.split('?')[0] as string,
  header: (name: string) => {
    const v = request.headers[name]
    return Array.isArray(v) ? v.join(', ') : v
  },
})

function flatHeaders(headers: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(headers)) {
    if (v !== undefined) out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : String(v)
  }
  return out
}

/** A client that sends requests through Fastify's `inject` (no socket; the peer is 127.0.0.1). */
function injector(app: FastifyInstance): AdapterClient {
  return {
    async request(path, init = {}) {
      const res = await app.inject({
        method: (init.method ?? 'GET') as 'GET',
        url: path,
        headers: init.headers ?? {},
        remoteAddress: '127.0.0.1',
      })
      return { status: res.statusCode, headers: flatHeaders(res.headers), body: res.body }
    },
    close: () => app.close(),
  }
}

/** A client that sends real requests to the app listening on 127.0.0.1. */
async function listener(app: FastifyInstance): Promise<AdapterClient> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`
  return {
    origin: base,
    async request(path, init = {}) {
      const res = await fetch(base + path, {
        method: init.method ?? 'GET',
        headers: init.headers ?? {},
      })
      const headers: Record<string, string> = {}
      res.headers.forEach((v, k) => {
        headers[k] = v
      })
      return { status: res.status, headers, body: await res.text() }
    },
    close: () => app.close(),
  }
}

const apps: FastifyInstance[] = []

/** The app the suites drive: `ok` on every path, errors as 500 with their code. */
async function build(
  lib: Factory,
  options: RateLimitOptions,
  mount: 'app' | 'route' | 'config',
  routes?: (app: FastifyInstance) => void,
): Promise<FastifyInstance> {
  const app = lib({ logger: false }) as unknown as FastifyInstance
  apps.push(app)
  app.setErrorHandler((err, _request, reply) => {
    reply
      .code(500)
      .type('text/plain')
      .send(String((err as { code?: string }).code ?? 'error'))
  })
  const ok = () => 'ok'
  try {
    if (mount === 'app') {
      await app.register(rateLimit, options)
      routes?.(app)
      app.route({ method: ['GET', 'POST', 'OPTIONS'], url: '/*', handler: ok })
    } else if (mount === 'route') {
      await app.register(rateLimit, { ...options, global: false })
      routes?.(app)
      app.get('/limited', { config: { rateLimit: true } }, ok)
      app.route({ method: ['GET', 'POST', 'OPTIONS'], url: '/*', handler: ok })
    } else {
      // The plugin with no options; every option in the route's config.
      await app.register(rateLimit)
      routes?.(app)
      app.route({
        method: ['GET', 'POST', 'OPTIONS'],
        url: '/*',
        config: { rateLimit: options },
        handler: ok,
      })
    }
    await app.ready()
  } catch (err) {
    await app.close()
    throw err
  }
  return app
}

afterEach(async () => {
  for (const app of apps.splice(0)) await app.close()
})

/** The ended response as the suite's countWhen and settle see it. */
const outcome = (_request: FastifyRequest, reply: FastifyReply) => ({
  status: reply.statusCode,
  header: (name: string) => {
    const v = reply.getHeader(name)
    return v === undefined ? undefined : String(v)
  },
})

/** The suite's routed app: two groups (fastify.rateLimit hooks), a route in both, a stream, a throw. */
async function routed(lib: Factory, a: AdapterAppOptions, b: AdapterAppOptions): Promise<FastifyInstance> {
  const app = lib({ logger: false }) as unknown as FastifyInstance
  apps.push(app)
  app.setErrorHandler((err, _request, reply) => {
    reply
      .code(500)
      .type('text/plain')
      .send(String((err as { code?: string }).code ?? 'error'))
  })
  await app.register(rateLimit, { global: false })
  const groupA = app.rateLimit(adaptOptions(a, view, outcome) as RouteRateLimitOptions)
  const groupB = app.rateLimit(adaptOptions(b, view, outcome) as RouteRateLimitOptions)
  const answer = (request: FastifyRequest, reply: FastifyReply) => {
    const use = request.headers['x-use']
    if (typeof use === 'string') reply.header('x-used', use)
    reply
      .code(Number(request.headers['x-status'] ?? '200'))
      .type('text/plain')
      .send('ok')
  }
  app.get('/a', { onRequest: groupA }, answer)
  app.get('/a2', { onRequest: groupA }, answer)
  app.get('/b', { onRequest: groupB }, answer)
  app.get('/ab', { onRequest: [groupA, groupB] }, answer)
  app.get('/stream', { onRequest: groupA }, (request, reply) => {
    const use = request.headers['x-use']
    if (typeof use === 'string') reply.header('x-used', use)
    const body = new PassThrough()
    body.write('first')
    reply.raw.on('close', () => body.end())
    reply.code(200).type('text/plain').send(body)
  })
  app.get('/throw', { onRequest: groupA }, () => {
    throw Object.assign(new Error('handler failed'), { code: 'E_HANDLER' })
  })
  await app.ready()
  return app
}

/**
 * The suite's layered app: the plugin app-wide, and `routeLimit = fastify.rateLimit(routeOptions)`
 * on `/limited`, `/info` and `/login`, as a `preHandler` so that it runs after the app-wide limit
 * (the plugin adds its `onRequest` hook after a route's own).
 */
async function layered(
  lib: Factory,
  appOptions: AdapterAppOptions,
  routeOptions: AdapterAppOptions,
): Promise<FastifyInstance> {
  const app = lib({ logger: false }) as unknown as FastifyInstance
  apps.push(app)
  app.setErrorHandler((err, _request, reply) => {
    reply
      .code(500)
      .type('text/plain')
      .send(String((err as { code?: string }).code ?? 'error'))
  })
  await app.register(rateLimit, adaptOptions(appOptions, view) as RateLimitOptions)
  const routeLimit = app.rateLimit(adaptOptions(routeOptions, view) as RouteRateLimitOptions)
  app.get('/limited', { preHandler: routeLimit }, () => 'ok')
  app.get('/info', { preHandler: routeLimit }, (request, reply) => {
    reply.type('application/json').send(JSON.stringify(request.rateLimit ?? null))
  })
  app.post('/login', { preHandler: routeLimit }, async (request, reply) => {
    if (request.headers['x-password'] !== 'right') return reply.code(401).type('text/plain').send('wrong')
    if (request.headers['x-reset'] === 'middleware') await routeLimit.reset(request)
    else await request.rateLimit?.reset()
    return reply.type('text/plain').send('welcome')
  })
  app.get('/peek', async (request, reply) => {
    const now = await routeLimit.peek(request)
    return reply
      .type('application/json')
      .send(JSON.stringify(now === undefined ? null : { remaining: now.remaining }))
  })
  app.route({ method: ['GET', 'POST', 'OPTIONS'], url: '/*', handler: () => 'ok' })
  await app.ready()
  return app
}

for (const [version, lib] of [
  ['Fastify 5', Fastify],
  ['Fastify 4', Fastify4 as unknown as Factory],
] as const) {
  const options = (o: AdapterAppOptions) => adaptOptions(o, view) as RateLimitOptions
  adapterConformance({
    name: `@fastlimit/fastify on ${version} (inject)`,
    makeApp: async (o, mount) => injector(await build(lib, options(o), mount)),
    makeLayeredApp: async (a, r) => injector(await layered(lib, a, r)),
    makeRoutedApp: async (a, b) => injector(await routed(lib, a, b)),
  })
  adapterConformance({
    name: `@fastlimit/fastify on ${version} (listening on 127.0.0.1)`,
    makeApp: async (o, mount) => listener(await build(lib, options(o), mount)),
    makeLayeredApp: async (a, r) => listener(await layered(lib, a, r)),
    makeRoutedApp: async (a, b) => listener(await routed(lib, a, b)),
  })
  adapterConformance({
    name: `@fastlimit/fastify on ${version} (every option in config.rateLimit)`,
    makeApp: async (o, mount) => injector(await build(lib, options(o), mount === 'app' ? 'config' : mount)),
    makeLayeredApp: async (a, r) => injector(await layered(lib, a, r)),
  })

  describe(`@fastlimit/fastify on ${version}`, () => {
    const json = async (
      client: AdapterClient,
      path: string,
      init?: Parameters<AdapterClient['request']>[1],
    ) => JSON.parse((await client.request(path, init)).body)

    it('replaces the app-wide limit on a route with config.rateLimit, and exempts routes with false', async () => {
      const app = await build(lib, { ...frozen(), rules: '3/min' }, 'app', (app) => {
        app.post('/login', { config: { rateLimit: { scope: 'login', rules: '1/15m' } } }, () => 'welcome')
        app.get('/health', { config: { rateLimit: false } }, () => 'up')
      })
      const client = injector(app)
      expect((await client.request('/login', { method: 'POST' })).body).toBe('welcome')
      const login = await client.request('/login', { method: 'POST' })
      expect(login.status).toBe(429)
      expect(login.headers.ratelimit).toBe('limit=1, remaining=0, reset=900')
      expect(login.headers['retry-after']).toBe('900')
      // The login attempts did not count against the app-wide limit.
      const home = await client.request('/')
      expect(home.headers.ratelimit).toBe('limit=3, remaining=2, reset=20')
      for (let i = 0; i < 5; i++) {
        const health = await client.request('/health')
        expect(health.status).toBe(200)
        expect(health.headers.ratelimit).toBeUndefined()
      }
    })

    it("counts a route's own limit apart, unless routes name the same scope", async () => {
      const app = await build(lib, { ...frozen(), rules: '9/min' }, 'app', (app) => {
        app.get('/a', { config: { rateLimit: { rules: '1/min' } } }, () => 'a')
        app.get('/b', { config: { rateLimit: { rules: '1/min' } } }, () => 'b')
        app.get('/c', { config: { rateLimit: { rules: '1/min', scope: 'group' } } }, () => 'c')
        app.get('/d', { config: { rateLimit: { rules: '1/min', scope: 'group' } } }, () => 'd')
      })
      const client = injector(app)
      const status = async (path: string) => (await client.request(path)).status
      expect([await status('/a'), await status('/b'), await status('/a'), await status('/b')]).toEqual([
        200, 200, 429, 429,
      ])
      expect([await status('/c'), await status('/d')]).toEqual([200, 429])
      const handles = await app.inject('/a')
      expect(handles.statusCode).toBe(429)
    })

    it('limits every route of the context it is registered in and below, not its siblings', async () => {
      const app = lib({ logger: false }) as unknown as FastifyInstance
      apps.push(app)
      await app.register(async (api) => {
        await api.register(rateLimit, { ...frozen(), rules: '1/min' })
        api.get('/api/a', () => 'a')
        await api.register(async (nested) => {
          nested.get('/api/nested', () => 'nested')
        })
      })
      await app.register(async (web) => {
        web.get('/web', () => 'web')
      })
      const client = injector(app)
      expect((await client.request('/api/a')).status).toBe(200)
      expect((await client.request('/api/a')).status).toBe(429)
      // One identity, one limiter, the same rule: the nested route shares the count.
      expect((await client.request('/api/nested')).status).toBe(429)
      for (let i = 0; i < 3; i++) expect((await client.request('/web')).status).toBe(200)
    })

    it("counts a route's own limit once when the plugin is registered again below, with the inner options", async () => {
      const app = lib({ logger: false }) as unknown as FastifyInstance
      apps.push(app)
      const outer = frozen()
      const inner = frozen()
      await app.register(rateLimit, { ...outer, rules: '100/min' })
      await app.register(async (child) => {
        await child.register(rateLimit, { ...inner, rules: '100/min', headers: 'draft-6' })
        child.get('/own', { config: { rateLimit: { rules: '2/min' } } }, () => 'own')
        child.get('/both', () => 'both')
      })
      const client = injector(app)
      const own = []
      for (let i = 0; i < 3; i++) own.push(await client.request('/own'))
      expect(own.map((r) => r.status)).toEqual([200, 200, 429])
      // The inner registration's options (draft-6 headers, its limiter) apply to the route's own limit.
      expect(own[0]?.headers['ratelimit-remaining']).toBe('1')
      expect(own[0]?.headers.ratelimit).toBeUndefined()
      // Both app-wide limits apply to a route without its own: each registration adds its limit.
      const both = await client.request('/both')
      expect(both.headers['ratelimit-remaining']).toBe('99')
      expect(both.headers.ratelimit).toBe('limit=100, remaining=99, reset=1')
    })

    it('hands the decision and a handle to the handler, and resets the bucket on success', async () => {
      const app = await build(lib, { ...frozen(), rules: '3/min' }, 'app', (app) => {
        app.post(
          '/login',
          { config: { rateLimit: { scope: 'login', rules: '2/15m' } } },
          async (request, reply) => {
            if (request.headers['x-password'] !== 'right') return reply.code(401).send('wrong')
            await request.rateLimitHandle?.reset()
            return 'welcome'
          },
        )
        app.get('/me', async (request) => {
          const d = request.rateLimit
          const h = request.rateLimitHandle
          const peeked = await h?.peek()
          return {
            remaining: d?.remaining,
            identity: h?.identity,
            scope: h?.scope ?? null,
            peeked: peeked?.remaining,
          }
        })
      })
      const client = injector(app)
      expect(await json(client, '/me')).toEqual({
        remaining: 2,
        identity: '127.0.0.1',
        scope: null,
        peeked: 2,
      })
      const login = (password: string) =>
        client.request('/login', { method: 'POST', headers: { 'x-password': password } })
      expect((await login('wrong')).status).toBe(401)
      expect((await login('right')).status).toBe(200)
      // The successful login forgot the failures: two more attempts.
      expect((await login('wrong')).status).toBe(401)
      expect((await login('wrong')).status).toBe(401)
      expect((await login('wrong')).status).toBe(429)
    })

    it('gives no decision nor handle to skipped requests', async () => {
      const app = await build(lib, { ...frozen(), skip: (r) => r.url === '/free' }, 'app', (app) => {
        app.get('/free', (request) => ({
          decision: request.rateLimit ?? null,
          handle: request.rateLimitHandle ?? null,
        }))
      })
      expect(await json(injector(app), '/free')).toEqual({ decision: null, handle: null })
    })

    it('lets a handler send the refusal, with the headers already set, or falls back to the default', async () => {
      const app = await build(
        lib,
        {
          ...frozen(),
          rules: '1/min',
          handler: (request, reply, decision) => {
            if (request.url === '/teapot') reply.code(418).send({ retryAfterMs: decision.retryAfterMs })
          },
        },
        'app',
      )
      const client = injector(app)
      await client.request('/teapot')
      const r = await client.request('/teapot')
      expect(r.status).toBe(418)
      expect(JSON.parse(r.body)).toEqual({ retryAfterMs: 60_000 })
      expect(r.headers['retry-after']).toBe('60')
      expect(r.headers.ratelimit).toBe('limit=1, remaining=0, reset=60')
      const other = await client.request('/other')
      expect(other.status).toBe(429)
      expect(other.headers['content-type']).toBe('application/problem+json')
    })

    it('passes a throwing handler to the error handler', async () => {
      const app = await build(
        lib,
        {
          rules: '1/min',
          handler: async () => {
            throw Object.assign(new Error('boom'), { code: 'E_HANDLER' })
          },
        },
        'app',
      )
      const client = injector(app)
      await client.request('/')
      expect(await client.request('/')).toMatchObject({ status: 500, body: 'E_HANDLER' })
    })

    it('runs at preValidation or preHandler when asked, so key and cost can read the body', async () => {
      for (const hook of ['preValidation', 'preHandler'] as const) {
        const app = await build(lib, { ...frozen(), rules: '10/min' }, 'app', (app) => {
          app.post(
            '/search',
            {
              config: {
                rateLimit: {
                  hook,
                  key: (r) => String((r.body as { user?: string }).user),
                  cost: (r) => Number((r.body as { size?: number }).size),
                },
              },
            },
            (request) => ({
              remaining: request.rateLimit?.remaining,
              identity: request.rateLimitHandle?.identity,
              scope: request.rateLimitHandle?.scope,
            }),
          )
        })
        const r = await app.inject({ method: 'POST', url: '/search', payload: { user: 'ann', size: 4 } })
        expect(r.json()).toEqual({
          remaining: 6,
          identity: 'ann',
          scope: expect.stringMatching(/^POST__search-/),
        })
      }
    })

    it("keys by request.ip with trustProxy: 'fastify', and only then", async () => {
      const make = async (trustProxy: RateLimitOptions['trustProxy']) => {
        const app = lib({ logger: false, trustProxy: true }) as unknown as FastifyInstance
        apps.push(app)
        await app.register(rateLimit, { ...frozen(), rules: '1/min', ...(trustProxy ? { trustProxy } : {}) })
        app.get('/', () => 'ok')
        return injector(app)
      }
      const from = (client: AdapterClient, ip: string) =>
        client.request('/', { headers: { 'x-forwarded-for': ip } })
      const fastifyIp = await make('fastify')
      expect((await from(fastifyIp, '198.51.100.1')).status).toBe(200)
      expect((await from(fastifyIp, '198.51.100.2')).status).toBe(200)
      expect((await from(fastifyIp, '198.51.100.2')).status).toBe(429)
      const socket = await make(undefined)
      expect((await from(socket, '198.51.100.1')).status).toBe(200)
      expect((await from(socket, '198.51.100.2')).status).toBe(429)
    })

    it('builds extra hooks with fastify.rateLimit(), for the not-found handler or a second limit', async () => {
      const app = lib({ logger: false }) as unknown as FastifyInstance
      apps.push(app)
      await app.register(rateLimit, { ...frozen(), rules: '5/min' })
      app.setNotFoundHandler(
        { preHandler: app.rateLimit({ scope: 'missing', rules: '1/min' }) },
        (_r, reply) => {
          reply.code(404).send('no such page')
        },
      )
      app.get('/burst', { onRequest: app.rateLimit({ scope: 'burst', rules: '2/min' }) }, () => 'ok')
      // The plugin's own hook given again on a route it limits anyway: counted once.
      app.get('/again', { onRequest: app.rateLimit() }, () => 'ok')
      const client = injector(app)
      expect((await client.request('/nope')).status).toBe(404)
      expect((await client.request('/nope2')).status).toBe(429)
      const statuses = []
      for (let i = 0; i < 4; i++) statuses.push((await client.request('/burst')).status)
      expect(statuses).toEqual([200, 200, 429, 429])
      expect((await client.request('/again')).headers.ratelimit).toBe('limit=5, remaining=2, reset=36')
      expect(() => app.rateLimit({ rules: '1/x' })).toThrow(ConfigError)
    })

    it('refuses to share a context with another plugin that decorated fastify.rateLimit', async () => {
      const app = lib({ logger: false }) as unknown as FastifyInstance
      apps.push(app)
      app.decorate('rateLimit', (() => () => {}) as never)
      await expect(app.register(rateLimit, {})).rejects.toThrow(/already decorated by another plugin/)
    })

    it('closes the limiter it created when the app closes, and leaves yours open', async () => {
      const mine = frozen()
      const app = await build(lib, mine, 'app')
      await app.close()
      expect(await mine.limiter.check('x', '1/min')).toMatchObject({ allowed: true })
    })

    it('rejects bad options at register, and a bad config.rateLimit at the route', async () => {
      await expect(build(lib, { global: 'yes' } as unknown as RateLimitOptions, 'app')).rejects.toThrow(
        /^\[fastlimit\] \[fastify\] global must be true or false/,
      )
      await expect(build(lib, { hook: 'onSend' } as unknown as RateLimitOptions, 'app')).rejects.toThrow(
        /^\[fastlimit\] \[fastify\] hook must be 'onRequest', 'preValidation' or 'preHandler'/,
      )
      await expect(build(lib, { windowMs: 1 } as unknown as RateLimitOptions, 'app')).rejects.toThrow(
        /^\[fastlimit\] \[fastify\] Unknown option "windowMs"/,
      )
      await expect(build(lib, { handler: () => {}, message: 'x' }, 'app')).rejects.toThrow(
        /Give handler or message, not both/,
      )
      await expect(
        build(lib, {}, 'app', (app) => {
          app.get('/x', { config: { rateLimit: { rules: '5/fortnight' } } }, () => 'x')
        }),
      ).rejects.toThrow(/^\[fastlimit\] \[fastify\] GET \/x: /)
      await expect(
        build(lib, {}, 'app', (app) => {
          app.get('/y', { config: { rateLimit: 'strict' as unknown as RouteRateLimitOptions } }, () => 'y')
        }),
      ).rejects.toThrow(/config.rateLimit of GET \/y must be an options object, true or false, got "strict"/)
    })
  })
}

describe('responses', () => {
  it('are the same through inject and a real socket', async () => {
    const seen: SuiteResponse[][] = []
    for (const make of [injector, listener]) {
      const client = await make(await build(Fastify, { ...frozen(), rules: '1/min' }, 'app'))
      seen.push([await client.request('/'), await client.request('/')])
    }
    const pick = (r: SuiteResponse) => [r.status, r.headers.ratelimit, r.headers['retry-after'], r.body]
    expect(seen[0]?.map(pick)).toEqual(seen[1]?.map(pick))
  })
})
