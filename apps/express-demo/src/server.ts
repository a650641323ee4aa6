// fastlimit on Express: a strict login route, a weighted search route and an app-wide default.
//   pnpm --filter @fastlimit/express-demo start          (PORT=3000, FASTLIMIT_BACKEND=memory)

import { announce, limiterFromEnv } from '@fastlimit/demo-kit'
import { rateLimit } from '@fastlimit/express'
import express from 'express'

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'
const { limiter, label, close } = await limiterFromEnv()

const app = express()
app.disable('x-powered-by')
app.use(express.json())

// Every route but /health: 100 requests a minute per client IP.
app.use(rateLimit({ limiter, scope: 'app', rules: '100/min', skip: (req) => req.path === '/health' }))

// Logins: 5 attempts per 15 minutes per IP, counted whether they succeed or not.
const loginLimit = rateLimit({ limiter, scope: 'login', rules: { limit: 5, window: '15m', name: 'login' } })
app.post('/login', loginLimit, (req, res) => {
  const { user, password } = (req.body ?? {}) as { user?: string; password?: string }
  if (user === 'demo' && password === 'demo') res.json({ ok: true, user })
  else res.status(401).json({ ok: false, error: 'wrong user or password (try demo / demo)' })
})

// Search: 30 units a minute; a search costs one unit per 10 results asked for (?limit=50 costs 5).
const searchCost = (req: express.Request) =>
  Math.min(10, Math.max(1, Math.ceil(Number(req.query.limit ?? 10) / 10) || 1))
app.get(
  '/search',
  rateLimit({
    limiter,
    scope: 'search',
    rules: { limit: 30, window: '1m', name: 'search' },
    cost: searchCost,
  }),
  (req, res) => {
    const q = String(req.query.q ?? '')
    res.json({ q, cost: searchCost(req), results: [] })
  },
)

app.get('/health', (_req, res) => {
  res.json({ ok: true })
})

app.get('/', (_req, res) => {
  res.json({
    backend: label,
    routes: {
      'POST /login': '5 per 15 minutes per IP',
      'GET /search?q=...&limit=N': '30 units per minute, a search costs ceil(N / 10) (1 to 10)',
      'GET /health': 'not limited',
      '*': '100 per minute per IP',
    },
  })
})

const server = app.listen(port, host, () => {
  announce('express', `http://${host}:${port}`, label)
})

const shutdown = () => {
  server.close()
  server.closeAllConnections()
  close().finally(() => process.exit(0))
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
