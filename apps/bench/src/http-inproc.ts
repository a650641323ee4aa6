// HTTP without the network: each framework's request listener driven through Node's own
// IncomingMessage/ServerResponse on an in-memory socket, in one process per framework, modes
// interleaved round-robin. It measures the same thing as the autocannon run (CPU per request of the
// server's JavaScript) without the loopback TCP stack, whose cost is the same for every variant and
// dominates the noise on a shared machine.
//   node --import tsx src/http-inproc.ts <express|hono|koa|fastify|nestjs> <rounds> <requests per slice>
//   node http-inproc.mjs <framework> count <bare|noop|fastlimit|peer> <n> [warm-up requests, 2000]   (bundled,
//     under callgrind: one variant per process, the same warm-up, then n requests; the caller subtracts n = 0)
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import { Duplex } from 'node:stream'
import { instrumentationOn } from './callgrind-child'
import { rotate } from './harness'
import { fastifyListener, nestListener } from './http-apps'

const [framework = 'koa', roundsText = '7', nText = '20000', countText = '0', warmText = '2000'] =
  process.argv.slice(2)
const LIMIT = 1_000_000_000
const WINDOW_MS = 60_000
// countWhen: fastlimit deciding after the response, as for "skip successful requests" (each 200 refunded).
// headers (counted only, never timed): a middleware that sets fastlimit's two draft-7 headers, fixed text,
// and decides nothing: the floor of any limiter that sends them, for the instruction counts.
const MODES = ['bare', 'noop', 'fastlimit', 'peer', 'countWhen'] as const
const COUNTED_ONLY = ['headers'] as const
type Counted = (typeof MODES)[number] | (typeof COUNTED_ONLY)[number]
const POLICY = `${LIMIT};w=${WINDOW_MS / 1000}`
const RATELIMIT = `limit=${LIMIT}, remaining=${LIMIT - 1}, reset=${WINDOW_MS / 1000}`
type Mode = Counted
type Listener = (req: IncomingMessage, res: ServerResponse) => void

class MemorySocket extends Duplex {
  remoteAddress = '127.0.0.1'
  remotePort = 40000
  encrypted = false
  override _write(_chunk: unknown, _enc: BufferEncoding, cb: () => void): void {
    cb()
  }
  override _read(): void {}
  setTimeout(): this {
    return this
  }
  setNoDelay(): this {
    return this
  }
  setKeepAlive(): this {
    return this
  }
}
const socket = new MemorySocket()

async function listener(mode: Mode): Promise<Listener> {
  if (framework === 'fastify') return fastifyListener(mode)
  if (framework === 'nestjs') return nestListener(mode)
  if (framework === 'express') {
    const { default: express } = await import('express')
    const app = express()
    app.disable('x-powered-by')
    app.disable('etag')
    if (mode === 'noop') app.use((_req, _res, next) => next())
    if (mode === 'headers')
      app.use((_req, res, next) => {
        res.setHeader('ratelimit-policy', POLICY)
        res.setHeader('ratelimit', RATELIMIT)
        next()
      })
    if (mode === 'fastlimit') {
      const { rateLimit } = await import('@fastlimit/express')
      app.use(rateLimit({ rules: { limit: LIMIT, window: WINDOW_MS } }))
    }
    if (mode === 'countWhen') {
      const { rateLimit } = await import('@fastlimit/express')
      app.use(
        rateLimit({
          rules: { limit: LIMIT, window: WINDOW_MS },
          countWhen: (_req, res) => res.statusCode >= 400,
        }),
      )
    }
    if (mode === 'peer') {
      const { rateLimit } = await import('express-rate-limit')
      app.use(
        rateLimit({ windowMs: WINDOW_MS, limit: LIMIT, standardHeaders: 'draft-7', legacyHeaders: false }),
      )
    }
    app.get('/', (_req, res) => {
      res.send('ok')
    })
    return app as unknown as Listener
  }
  if (framework === 'koa') {
    const { default: Koa } = await import('koa')
    const app = new Koa()
    if (mode === 'noop') app.use((_ctx, next) => next())
    if (mode === 'headers')
      app.use((ctx, next) => {
        ctx.res.setHeader('ratelimit-policy', POLICY)
        ctx.res.setHeader('ratelimit', RATELIMIT)
        return next()
      })
    if (mode === 'fastlimit') {
      const { rateLimit } = await import('@fastlimit/koa')
      app.use(rateLimit({ rules: { limit: LIMIT, window: WINDOW_MS } }))
    }
    if (mode === 'countWhen') {
      const { rateLimit } = await import('@fastlimit/koa')
      app.use(
        rateLimit({ rules: { limit: LIMIT, window: WINDOW_MS }, countWhen: (ctx) => ctx.status >= 400 }),
      )
    }
    if (mode === 'peer') {
      const { default: ratelimit } = await import('koa-ratelimit')
      app.use(ratelimit({ driver: 'memory', db: new Map(), duration: WINDOW_MS, max: LIMIT }))
    }
    app.use((ctx) => {
      ctx.body = 'ok'
    })
    return app.callback() as unknown as Listener
  }
  const { Hono } = await import('hono')
  const { getRequestListener } = await import('@hono/node-server')
  type Env = { Bindings: import('@hono/node-server').HttpBindings }
  const app = new Hono<Env>()
  if (mode === 'noop') app.use((_c, next) => next())
  if (mode === 'headers')
    app.use((c, next) => {
      c.env.outgoing.setHeader('ratelimit-policy', POLICY)
      c.env.outgoing.setHeader('ratelimit', RATELIMIT)
      return next()
    })
  if (mode === 'fastlimit') {
    const { rateLimit } = await import('@fastlimit/hono')
    app.use(rateLimit({ rules: { limit: LIMIT, window: WINDOW_MS } }))
  }
  if (mode === 'countWhen') {
    const { rateLimit } = await import('@fastlimit/hono')
    app.use(rateLimit({ rules: { limit: LIMIT, window: WINDOW_MS }, countWhen: (c) => c.res.status >= 400 }))
  }
  if (mode === 'peer') {
    const { rateLimiter } = await import('hono-rate-limiter')
    app.use(
      rateLimiter<Env>({
        windowMs: WINDOW_MS,
        limit: LIMIT,
        standardHeaders: 'draft-7',
        keyGenerator: (c) => c.env.incoming.socket.remoteAddress ?? '',
      }),
    )
  }
  app.get('/', (c) => c.text('ok'))
  return getRequestListener(app.fetch) as unknown as Listener
}

