// One HTTP server variant per process, for the HTTP benchmark:
//   node --import tsx src/http-server.ts <variant> <port>
// Variants: <framework>-<bare|noop|fastlimit|peer>, framework one of express, hono, koa, fastify, nestjs
// (Nest on its Express platform; both built in http-apps.ts); noop adds one
// middleware that only calls the next, to show what any middleware costs. Every limiter keys
// by client IP, admits everything (a limit no run reaches), uses its memory store and sends its headers.
import { createServer } from 'node:http'
import { fastifyListener, nestListener } from './http-apps'

const [variant = 'express-bare', portText = '0'] = process.argv.slice(2)
const port = Number(portText)
const [framework, flavour] = variant.split('-') as [
  'express' | 'hono' | 'koa' | 'fastify' | 'nestjs',
  'bare' | 'fastlimit' | 'peer' | 'noop',
]
const LIMIT = 1_000_000_000
const WINDOW_MS = 60_000
const body = 'ok'

async function expressApp() {
  const { default: express } = await import('express')
  const app = express()
  app.disable('x-powered-by')
  app.disable('etag')
  if (flavour === 'fastlimit') {
    const { rateLimit } = await import('@fastlimit/express')
    app.use(rateLimit({ rules: { limit: LIMIT, window: WINDOW_MS } }))
  } else if (flavour === 'peer') {
    const { rateLimit } = await import('express-rate-limit')
    app.use(
      rateLimit({ windowMs: WINDOW_MS, limit: LIMIT, standardHeaders: 'draft-7', legacyHeaders: false }),
    )
  }
  if (flavour === 'noop') app.use((_req, _res, next) => next())
  app.get('/', (_req, res) => {
    res.send(body)
  })
  return app
}

async function honoHandler() {
  const { Hono } = await import('hono')
  const app = new Hono<{ Bindings: import('@hono/node-server').HttpBindings }>()
  if (flavour === 'fastlimit') {
    const { rateLimit } = await import('@fastlimit/hono')
    app.use(rateLimit({ rules: { limit: LIMIT, window: WINDOW_MS } }))
  } else if (flavour === 'peer') {
    const { rateLimiter } = await import('hono-rate-limiter')
    app.use(
      rateLimiter<{ Bindings: import('@hono/node-server').HttpBindings }>({
        windowMs: WINDOW_MS,
        limit: LIMIT,
        standardHeaders: 'draft-7',
        keyGenerator: (c) => c.env.incoming.socket.remoteAddress ?? '',
      }),
    )
  }
  if (flavour === 'noop')
    app.use(async (_c, next) => {
      await next()
    })
  app.get('/', (c) => c.text(body))
  return app
}

async function koaApp() {
  const { default: Koa } = await import('koa')
  const app = new Koa()
  if (flavour === 'fastlimit') {
    const { rateLimit } = await import('@fastlimit/koa')
    app.use(rateLimit({ rules: { limit: LIMIT, window: WINDOW_MS } }))
  } else if (flavour === 'peer') {
    const { default: ratelimit } = await import('koa-ratelimit')
    app.use(ratelimit({ driver: 'memory', db: new Map(), duration: WINDOW_MS, max: LIMIT }))
  }
  if (flavour === 'noop')
    app.use(async (_ctx, next) => {
      await next()
    })
  app.use((ctx) => {
    ctx.body = body
  })
  return app
}

let server: import('node:http').Server
if (framework === 'express') {
  server = createServer(await expressApp())
} else if (framework === 'koa') {
  server = createServer((await koaApp()).callback())
} else if (framework === 'fastify') {
  server = createServer(await fastifyListener(flavour))
} else if (framework === 'nestjs') {
  server = createServer(await nestListener(flavour))
} else {
  const { serve } = await import('@hono/node-server')
  const app = await honoHandler()
  server = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port, hostname: '127.0.0.1' }, () =>
      resolve(s as import('node:http').Server),
    )
  })
}
if (framework !== 'hono') await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
const address = server.address()
process.send?.({ ready: true, port: typeof address === 'object' && address ? address.port : port })
process.on('disconnect', () => process.exit(0))
// The parent reads this process's CPU time (user and system, in µs) before and after each slice.
process.on('message', (m: unknown) => {
  if (m === 'cpu') process.send?.({ cpu: process.cpuUsage() })
})
