// fastlimit on Hono (Node): a strict login route, a weighted search route and an app-wide default.
//   pnpm --filter @fastlimit/hono-demo start          (PORT=3000, FASTLIMIT_BACKEND=memory)

import { announce, limiterFromEnv } from '@fastlimit/demo-kit'
import { rateLimit } from '@fastlimit/hono'
import { serve } from '@hono/node-server'
import { type Context, Hono } from 'hono'

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'
const { limiter, label, close } = await limiterFromEnv()

const app = new Hono()

// Every route but /health: 100 requests a minute per client IP.
app.use(rateLimit({ limiter, scope: 'app', rules: '100/min', skip: (c) => c.req.path === '/health' }))

// Logins: 5 attempts per 15 minutes per IP, counted whether they succeed or not.
const loginLimit = rateLimit({ limiter, scope: 'login', rules: { limit: 5, window: '15m', name: 'login' } })
app.post('/login', loginLimit, async (c) => {
  const { user, password } = (await c.req.json().catch(() => ({}))) as { user?: string; password?: string }
  if (user === 'demo' && password === 'demo') return c.json({ ok: true, user })
  return c.json({ ok: false, error: 'wrong user or password (try demo / demo)' }, 401)
})

// Search: 30 units a minute; a search costs one unit per 10 results asked for (?limit=50 costs 5).
const searchCost = (c: Context) =>
  Math.min(10, Math.max(1, Math.ceil(Number(c.req.query('limit') ?? 10) / 10) || 1))
const searchLimit = rateLimit({
  limiter,
  scope: 'search',
  rules: { limit: 30, window: '1m', name: 'search' },
  cost: searchCost,
})
app.get('/search', searchLimit, (c) =>
  c.json({ q: c.req.query('q') ?? '', cost: searchCost(c), results: [] }),
)

app.get('/health', (c) => c.json({ ok: true }))

app.get('/', (c) =>
  c.json({
    backend: label,
    routes: {
      'POST /login': '5 per 15 minutes per IP',
      'GET /search?q=...&limit=N': '30 units per minute, a search costs ceil(N / 10) (1 to 10)',
      'GET /health': 'not limited',
      '*': '100 per minute per IP',
    },
  }),
)

const server = serve({ fetch: app.fetch, port, hostname: host }, (info) => {
  announce('hono', `http://${host}:${info.port}`, label)
})

const shutdown = () => {
  server.close()
  close().finally(() => process.exit(0))
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
