// The Fastify and NestJS apps of the HTTP benchmark (served by http-server.ts, driven in process by
// http-inproc.ts): bare, with a no-op hook or guard, with fastlimit, and with the usual peer
// (@fastify/rate-limit, @nestjs/throttler). Every limiter keys by client IP, admits everything, uses its
// memory store and sends its headers. Nest's decorators are applied as calls (no compiler flag needed).
import 'reflect-metadata'
import type { IncomingMessage, ServerResponse } from 'node:http'

/** `countWhen`: fastlimit deciding after the response (skip successful requests: every 200 refunded). */
/** `headers`: fastlimit's two draft-7 headers set with fixed text, nothing decided (instruction counts only). */
export type Flavour = 'bare' | 'noop' | 'headers' | 'fastlimit' | 'peer' | 'countWhen'
export type Listener = (req: IncomingMessage, res: ServerResponse) => void

const LIMIT = 1_000_000_000
const WINDOW_MS = 60_000
const POLICY = `${LIMIT};w=${WINDOW_MS / 1000}`
const RATELIMIT = `limit=${LIMIT}, remaining=${LIMIT - 1}, reset=${WINDOW_MS / 1000}`

/** A Fastify app and its request listener (captured through serverFactory, so no socket is opened). */
export async function fastifyListener(flavour: Flavour): Promise<Listener> {
  const { default: Fastify } = await import('fastify')
  const { createServer } = await import('node:http')
  let listener: Listener | undefined
  const app = Fastify({
    serverFactory: (handler) => {
      listener = handler as Listener
      return createServer(handler)
    },
  })
  if (flavour === 'noop') app.addHook('onRequest', (_request, _reply, done) => done())
  if (flavour === 'headers')
    app.addHook('onRequest', (_request, reply, done) => {
      reply.header('ratelimit-policy', POLICY)
      reply.header('ratelimit', RATELIMIT)
      done()
    })
  if (flavour === 'fastlimit' || flavour === 'countWhen') {
    const { rateLimit } = await import('@fastlimit/fastify')
    await app.register(rateLimit, {
      rules: { limit: LIMIT, window: WINDOW_MS },
      ...(flavour === 'countWhen' ? { countWhen: (_request, reply) => reply.statusCode >= 400 } : {}),
    })
  }
  if (flavour === 'peer') {
    const { default: rateLimit } = await import('@fastify/rate-limit')
    await app.register(rateLimit, { max: LIMIT, timeWindow: WINDOW_MS })
  }
  app.get('/', () => 'ok')
  await app.ready()
  if (listener === undefined) throw new Error('fastify did not build its server')
  return listener
}

/** A Nest app on the Express platform, initialized, and its request listener (the Express app). */
export async function nestListener(flavour: Flavour): Promise<Listener> {
  const common = await import('@nestjs/common')
  const { APP_GUARD, NestFactory } = await import('@nestjs/core')
  const { ExpressAdapter } = await import('@nestjs/platform-express')

  class HomeController {
    home() {
      return 'ok'
    }
  }
  common.Controller()(HomeController)
  const home = Object.getOwnPropertyDescriptor(HomeController.prototype, 'home') as PropertyDescriptor
  common.Get()(HomeController.prototype, 'home', home)

  class NoopGuard {
    canActivate() {
      return true
    }
  }
  common.Injectable()(NoopGuard)
  class HeadersGuard {
    canActivate(context: { switchToHttp(): { getResponse(): ServerResponse } }) {
      const res = context.switchToHttp().getResponse()
      res.setHeader('ratelimit-policy', POLICY)
      res.setHeader('ratelimit', RATELIMIT)
      return true
    }
  }
  common.Injectable()(HeadersGuard)

  const imports: unknown[] = []
  const providers: unknown[] = []
  if (flavour === 'noop') providers.push({ provide: APP_GUARD, useClass: NoopGuard })
  if (flavour === 'headers') providers.push({ provide: APP_GUARD, useClass: HeadersGuard })
  if (flavour === 'fastlimit' || flavour === 'countWhen') {
    const { FastLimitModule } = await import('@fastlimit/nestjs')
    imports.push(
      FastLimitModule.forRoot({
        rules: { limit: LIMIT, window: WINDOW_MS },
        ...(flavour === 'countWhen'
          ? { countWhen: (_req: unknown, res: ServerResponse) => res.statusCode >= 400 }
          : {}),
      }),
    )
  }
  if (flavour === 'peer') {
    const { ThrottlerGuard, ThrottlerModule } = await import('@nestjs/throttler')
    imports.push(ThrottlerModule.forRoot([{ ttl: WINDOW_MS, limit: LIMIT }]))
    providers.push({ provide: APP_GUARD, useClass: ThrottlerGuard })
  }
  class AppModule {}
  common.Module({
    imports: imports as never[],
    providers: providers as never[],
    controllers: [HomeController],
  })(AppModule)
  const express = new ExpressAdapter()
  const app = await NestFactory.create(AppModule, express, { logger: false })
  const instance = express.getInstance() as { disable(name: string): void }
  instance.disable('x-powered-by')
  instance.disable('etag')
  await app.init()
  return express.getInstance() as unknown as Listener
}
