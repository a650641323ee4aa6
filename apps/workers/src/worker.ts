// The @fastlimit/hono README's usage as a Cloudflare Worker: rateLimit() at module scope, the default
// in-memory backend, the client address from Cloudflare's `cf-connecting-ip` through Hono's getConnInfo.
import { rateLimit } from '@fastlimit/hono'
import { Hono } from 'hono'
import { getConnInfo } from 'hono/cloudflare-workers'

const app = new Hono()
app.use(rateLimit({ rules: '3/min', getConnInfo }))
app.get('/', (c) => c.text('hello from workerd'))

export default app
