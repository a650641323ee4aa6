// The @fastlimit/hono README's usage as a Cloudflare Worker: rateLimit() at module scope, the default
// in-memory backend, the client address from Cloudflare's `cf-connecting-ip` through Hono's getConnInfo.
// Requests under /lite go to a second app built the same way on the lite entry (@fastlimit/hono/lite).
import { rateLimit } from '@fastlimit/hono'
import { rateLimit as liteRateLimit } from '@fastlimit/hono/lite'
import { type ExecutionContext, Hono } from 'hono'
import { getConnInfo } from 'hono/cloudflare-workers'

const app = new Hono()
app.use(rateLimit({ rules: '3/min', getConnInfo }))
app.get('/', (c) => c.text('hello from workerd'))

const lite = new Hono()
lite.use(liteRateLimit({ rules: '3/min', getConnInfo }))
lite.get('/lite', (c) => c.text('hello from the lite entry'))

export default {
  fetch: (request: Request, env: unknown, ctx: ExecutionContext) =>
    new URL(request.url).pathname.startsWith('/lite')
      ? lite.fetch(request, env, ctx)
      : app.fetch(request, env, ctx),
}
