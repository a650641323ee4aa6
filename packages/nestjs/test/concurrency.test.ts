// The concurrency option on Nest with the Express and the Fastify platform, over a real socket: the
// shared suite of @fastlimit/core/testing (slots released when the response ends or the client destroys
// its socket mid-request).
import { type AdapterAppOptions, adaptOptions, concurrencyConformance } from '@fastlimit/core/testing'
import { Controller, Get, Module } from '@nestjs/common'
import { FastLimitModule, type RateLimitRequest } from '../src/index'
import { type Platform, start } from './apps'

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

for (const platform of ['express', 'fastify'] as Platform[]) {
  concurrencyConformance({
    name: `@fastlimit/nestjs with the ${platform} platform`,
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
