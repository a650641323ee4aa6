// The concurrency option on Koa 3 and 2, over a real socket: the shared suite of @fastlimit/core/testing.
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { adaptOptions, concurrencyConformance } from '@fastlimit/core/testing'
import Koa, { type Context } from 'koa'
import Koa2 from 'koa2'
import { rateLimit } from './index'

const view = (ctx: Context) => ({
  method: ctx.method,
  path: ctx.path,
  header: (name: string) => ctx.get(name) || undefined,
})

for (const [name, make] of [
  ['Koa 3', () => new Koa()],
  ['Koa 2', () => new Koa2() as unknown as Koa],
] as const) {
  concurrencyConformance({
    name: `@fastlimit/koa on ${name}`,
    listen: async (options, hold) => {
      const app = make()
      app.use(rateLimit(adaptOptions(options, view)))
      app.use(async (ctx) => {
        if (ctx.path === '/slow') await hold()
        ctx.body = 'ok'
      })
      const server = await new Promise<Server>((resolve) => {
        const s = app.listen(0, '127.0.0.1', () => resolve(s))
      })
      return {
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        close: () =>
          new Promise<void>((resolve) => {
            server.close(() => resolve())
            server.closeAllConnections()
          }),
      }
    },
  })
}
