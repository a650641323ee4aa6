import { FastLimit, MemoryBackend } from '@fastlimit/core'
import Fastify from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import { rateLimit } from './index'

const T0 = 1_700_000_040_000
const apps: ReturnType<typeof Fastify>[] = []
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close()
})

describe('request.rateLimitHandle (deprecated)', () => {
  it('is a view of request.rateLimit: the same identity and scope, reset and peek of the same bucket', async () => {
    const limiter = new FastLimit({ backend: new MemoryBackend({ clock: () => T0, cleanupIntervalMs: 0 }) })
    const app = Fastify({ logger: false })
    apps.push(app)
    await app.register(rateLimit, { limiter, rules: '5/min', scope: 'login', cost: () => 2 })
    app.get('/', async (request) => {
      const handle = request.rateLimitHandle
      const before = (await handle?.peek())?.remaining
      await handle?.reset()
      const after = (await request.rateLimit?.peek())?.remaining
      return { identity: handle?.identity, scope: handle?.scope, before, after }
    })
    app.get('/free', { config: { rateLimit: false } }, (request) => ({
      handle: request.rateLimitHandle ?? null,
    }))
    const res = await app.inject({ url: '/', remoteAddress: '127.0.0.1' })
    expect(res.json()).toEqual({ identity: '127.0.0.1', scope: 'login', before: 3, after: 5 })
    expect((await app.inject({ url: '/free', remoteAddress: '127.0.0.1' })).json()).toEqual({ handle: null })
  })
})
