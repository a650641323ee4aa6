// The delay-mode cases of the shared adapter suite on a real Redis (a server of this file's own, on a free
// loopback port): Express, Hono and Koa apps listening on 127.0.0.1, each case on a fresh key prefix.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { FastLimit } from '@fastlimit/core'
import {
  type AdapterClient,
  adapterConformance,
  adaptOptions,
  type SuiteRequest,
} from '@fastlimit/core/testing'
import { rateLimit as expressRateLimit } from '@fastlimit/express'
import { rateLimit as honoRateLimit } from '@fastlimit/hono'
import { rateLimit as koaRateLimit } from '@fastlimit/koa'
import { RedisBackend } from '@fastlimit/redis'
import { serve } from '@hono/node-server'
import express from 'express'
import { Hono } from 'hono'
import { Redis } from 'ioredis'
import Koa from 'koa'
import { afterAll, beforeAll } from 'vitest'
import { type StandaloneSetup, startStandalone, stopAll } from '../../../packages/redis/test/servers'

let redis: StandaloneSetup
const clients: Redis[] = []
let prefixes = 0

beforeAll(async () => {
  redis = await startStandalone()
})

afterAll(async () => {
  for (const c of clients.splice(0)) c.disconnect()
  await stopAll()
})

/** A limiter on the test's Redis, on a prefix of its own. */
function redisLimiter({ onBackendError }: { onBackendError: FastLimit['onBackendError'] }): FastLimit {
  const client = new Redis({ host: '127.0.0.1', port: redis.port, lazyConnect: false })
  clients.push(client)
  return new FastLimit({
    backend: new RedisBackend({ client }),
    prefix: `delay${process.pid}x${++prefixes}`,
    onBackendError,
  })
}

const code = (err: unknown) => String((err as { code?: unknown }).code ?? 'error')

async function listening(server: http.Server): Promise<AdapterClient> {
  if (!server.listening) await new Promise<void>((resolve) => server.once('listening', () => resolve()))
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    origin,
    async request(path, init = {}) {
      const res = await fetch(origin + path, { method: init.method ?? 'GET', headers: init.headers ?? {} })
      const headers: Record<string, string> = {}
      res.headers.forEach((v, k) => {
        headers[k] = v
      })
      return { status: res.status, headers, body: await res.text() }
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

const header = (get: (name: string) => string | undefined | string[]) => (name: string) => {
  const v = get(name)
  return Array.isArray(v) ? v.join(', ') : v
}

const apps: Record<string, (o: Parameters<typeof adaptOptions>[0]) => http.Server> = {
  express: (o) => {
    const app = express()
    app.use(
      expressRateLimit(
        adaptOptions(
          o,
          (req: express.Request): SuiteRequest => ({
            method: req.method,
            path: req.path,
            header: header((n) => req.headers[n]),
          }),
        ),
      ),
    )
    app.use((_req, res) => void res.type('text/plain').send('ok'))
    app.use((err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.status(500).type('text/plain').send(code(err))
    })
    return app.listen(0, '127.0.0.1')
  },
  koa: (o) => {
    const app = new Koa()
    app.silent = true
    app.use(async (ctx, next) => {
      try {
        await next()
      } catch (err) {
        ctx.status = 500
        ctx.body = code(err)
      }
    })
    app.use(
      koaRateLimit(
        adaptOptions(
          o,
          (ctx: Koa.Context): SuiteRequest => ({
            method: ctx.method,
            path: ctx.path,
            header: header((n) => ctx.req.headers[n]),
          }),
        ),
      ),
    )
    app.use((ctx) => {
      ctx.body = 'ok'
    })
    return http.createServer(app.callback()).listen(0, '127.0.0.1')
  },
  hono: (o) => {
    const app = new Hono()
    app.use(
      honoRateLimit(
        adaptOptions(
          o,
          (c): SuiteRequest => ({
            method: c.req.method,
            path: c.req.path,
            header: (n) => c.req.header(n),
          }),
        ),
      ),
    )
    app.all('*', (c) => c.text('ok'))
    app.onError((err, c) => c.text(code(err), 500))
    return serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as http.Server
  },
}

for (const [name, make] of Object.entries(apps)) {
  adapterConformance({
    name: `@fastlimit/${name} in mode 'delay' on a real Redis`,
    cases: 'delay',
    delayLimiter: redisLimiter,
    makeApp: (options) => listening(make(options)),
  })
}
