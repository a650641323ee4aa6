// The three adapters, each in a minimal real app listening on 127.0.0.1 (an ephemeral port): errors from the
// limiter go to the framework's error handling and come back as a 500 with the error's code.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import net from 'node:net'
import { rateLimit as expressRateLimit } from '@fastlimit/express'
import { rateLimit as honoRateLimit } from '@fastlimit/hono'
import { rateLimit as koaRateLimit } from '@fastlimit/koa'
import { serve } from '@hono/node-server'
import express from 'express'
import { Hono } from 'hono'
import Koa from 'koa'

export const ADAPTERS = ['express', 'hono', 'koa'] as const
export type AdapterName = (typeof ADAPTERS)[number]

/** Options common to every adapter's rateLimit() (the request type differs; the tests pass plain values). */
export type AnyOptions = Record<string, unknown>

/** Builds `rateLimit(options)` of one adapter: the middleware, or the ConfigError it throws. */
export function makeMiddleware(adapter: AdapterName, options: AnyOptions): unknown {
  if (adapter === 'express') return expressRateLimit(options as never)
  if (adapter === 'hono') return honoRateLimit(options as never)
  return koaRateLimit(options as never)
}

/** A running app. */
export interface App {
  readonly adapter: AdapterName
  readonly port: number
  readonly url: string
  close(): Promise<void>
}

function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : 'unknown'
}

async function listen(server: http.Server): Promise<number> {
  if (!server.listening) await new Promise<void>((resolve) => server.once('listening', () => resolve()))
  return (server.address() as AddressInfo).port
}

function closer(server: http.Server): () => Promise<void> {
  return () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
}

/** Starts a minimal app of `adapter` with `rateLimit(options)` in front of `GET /` (answers `ok`). */
export async function startApp(adapter: AdapterName, options: AnyOptions): Promise<App> {
  let server: http.Server
  if (adapter === 'express') {
    const app = express()
    app.use(expressRateLimit(options as never))
    app.get('/', (_req, res) => {
      res.send('ok')
    })
    app.use((err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.status(500).json({ error: errorCode(err) })
    })
    server = app.listen(0, '127.0.0.1')
  } else if (adapter === 'koa') {
    const app = new Koa()
    app.silent = true
    app.use(async (ctx, next) => {
      try {
        await next()
      } catch (err) {
        ctx.status = 500
        ctx.body = { error: errorCode(err) }
      }
    })
    app.use(koaRateLimit(options as never))
    app.use((ctx) => {
      ctx.body = 'ok'
    })
    server = http.createServer(app.callback()).listen(0, '127.0.0.1')
  } else {
    const app = new Hono()
    app.use(honoRateLimit(options as never))
    app.get('/', (c) => c.text('ok'))
    app.onError((err, c) => c.json({ error: errorCode(err) }, 500))
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as http.Server
  }
  const port = await listen(server)
  return { adapter, port, url: `http://127.0.0.1:${port}`, close: closer(server) }
}

/** One response, reduced to what the tests look at. */
export interface Reply {
  readonly status: number
  readonly body: string
  readonly headers: Record<string, string>
}

/** GET `path` with `headers` (a fresh connection each time, so nothing is shared between requests). */
export function get(app: App, path: string, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: app.port, path, method: 'GET', headers, agent: false },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          body += chunk
        })
        res.on('end', () => {
          const h: Record<string, string> = {}
          for (const [k, v] of Object.entries(res.headers)) h[k] = Array.isArray(v) ? v.join(', ') : String(v)
          resolve({ status: res.statusCode ?? 0, body, headers: h })
        })
      },
    )
    req.on('error', reject)
    req.end()
  })
}

/** Sends a raw HTTP/1.1 request (e.g. a header repeated on several lines); resolves with the status. */
export function rawGet(app: App, headerLines: readonly string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(app.port, '127.0.0.1')
    let data = ''
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => {
      data += chunk
      const m = /^HTTP\/1\.1 (\d{3})/.exec(data)
      if (m && data.includes('\r\n\r\n')) {
        socket.destroy()
        resolve(Number(m[1]))
      }
    })
    socket.on('error', reject)
    socket.write(
      `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${headerLines.map((l) => `${l}\r\n`).join('')}\r\n`,
    )
  })
}
