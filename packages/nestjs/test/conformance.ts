// The shared adapter suite, on Nest with the Express and the Fastify platform (real servers on 127.0.0.1).
// Registered by conformance.test.ts (Nest 11) and by apps/nestjs-compat10 and apps/nestjs-compat12 (Nest 10, 12).

import { PassThrough } from 'node:stream'
import { type AdapterAppOptions, adapterConformance, adaptOptions } from '@fastlimit/core/testing'
import { All, Controller, Get, HttpCode, Module, Post, Req, Res, UseGuards } from '@nestjs/common'
import { afterEach, expect, it } from 'vitest'
import {
  FastLimitGuard,
  FastLimitModule,
  RateLimit,
  type RateLimitDecoratorOptions,
  type RateLimitRequest,
  type RateLimitResponse,
  rateLimitGuard,
} from '../src/index'
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

/** Sends `body` with `status` on an Express response or a Fastify reply. */
function send(res: RateLimitResponse, status: number, type: string, body: string): void {
  if (typeof res.code === 'function' && res.raw !== undefined) res.code(status).type(type).send(body)
  else res.status(status).type(type).send(body)
}

/**
 * The suite's layered app: the module's global guard with the app options, and
 * `routeLimit = rateLimitGuard(routeOptions)` with `@UseGuards` on `/limited`, `/info` and `/login`.
 */
function layeredModule(appOptions: AdapterAppOptions, routeOptions: AdapterAppOptions) {
  const routeLimit = rateLimitGuard(adaptOptions(routeOptions, view))
  @Controller()
  class LayeredController {
    @All(['', 'search', 'health', 'free'])
    ok() {
      return 'ok'
    }

    @Get('limited')
    @UseGuards(routeLimit)
    limited() {
      return 'ok'
    }

    @Get('info')
    @UseGuards(routeLimit)
    info(@Req() req: RateLimitRequest, @Res() res: RateLimitResponse) {
      send(res, 200, 'application/json', JSON.stringify(req.rateLimit ?? null))
    }

    @Post('login')
    @HttpCode(200)
    @UseGuards(routeLimit)
    async login(@Req() req: RateLimitRequest, @Res() res: RateLimitResponse) {
      if (req.headers['x-password'] !== 'right') return send(res, 401, 'text/plain', 'wrong')
      if (req.headers['x-reset'] === 'middleware') await routeLimit.reset(req)
      else await req.rateLimit?.reset()
      send(res, 200, 'text/plain', 'welcome')
    }

    @Get('peek')
    async peek(@Req() req: RateLimitRequest, @Res() res: RateLimitResponse) {
      const now = await routeLimit.peek(req)
      send(
        res,
        200,
        'application/json',
        JSON.stringify(now === undefined ? null : { remaining: now.remaining }),
      )
    }
  }
  @Module({
    imports: [FastLimitModule.forRoot(adaptOptions(appOptions, view))],
    controllers: [LayeredController],
  })
  class LayeredModule {}
  return LayeredModule
}

/** The ended response as the suite's countWhen and settle see it (an Express response or a Fastify reply). */
const outcome = (_req: RateLimitRequest, res: RateLimitResponse) => ({
  status: res.statusCode as number,
  header: (name: string) => {
    const v = res.getHeader(name)
    return v === undefined ? undefined : String(v)
  },
})

/** `@RateLimit` arguments of the suite's options: the limiter and clock go to the module. */
function declared(options: AdapterAppOptions): [AdapterAppOptions['rules'], RateLimitDecoratorOptions] {
  const { limiter: _l, clock: _c, rules, ...rest } = adaptOptions(options, view, outcome) as AdapterAppOptions
  return [rules ?? '100/min', rest as RateLimitDecoratorOptions]
}

/** The suite's routed app: two groups (stacked `@RateLimit` on `/ab`), statuses and costs from the request, a stream, a throw. */
function routedModule(a: AdapterAppOptions, b: AdapterAppOptions) {
  const [rulesA, optionsA] = declared(a)
  const [rulesB, optionsB] = declared(b)
  // biome-ignore lint/suspicious/noExplicitAny: the suite passes its rules through as given.
  const groupA = () => RateLimit(rulesA as any, { scope: 'group-a', ...optionsA })
  // biome-ignore lint/suspicious/noExplicitAny: as above.
  const groupB = () => RateLimit(rulesB as any, { scope: 'group-b', ...optionsB })
  const fastify = (res: RateLimitResponse) => typeof res.code === 'function' && res.raw !== undefined
  const answer = (req: RateLimitRequest, res: RateLimitResponse) => {
    const use = req.headers['x-use']
    if (typeof use === 'string') res.header?.('x-used', use) ?? res.setHeader('x-used', use)
    const status = Number(req.headers['x-status'] ?? '200')
    if (fastify(res)) res.code(status)
    else res.status(status)
    return 'ok'
  }
  @Controller()
  class RoutedController {
    @Get('a')
    @groupA()
    a(@Req() req: RateLimitRequest, @Res({ passthrough: true }) res: RateLimitResponse) {
      return answer(req, res)
    }

    @Get('a2')
    @groupA()
    a2(@Req() req: RateLimitRequest, @Res({ passthrough: true }) res: RateLimitResponse) {
      return answer(req, res)
    }

    @Get('b')
    @groupB()
    b(@Req() req: RateLimitRequest, @Res({ passthrough: true }) res: RateLimitResponse) {
      return answer(req, res)
    }

    @Get('ab')
    @groupA()
    @groupB()
    ab(@Req() req: RateLimitRequest, @Res({ passthrough: true }) res: RateLimitResponse) {
      return answer(req, res)
    }

    @Get('stream')
    @groupA()
    stream(@Req() req: RateLimitRequest, @Res() res: RateLimitResponse) {
      const use = req.headers['x-use']
      if (fastify(res)) {
        if (typeof use === 'string') res.header('x-used', use)
        const body = new PassThrough()
        body.write('first')
        res.raw.on('close', () => body.end())
        res.code(200).type('text/plain').send(body)
        return
      }
      if (typeof use === 'string') res.setHeader('x-used', use)
      res.status(200).type('text/plain')
      res.write('first')
      res.on('close', () => res.end())
    }

    @Get('throw')
    @groupA()
    fail() {
      throw Object.assign(new Error('handler failed'), { code: 'E_HANDLER' })
    }
  }
  @Module({
    imports: [FastLimitModule.forRoot({ limiter: a.limiter, clock: a.clock })],
    controllers: [RoutedController],
  })
  class RoutedModule {}
  return RoutedModule
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
      makeLayeredApp: async (a, r) => client(await start(platform, layeredModule(a, r))),
      makeRoutedApp: async (a, b) => client(await start(platform, routedModule(a, b))),
    })
  }
}
