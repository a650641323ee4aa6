// The shared adapter suite, on Nest with the Express and the Fastify platform (real servers on 127.0.0.1).
// Registered by conformance.test.ts (Nest 11) and by apps/nestjs-compat10 and apps/nestjs-compat12 (Nest 10, 12).
import { type AdapterAppOptions, adapterConformance, adaptOptions } from '@fastlimit/core/testing'
import { All, Controller, Get, Module, UseGuards } from '@nestjs/common'
import { afterEach, expect, it } from 'vitest'
import { FastLimitGuard, FastLimitModule, type RateLimitRequest } from '../src/index'
import { client, closeAll, nestVersion, type Platform, sameNest, start } from './apps'

const view = (req: RateLimitRequest) => ({
  method: req.method as string,
  path: String(req.url).split('?')[0] as string,
  header: (name: string) => {
    const v = req.headers[name]
    return Array.isArray(v) ? v.join(', ') : (v as string | undefined)
  },
})

/** `ok` on every path the suite asks for; `/limited` guarded on its own when the guard is not global. */
function suiteModule(options: AdapterAppOptions, mount: 'app' | 'route') {
  @Controller()
  class AnyController {
    @All(['', 'search', 'health', 'free'])
    ok() {
      return 'ok'
    }

    @Get('limited')
    @UseGuards(FastLimitGuard)
    limited() {
      return 'ok'
    }
  }
  @Module({
    imports: [FastLimitModule.forRoot({ ...adaptOptions(options, view), globalGuard: mount === 'app' })],
    controllers: [AnyController],
  })
  class SuiteModule {}
  return SuiteModule
}

/** Registers the adapter suite on both platforms, for the Nest whose packages resolve here (its major version). */
export function nestConformance(major: number): void {
  const version = `Nest ${major}`
  afterEach(closeAll)
  it(`runs on NestJS ${major}, one copy for the tests and the library`, () => {
    expect(nestVersion.split('.')[0]).toBe(String(major))
    expect(sameNest()).toBe(true)
  })
  for (const platform of ['express', 'fastify'] as Platform[]) {
    adapterConformance({
      name: `@fastlimit/nestjs on ${version} with the ${platform} platform`,
      makeApp: async (options, mount) => client(await start(platform, suiteModule(options, mount))),
    })
  }
}
