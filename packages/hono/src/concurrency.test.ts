// The concurrency option on Hono over @hono/node-server, on a real socket: the shared suite of
// @fastlimit/core/testing. Off Node (no `env.outgoing`) the slot is released when the handlers return.
import type { AddressInfo } from 'node:net'
import { FastLimit, MemoryBackend } from '@fastlimit/core'
import { adaptOptions, concurrencyConformance } from '@fastlimit/core/testing'
import { serve } from '@hono/node-server'
import { type Context, Hono } from 'hono'
import { describe, expect, it } from 'vitest'
import { rateLimit } from './index'

const view = (c: Context) => ({
  method: c.req.method,
  path: c.req.path,
  header: (name: string) => c.req.header(name),
})

concurrencyConformance({
  name: '@fastlimit/hono on @hono/node-server',
  listen: async (options, hold) => {
    const app = new Hono()
    app.use(rateLimit(adaptOptions(options, view)))
    app.get('/slow', async (c) => {
      await hold()
      return c.text('ok')
    })
    app.all('*', (c) => c.text('ok'))
    const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
      const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s))
    })
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      close: () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve())
          ;(server as { closeAllConnections?: () => void }).closeAllConnections?.()
        }),
    }
  },
})

describe('the concurrency option off Node (app.request)', () => {
  it('holds the slot while the handler runs and releases it when it returns', async () => {
    const limiter = new FastLimit({ backend: new MemoryBackend() })
    const app = new Hono()
    let open: () => void = () => undefined
    const opened = new Promise<void>((r) => {
      open = r
    })
    app.use(rateLimit({ limiter, key: () => 'k', concurrency: 1 }))
    app.get('/slow', async (c) => {
      await opened
      return c.text('ok')
    })
    app.all('*', (c) => c.text('ok'))
    const slow = app.request('/slow')
    await new Promise((r) => setTimeout(r, 20))
    const refused = await app.request('/')
    expect(refused.status).toBe(429)
    expect(await refused.json()).toMatchObject({ concurrency: { limit: 1, inFlight: 1 } })
    open()
    expect((await slow).status).toBe(200)
    expect((await app.request('/')).status).toBe(200)
    const probe = await limiter.acquire('k', { limit: 1 })
    expect(probe.holders).toBe(1)
  })
})
