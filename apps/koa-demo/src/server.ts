// fastlimit on Koa: a strict login route, a weighted search route and an app-wide default.
//   pnpm --filter @fastlimit/koa-demo start          (PORT=3000, FASTLIMIT_BACKEND=memory)

import { announce, limiterFromEnv } from '@fastlimit/demo-kit'
import { rateLimit } from '@fastlimit/koa'
import Router from '@koa/router'
import Koa, { type Context } from 'koa'

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'
const { limiter, label, close } = await limiterFromEnv()

/** Reads a small JSON body (Koa has no body parser of its own). */
async function jsonBody(ctx: Context): Promise<Record<string, unknown>> {
  let text = ''
  for await (const chunk of ctx.req) {
    text += chunk
    if (text.length > 10_000) ctx.throw(413)
  }
  try {
    return JSON.parse(text) as Record<string, unknown>
  } catch {
    return {}
  }
}

const app = new Koa()
const router = new Router()

// Every route but /health: 100 requests a minute per client IP.
app.use(rateLimit({ limiter, scope: 'app', rules: '100/min', skip: (ctx) => ctx.path === '/health' }))

// Logins: 5 attempts per 15 minutes per IP, counted whether they succeed or not.
const loginLimit = rateLimit({ limiter, scope: 'login', rules: { limit: 5, window: '15m', name: 'login' } })
router.post('/login', loginLimit, async (ctx) => {
  const { user, password } = await jsonBody(ctx)
  if (user === 'demo' && password === 'demo') {
    ctx.body = { ok: true, user }
  } else {
    ctx.status = 401
    ctx.body = { ok: false, error: 'wrong user or password (try demo / demo)' }
  }
})

// Search: 30 units a minute; a search costs one unit per 10 results asked for (?limit=50 costs 5).
const searchCost = (ctx: Context) =>
  Math.min(10, Math.max(1, Math.ceil(Number(ctx.query.limit ?? 10) / 10) || 1))
const searchLimit = rateLimit({
  limiter,
  scope: 'search',
  rules: { limit: 30, window: '1m', name: 'search' },
  cost: searchCost,
})
router.get('/search', searchLimit, (ctx) => {
  ctx.body = { q: String(ctx.query.q ?? ''), cost: searchCost(ctx), results: [] }
})

router.get('/health', (ctx) => {
  ctx.body = { ok: true }
})

router.get('/', (ctx) => {
  ctx.body = {
    backend: label,
    routes: {
      'POST /login': '5 per 15 minutes per IP',
      'GET /search?q=...&limit=N': '30 units per minute, a search costs ceil(N / 10) (1 to 10)',
      'GET /health': 'not limited',
      '*': '100 per minute per IP',
    },
  }
})

app.use(router.routes())
app.use(router.allowedMethods())

const server = app.listen(port, host, () => {
  announce('koa', `http://${host}:${port}`, label)
})

const shutdown = () => {
  server.close()
  server.closeAllConnections()
  close().finally(() => process.exit(0))
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
