// The concurrency option on Nest with the Express and the Fastify platform, over a real socket: the
// shared suite of @fastlimit/core/testing (slots released when the response ends or the client destroys
// its socket mid-request), and Nest's own cases. Registered by concurrency.test.ts (Nest 11) and by
// apps/nestjs-compat10 and apps/nestjs-compat12 (Nest 10, 12).

import { FastLimit, MemoryBackend } from '@fastlimit/core'
import { type AdapterAppOptions, adaptOptions, concurrencyConformance } from '@fastlimit/core/testing'
import { Controller, Get, Module, Res, UseGuards } from '@nestjs/common'
import { afterEach, describe, expect, it } from 'vitest'
import {
  FastLimitGuard,
  FastLimitModule,
  RateLimit,
  type RateLimitRequest,
  type RateLimitResponse,
} from '../src/index'
import { client, closeAll, type Platform, start } from './apps'

const view = (req: RateLimitRequest) => ({
  method: req.method as string,
  path: String(req.url).split('?')[0] as string,
  header: (name: string) => {
    const v = req.headers[name]
    return Array.isArray(v) ? v.join(', ') : (v as string | undefined)
  },
})

/** `GET /slow` answers once the suite lets it; `GET /` at once; the module's guard is global. */
function slowModule(options: AdapterAppOptions, hold: () => Promise<void>) {
  @Controller()
  class SlowController {
    @Get('slow')
    async slow() {
      await hold()
      return 'ok'
    }

    @Get()
    ok() {
      return 'ok'
    }
  }
  @Module({
    imports: [FastLimitModule.forRoot(adaptOptions(options, view))],
    controllers: [SlowController],
  })
  class SlowModule {}
  return SlowModule
}

/** A gate for held handlers: `hold()` waits until `open()`. */
function gate() {
  let open: () => void = () => undefined
  const opened = new Promise<void>((r) => {
    open = r
  })
  let entered = 0
  return {
    hold: async () => {
      entered++
      await opened
    },
    open: () => open(),
    entered: () => entered,
  }
}

/** Registers the concurrency suite and Nest's own concurrency cases on both platforms (`version`: `'Nest 11'`). */
export function nestConcurrency(version: string): void {
  for (const platform of ['express', 'fastify'] as Platform[]) {
    concurrencyConformance({
      name: `@fastlimit/nestjs on ${version} with the ${platform} platform`,
      listen: async (options, hold) => {
        const app = await start(platform, slowModule(options, hold))
        const server = app.getHttpServer()
        const { port } = server.address() as { port: number }
        return {
          url: `http://127.0.0.1:${port}`,
          close: async () => {
            server.closeAllConnections()
            await app.close()
          },
        }
      },
    })
  }

  describe(`concurrency on Nest routes (${version})`, () => {
    afterEach(closeAll)

    for (const platform of ['express', 'fastify'] as Platform[]) {
      it(`a @RateLimit with concurrency holds the slot of a route guarded twice once (${platform})`, async () => {
        const limiter = new FastLimit({ backend: new MemoryBackend() })
        const g = gate()
        @Controller()
        class TwiceController {
          // The global guard and this one both run: the request is counted once, holding one slot.
          @Get('slow')
          @UseGuards(FastLimitGuard)
          @RateLimit('100/min', { key: () => 'k', concurrency: 1 })
          async slow() {
            await g.hold()
            return 'ok'
          }

          @Get('other')
          @RateLimit('100/min', { key: () => 'k', concurrency: 1 })
          other() {
            return 'ok'
          }
        }
        @Module({ imports: [FastLimitModule.forRoot({ limiter })], controllers: [TwiceController] })
        class TwiceModule {}
        const app = await client(await start(platform, TwiceModule))
        const held = app.request('/slow')
        for (let i = 0; g.entered() < 1; i++) {
          if (i > 2000) throw new Error('the held request never reached its handler')
          await new Promise((r) => setTimeout(r, 5))
        }
        // Held once though guarded twice: a second request is refused for concurrency.
        const refused = await app.request('/slow')
        expect(refused.status).toBe(429)
        expect(JSON.parse(refused.body)).toMatchObject({ concurrency: { limit: 1, inFlight: 1 } })
        // Another route, another scope: its own slots.
        expect((await app.request('/other')).status).toBe(200)
        g.open()
        expect((await held).status).toBe(200)
        // The slot came back with the response.
        expect((await app.request('/slow')).status).toBe(200)
      })

      it(`gives the slot back when the handler throws and when it answers through @Res() (${platform})`, async () => {
        const limiter = new FastLimit({ backend: new MemoryBackend() })
        @Controller()
        class EndsController {
          @Get('throw')
          fail() {
            throw Object.assign(new Error('handler failed'), { code: 'E_HANDLER' })
          }

          @Get('raw')
          raw(@Res() res: RateLimitResponse) {
            if (typeof res.code === 'function' && res.raw !== undefined) res.code(200).send('raw')
            else res.status(200).send('raw')
          }
        }
        @Module({
          imports: [FastLimitModule.forRoot({ limiter, key: () => 'k', scope: 'ends', concurrency: 1 })],
          controllers: [EndsController],
        })
        class EndsModule {}
        const app = await client(await start(platform, EndsModule))
        // One slot: each request is admitted only if the one before gave its slot back.
        for (let i = 0; i < 3; i++) {
          expect(await app.request('/throw')).toMatchObject({ status: 500, body: 'E_HANDLER' })
          expect(await app.request('/raw')).toMatchObject({ status: 200, body: 'raw' })
        }
      })
    }
  })
}
