// Builds real Nest apps on the Express or the Fastify platform, listening on 127.0.0.1, for the tests.
import 'reflect-metadata'
import type { AdapterClient } from '@fastlimit/core/testing'
import {
  type ArgumentsHost,
  Catch,
  type DynamicModule,
  type ExceptionFilter,
  HttpException,
  type INestApplication,
  Module,
  type Type,
} from '@nestjs/common'
import { NestFactory, Reflector } from '@nestjs/core'
import nestCore from '@nestjs/core/package.json' with { type: 'json' }
import { ExpressAdapter } from '@nestjs/platform-express'
import { FastifyAdapter } from '@nestjs/platform-fastify'
import {
  FastLimitGuard,
  InvalidCostException,
  RateLimitException,
  RateLimitExceptionFilter,
} from '../src/index'

export type Platform = 'express' | 'fastify'

/** The version of the @nestjs/core these tests run on (a NestJS 10 run resolves its own copy). */
export const nestVersion: string = (nestCore as { version: string }).version

/**
 * Answers errors as the adapter suite expects: 500 with the error's `code` as the body. Other
 * HttpExceptions keep their status and response. Registered with `useGlobalFilters`, as apps do: a
 * catch-all filter of the app comes before the module's, so it hands refusals on, as the README says.
 */
@Catch()
class CodeFilter implements ExceptionFilter {
  readonly #refusals = new RateLimitExceptionFilter()

  catch(exception: unknown, host: ArgumentsHost): void {
    if (exception instanceof RateLimitException || exception instanceof InvalidCostException) {
      this.#refusals.catch(exception, host)
      return
    }
    // biome-ignore lint/suspicious/noExplicitAny: an Express response or a Fastify reply.
    const res: any = host.switchToHttp().getResponse()
    const [status, body] =
      exception instanceof HttpException
        ? [exception.getStatus(), JSON.stringify(exception.getResponse())]
        : [500, String((exception as { code?: string }).code ?? 'error')]
    if (typeof res.code === 'function' && res.raw !== undefined) {
      res.code(status).type('text/plain').send(body)
    } else {
      res.status(status).type('text/plain').send(body)
    }
  }
}

const opened: INestApplication[] = []

/** Creates the app of `module` on `platform`, listening on 127.0.0.1; rejects with the error of a bad option. */
export async function start(platform: Platform, module: Type | DynamicModule): Promise<INestApplication> {
  @Module({ imports: [module] })
  class Root {}
  const adapter = platform === 'express' ? new ExpressAdapter() : new FastifyAdapter()
  const app = await NestFactory.create(Root, adapter, { logger: false, abortOnError: false })
  opened.push(app)
  app.useGlobalFilters(new CodeFilter())
  await app.listen(0, '127.0.0.1')
  return app
}

/** Closes every app started so far. */
export async function closeAll(): Promise<void> {
  for (const app of opened.splice(0)) await app.close()
}

/** A client for a listening app. */
export async function client(app: INestApplication): Promise<AdapterClient> {
  const address = app.getHttpServer().address() as { port: number }
  const base = `http://127.0.0.1:${address.port}`
  return {
    origin: base,
    async request(path, init = {}) {
      const res = await fetch(base + path, { method: init.method ?? 'GET', headers: init.headers ?? {} })
      const headers: Record<string, string> = {}
      res.headers.forEach((v, k) => {
        headers[k] = v
      })
      return { status: res.status, headers, body: await res.text() }
    },
    close: () => app.close(),
  }
}

/** Whether the library resolves the same @nestjs/core as the tests (its guard injects this Reflector). */
export function sameNest(): boolean {
  const deps = Reflect.getMetadata('self:paramtypes', FastLimitGuard) as { index: number; param: unknown }[]
  return deps.some((d) => d.param === Reflector)
}
