// fastlimit on NestJS: a strict login route that resets on success, a weighted search route and an app-wide default.
//   pnpm --filter @fastlimit/nestjs-demo start          (PORT=3000, FASTLIMIT_BACKEND=memory, NEST_PLATFORM=express)

import 'reflect-metadata'
import { announce, limiterFromEnv } from '@fastlimit/demo-kit'
import {
  FastLimitModule,
  RateLimitInfo as Info,
  type RateLimitInfo,
  type RateLimitRequest,
  rateLimitGuard,
  SkipRateLimit,
} from '@fastlimit/nestjs'
import { Body, Controller, Get, HttpCode, Module, Post, Query, Res, UseGuards } from '@nestjs/common'
import { NestFactory } from '@nestjs/core'
import { ExpressAdapter } from '@nestjs/platform-express'
import { FastifyAdapter } from '@nestjs/platform-fastify'

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'
const platform = process.env.NEST_PLATFORM === 'fastify' ? 'fastify' : 'express'
const { limiter, label, close } = await limiterFromEnv()

/** A search costs one unit per 10 results asked for (?limit=50 costs 5), from 1 to 10. */
const searchCost = (req: RateLimitRequest) =>
  Math.min(10, Math.max(1, Math.ceil(Number(req.query?.limit ?? 10) / 10) || 1))

// Limits of their own, on top of the module's app-wide one (its global guard runs first), each
// counted in its own scope; the response carries one set of RateLimit headers for both.
const loginLimit = rateLimitGuard({
  limiter,
  scope: 'login',
  rules: { limit: 5, window: '15m', name: 'login' },
})
const searchLimit = rateLimitGuard({
  limiter,
  scope: 'search',
  rules: { limit: 30, window: '1m', name: 'search' },
  cost: searchCost,
})

@Controller()
class DemoController {
  @Get()
  home() {
    return {
      backend: label,
      platform,
      routes: {
        'POST /login': '5 failed attempts per 15 minutes per IP; a successful login clears them',
        'GET /search?q=...&limit=N': '30 units per minute, a search costs ceil(N / 10) (1 to 10)',
        'GET /health': 'not limited',
        '*': '100 per minute per IP',
      },
    }
  }

  // Logins: 5 failed attempts per 15 minutes per IP (and the app-wide limit); a successful login clears them.
  @Post('login')
  @HttpCode(200)
  @UseGuards(loginLimit)
  async login(
    @Body() body: { user?: string; password?: string } | undefined,
    // Express's response or Fastify's reply: both have status().
    @Res({ passthrough: true }) res: { status(code: number): unknown },
    @Info() limit?: RateLimitInfo,
  ) {
    if (body?.user === 'demo' && body.password === 'demo') {
      await limit?.reset() // the login limit's bucket: the last limit that counted the request
      return { ok: true, user: body.user }
    }
    res.status(401)
    return { ok: false, error: 'wrong user or password (try demo / demo)' }
  }

  // Search: 30 units a minute, charged by size.
  @Get('search')
  @UseGuards(searchLimit)
  search(@Query('q') q?: string, @Query('limit') limit?: string) {
    return { q: q ?? '', cost: searchCost({ query: { limit } }), results: [] }
  }

  @Get('health')
  @SkipRateLimit()
  health() {
    return { ok: true }
  }
}

@Module({
  // Every route: 100 requests a minute per client IP, unless it has its own @RateLimit or @SkipRateLimit
  // (a guard from rateLimitGuard() adds its limit to this one).
  imports: [FastLimitModule.forRoot({ limiter, scope: 'app', rules: '100/min' })],
  controllers: [DemoController],
})
class AppModule {}

const app = await NestFactory.create(
  AppModule,
  platform === 'fastify' ? new FastifyAdapter() : new ExpressAdapter(),
  { logger: ['error', 'warn'] },
)
await app.listen(port, host)
announce(`nestjs (${platform})`, `http://${host}:${port}`, label)

const shutdown = () => {
  app
    .close()
    .then(close)
    .finally(() => process.exit(0))
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