function request(handler: Listener): Promise<number> {
  return new Promise((resolve) => {
    const req = new http.IncomingMessage(socket as never)
    req.method = 'GET'
    req.url = '/'
    req.httpVersionMajor = 1
    req.httpVersionMinor = 1
    req.httpVersion = '1.1'
    req.headers = { host: '127.0.0.1:3000', 'user-agent': 'bench', accept: '*/*' }
    req.rawHeaders = ['Host', '127.0.0.1:3000', 'User-Agent', 'bench', 'Accept', '*/*']
    req.complete = true
    req.push(null)
    const res = new http.ServerResponse(req)
    res.shouldKeepAlive = true
    res.assignSocket(socket as never)
    res.on('finish', () => {
      res.detachSocket(socket as never)
      // What Node's server does after a response finishes (resOnFinish): 'close', which countWhen waits for.
      process.nextTick(() => res.emit('close'))
      resolve(res.statusCode)
    })
    handler(req, res)
  })
}

async function serve(handler: Listener, requests: number, mode: Mode): Promise<void> {
  for (let i = 0; i < requests; i++) {
    const status = await request(handler)
    if (status !== 200) throw new Error(`${framework} ${mode}: status ${status}`)
  }
}

if (roundsText === 'count') {
  const mode = nText as Mode
  if (!(MODES as readonly string[]).includes(mode) && !(COUNTED_ONLY as readonly string[]).includes(mode))
    throw new Error(`unknown variant ${mode}`)
  const handler = await listener(mode)
  await serve(handler, Number(warmText), mode)
  instrumentationOn()
  await serve(handler, Number(countText), mode)
} else {
  const handlers = new Map<(typeof MODES)[number], Listener>()
  for (const mode of MODES) handlers.set(mode, await listener(mode))
  const n = Number(nText)
  const samples: Record<(typeof MODES)[number], number[]> = {
    bare: [],
    noop: [],
    fastlimit: [],
    peer: [],
    countWhen: [],
  }
  for (const mode of MODES) await serve(handlers.get(mode) as Listener, 3000, mode)
  for (let round = 0; round < Number(roundsText); round++) {
    for (const mode of rotate(MODES, round)) {
      const handler = handlers.get(mode) as Listener
      const before = process.cpuUsage()
      await serve(handler, n, mode)
      const used = process.cpuUsage(before)
      samples[mode].push((used.user + used.system) / n)
    }
  }
  console.log(JSON.stringify({ framework, samples }))
}
