// fastlimit on Fastify: a strict login route that resets on success, a weighted search route and an app-wide default.
//   pnpm --filter @fastlimit/fastify-demo start          (PORT=3000, FASTLIMIT_BACKEND=memory)

import { announce, limiterFromEnv } from '@fastlimit/demo-kit'
import { rateLimit } from '@fastlimit/fastify'
import Fastify, { type FastifyRequest } from 'fastify'

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'
const { limiter, label, close } = await limiterFromEnv()

const app = Fastify()

// Every route: 100 requests a minute per client IP, unless the route says otherwise.
await app.register(rateLimit, { limiter, scope: 'app', rules: '100/min' })

// Logins: 5 failed attempts per 15 minutes per IP, on top of the app-wide limit; a successful login
// clears them. A second limit runs as a preHandler, after the app-wide one (at onRequest).
const loginLimit = app.rateLimit({ scope: 'login', rules: { limit: 5, window: '15m', name: 'login' } })
app.post('/login', { preHandler: loginLimit }, async (request, reply) => {
  const { user, password } = (request.body ?? {}) as { user?: string; password?: string }
  if (user === 'demo' && password === 'demo') {
    await loginLimit.reset(request) // or request.rateLimit?.reset()
    return { ok: true, user }
  }
  return reply.code(401).send({ ok: false, error: 'wrong user or password (try demo / demo)' })
})

// Search: 30 units a minute; a search costs one unit per 10 results asked for (?limit=50 costs 5).
const searchCost = (request: FastifyRequest) => {
  const limit = Number((request.query as { limit?: string }).limit ?? 10)
  return Math.min(10, Math.max(1, Math.ceil(limit / 10) || 1))
}
app.get(
  '/search',
  {
    preHandler: app.rateLimit({
      scope: 'search',
      rules: { limit: 30, window: '1m', name: 'search' },
      cost: searchCost,
    }),
  },
  (request) => ({
    q: String((request.query as { q?: string }).q ?? ''),
    cost: searchCost(request),
    results: [],
  }),
)

app.get('/health', { config: { rateLimit: false } }, () => ({ ok: true }))

app.get('/', () => ({
  backend: label,
  routes: {
    'POST /login': '5 failed attempts per 15 minutes per IP; a successful login clears them',
    'GET /search?q=...&limit=N': '30 units per minute, a search costs ceil(N / 10) (1 to 10)',
    'GET /health': 'not limited',
    '*': '100 per minute per IP',
  },
}))

await app.listen({ port, host })
announce('fastify', `http://${host}:${port}`, label)

const shutdown = () => {
  app
    .close()
    .then(close)
    .finally(() => process.exit(0))
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
