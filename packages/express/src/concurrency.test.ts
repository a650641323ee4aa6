// The concurrency option on Express 5 and 4, over a real socket: the shared suite of @fastlimit/core/testing.
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { adaptOptions, concurrencyConformance, type ListeningApp } from '@fastlimit/core/testing'
import express, { type Request } from 'express'
import express4 from 'express4'
import { rateLimit } from './index'

const view = (req: Request) => ({
  method: req.method,
  path: req.path,
  header: (name: string) => req.get(name),
})

async function listen(app: {
  listen: (port: number, host: string, cb: () => void) => Server
}): Promise<ListeningApp> {
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
}

for (const [name, make] of [
  ['Express 5', () => express()],
  ['Express 4', () => express4() as unknown as ReturnType<typeof express>],
] as const) {
  concurrencyConformance({
    name: `@fastlimit/express on ${name}`,
    listen: (options, hold) => {
      const app = make()
      app.use(rateLimit(adaptOptions(options, view)))
      app.get('/slow', async (_req, res) => {
        await hold()
        res.send('ok')
      })
      app.use((_req: Request, res: import('express').Response) => {
        res.send('ok')
      })
      return listen(app)
    },
  })
}
