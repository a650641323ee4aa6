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

/**
 * Starts a minimal app of `adapter` with `rateLimit(options)` in front of every path (answers `ok` to any
 * method): several option objects give several middlewares, in order.
 */
export async function startApp(
  adapter: AdapterName,
  options: AnyOptions | readonly AnyOptions[],
): Promise<App> {
  const list = Array.isArray(options) ? options : [options]
  let server: http.Server
  if (adapter === 'express') {
    const app = express()
    for (const o of list) app.use(expressRateLimit(o as never))
    app.use((_req, res) => {
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
    for (const o of list) app.use(koaRateLimit(o as never))
    app.use((ctx) => {
      ctx.body = 'ok'
    })
    server = http.createServer(app.callback()).listen(0, '127.0.0.1')
  } else {
    const app = new Hono()
    for (const o of list) app.use(honoRateLimit(o as never))
    app.all('*', (c) => c.text('ok'))
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

/** How {@link get} sends: the method, and the loopback address to connect from (127.0.0.0/8 all works on Linux). */
export interface Send {
  /** @default 'GET' */
  readonly method?: string
  /** The local address of the connection, which the server sees as its peer. @default the OS's choice (127.0.0.1) */
  readonly from?: string
}

/** GET `path` with `headers` (a fresh connection each time, so nothing is shared between requests). */
export function get(
  app: { readonly port: number },
  path: string,
  headers: Record<string, string> = {},
  send: Send = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port: app.port,
        path,
        method: send.method ?? 'GET',
        headers,
        agent: false,
        ...(send.from === undefined ? {} : { localAddress: send.from }),
      },
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

/** A running reverse proxy in front of an app. */
export interface Proxy {
  readonly port: number
  close(): Promise<void>
}

/**
 * Starts a real reverse proxy on 127.0.0.1 in front of `app`, connecting to it from `from` (e.g. 127.0.0.2,
 * so the app sees the proxy at an address of its own) and appending the address of the connection it received
 * to the forwarding header, as nginx's `$proxy_add_x_forwarded_for` does (`header: 'forwarded'` appends an RFC
 * 7239 element `for=...` instead). Whatever the client sent is kept as it is, to the left.
 */
export async function startProxy(
  app: App,
  options: { readonly from: string; readonly header?: 'x-forwarded-for' | 'forwarded' },
): Promise<Proxy> {
  const name = options.header ?? 'x-forwarded-for'
  const server = http.createServer((req, res) => {
    const client = req.socket.remoteAddress ?? ''
    const hop = name === 'forwarded' ? (client.includes(':') ? `for="[${client}]"` : `for=${client}`) : client
    const headers = { ...req.headers }
    const sent = headers[name]
    const before = Array.isArray(sent) ? sent.join(', ') : sent
    headers[name] = before === undefined || before === '' ? hop : `${before}, ${hop}`
    const upstream = http.request(
      {
        host: '127.0.0.1',
        port: app.port,
        path: req.url,
        method: req.method,
        headers,
        agent: false,
        localAddress: options.from,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers)
        answer.pipe(res)
      },
    )
    upstream.on('error', () => {
      res.statusCode = 502
      res.end()
    })
    req.pipe(upstream)
  })
  server.listen(0, '127.0.0.1')
  const port = await listen(server)
  return { port, close: closer(server) }
}

/** The registry core's HTTP layer keeps its once-per-process warnings in. */
const WARNINGS = Symbol.for('fastlimit.warnings')

/**
 * Records `console.warn` calls from now on, after forgetting which once-per-process warnings core already
 * gave (so each test sees its own). `stop()` puts `console.warn` back.
 */
export function captureWarnings(): { readonly messages: string[]; stop(): void } {
  ;((globalThis as Record<symbol, unknown>)[WARNINGS] as Set<string> | undefined)?.clear()
  const messages: string[] = []
  const original = console.warn
  console.warn = (...args: unknown[]) => {
    messages.push(args.map(String).join(' '))
  }
  return {
    messages,
    stop: () => {
      console.warn = original
    },
  }
}
