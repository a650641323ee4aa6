// What is Nest's own: decorators, parameter decorators, the exception and its filter, the module's forms.
// Registered by nest.test.ts (Nest 11) and by apps/nestjs-compat10 and apps/nestjs-compat12 (Nest 10, 12).
import { ConfigError, type Decision, FastLimit, MemoryBackend } from '@fastlimit/core'
import type { AdapterClient } from '@fastlimit/core/testing'
import {
  type ArgumentsHost,
  Catch,
  Controller,
  type ExceptionFilter,
  Get,
  Headers,
  Inject,
  Injectable,
  Module,
  Post,
  type Type,
  UseFilters,
  UseGuards,
} from '@nestjs/common'
import { afterEach, describe, expect, it } from 'vitest'
import {
  FastLimitGuard,
  FastLimitModule,
  type FastLimitModuleOptions,
  RateLimit,
  RateLimitDecision,
  RateLimitException,
  RateLimitHandle,
  rateLimitGuard,
  SkipRateLimit,
} from '../src/index'
import { client, closeAll, type Platform, start } from './apps'

const T0 = 1_700_000_040_000
const frozen = () => {
  const now = () => T0
  return {
    clock: now,
    limiter: new FastLimit({ backend: new MemoryBackend({ clock: now, cleanupIntervalMs: 0 }) }),
  }
}

@Controller('cats')
@RateLimit('2/min')
class CatsController {
  @Get()
  list() {
    return 'cats'
  }

  @Get('one')
  one() {
    return 'cat'
  }

  @Get('many')
  @RateLimit('3/min')
  many() {
    return 'many cats'
  }

  @Get('free')
  @SkipRateLimit()
  free() {
    return 'free cat'
  }
}

@Controller('open')
@SkipRateLimit()
class OpenController {
  @Get()
  open() {
    return 'open'
  }

  @Get('strict')
  @RateLimit('1/min')
  strict() {
    return 'strict'
  }
}

@Controller()
class MiscController {
  @Get()
  home() {
    return 'home'
  }

  @Get('a')
  @RateLimit('1/min')
  a() {
    return 'a'
  }

  @Get('b')
  @RateLimit('1/min')
  b() {
    return 'b'
  }

  @Get('c')
  @RateLimit('1/min', { scope: 'shared' })
  c() {
    return 'c'
  }

  @Get('d')
  @RateLimit('1/min', { scope: 'shared' })
  d() {
    return 'd'
  }

  @Get('me')
  me(@RateLimitDecision() decision?: Decision, @RateLimitHandle() handle?: RateLimitHandle) {
    return { remaining: decision?.remaining ?? null, identity: handle?.identity ?? null }
  }

  @Post('login')
  @RateLimit({ limit: 2, window: '15m', name: 'login' }, { scope: 'login' })
  async login(@Headers('x-password') password: string, @RateLimitHandle() handle?: RateLimitHandle) {
    if (password !== 'right') return { ok: false }
    await handle?.reset()
    return { ok: true }
  }
}

@Catch(RateLimitException)
class TeapotFilter implements ExceptionFilter {
  catch(exception: RateLimitException, host: ArgumentsHost): void {
    // biome-ignore lint/suspicious/noExplicitAny: an Express response or a Fastify reply.
    const res: any = host.switchToHttp().getResponse()
    const body = JSON.stringify({ retryAfterMs: exception.decision.retryAfterMs })
    if (typeof res.code === 'function' && res.raw !== undefined) res.code(418).send(body)
    else res.status(418).send(body)
  }
}

@Controller('teapot')
@UseFilters(TeapotFilter)
@RateLimit('1/min')
class TeapotController {
  @Get()
  tea() {
    return 'tea'
  }
}

function appModule(options: FastLimitModuleOptions, controllers: Type[]) {
  @Module({ imports: [FastLimitModule.forRoot(options)], controllers })
  class AppModule {}
  return AppModule
}

const ALL: Type[] = [CatsController, OpenController, MiscController, TeapotController]

/** Registers the tests on both platforms, for the Nest whose packages resolve here (`version` names it). */
export function nestBehaviour(version: string): void {
  afterEach(closeAll)

  for (const platform of ['express', 'fastify'] as Platform[]) {
    describe(`@fastlimit/nestjs on ${version} with the ${platform} platform`, () => {
      const app = async (options: FastLimitModuleOptions = frozen(), controllers = ALL) =>
        client(await start(platform, appModule(options, controllers)))
      const statuses = async (c: AdapterClient, path: string, n: number) => {
        const out: number[] = []
        for (let i = 0; i < n; i++) out.push((await c.request(path)).status)
        return out
      }

      it('limits a controller as one, lets a handler override it, and skips where told', async () => {
        const c = await app({ ...frozen(), rules: '100/min' })
        // The controller's 2/min is shared by its handlers.
        expect([...(await statuses(c, '/cats', 1)), ...(await statuses(c, '/cats/one', 2))]).toEqual([
          200, 200, 429,
        ])
        expect(await statuses(c, '/cats/many', 4)).toEqual([200, 200, 200, 429])
        expect(await statuses(c, '/cats/free', 5)).toEqual([200, 200, 200, 200, 200])
        expect(await statuses(c, '/open', 5)).toEqual([200, 200, 200, 200, 200])
        expect(await statuses(c, '/open/strict', 2)).toEqual([200, 429])
        const denied = await c.request('/cats')
        expect(denied.headers.ratelimit).toBe('limit=2, remaining=0, reset=30')
        expect(denied.headers['content-type']).toBe('application/problem+json')
        // The module's default limit (100/min) was not charged by any of those.
        expect((await c.request('/')).headers.ratelimit).toBe('limit=100, remaining=99, reset=1')
      })

      it('counts each decorated handler apart, unless they share a scope', async () => {
        const c = await app()
        expect([...(await statuses(c, '/a', 2)), ...(await statuses(c, '/b', 2))]).toEqual([
          200, 429, 200, 429,
        ])
        expect([...(await statuses(c, '/c', 1)), ...(await statuses(c, '/d', 1))]).toEqual([200, 429])
      })

      it('hands the decision and the handle to the handler, and resets on a successful login', async () => {
        const c = await app()
        expect(JSON.parse((await c.request('/me')).body)).toEqual({ remaining: 99, identity: '127.0.0.1' })
        const login = (password: string) =>
          c.request('/login', { method: 'POST', headers: { 'x-password': password } })
        expect(JSON.parse((await login('wrong')).body)).toEqual({ ok: false })
        expect(JSON.parse((await login('right')).body)).toEqual({ ok: true })
        expect((await login('wrong')).status).toBe(201)
        expect((await login('wrong')).status).toBe(201)
        const refused = await login('wrong')
        expect(refused.status).toBe(429)
        expect(refused.headers['retry-after']).toBe('450')
      })

      it("lets the app's own filter answer a RateLimitException", async () => {
        const c = await app()
        await c.request('/teapot')
        const r = await c.request('/teapot')
        expect(r.status).toBe(418)
        expect(JSON.parse(r.body)).toEqual({ retryAfterMs: 60_000 })
        expect(r.headers['retry-after']).toBe('60')
      })

      it('without its filter, refusals go through Nest as an HttpException, headers kept', async () => {
        @Module({
          imports: [FastLimitModule.forRoot({ ...frozen(), exceptionFilter: false })],
          controllers: ALL,
        })
        class Bare {}
        const nest = await start(platform, Bare)
        // No catch-all of the app's own: Nest's BaseExceptionFilter answers.
        const c = await client(nest)
        await c.request('/a')
        const r = await c.request('/a')
        expect(r.status).toBe(429)
        expect(r.headers['retry-after']).toBe('60')
        expect(JSON.parse(r.body)).toMatchObject({ status: 429, title: 'Too Many Requests' })
      })

      it('applies the guard only where @UseGuards puts it with globalGuard: false', async () => {
        @Controller('guarded')
        @UseGuards(FastLimitGuard)
        class Guarded {
          @Get()
          g() {
            return 'g'
          }
        }
        const c = await app({ ...frozen(), rules: '1/min', globalGuard: false }, [MiscController, Guarded])
        expect(await statuses(c, '/', 3)).toEqual([200, 200, 200])
        expect(await statuses(c, '/guarded', 2)).toEqual([200, 429])
      })

      it('counts a request once when the guard runs twice for it (global and @UseGuards)', async () => {
        @Controller('twice')
        @UseGuards(FastLimitGuard)
        class Twice {
          @Get()
          @RateLimit('2/min')
          t() {
            return 't'
          }
        }
        const c = await app(frozen(), [Twice])
        expect(await statuses(c, '/twice', 3)).toEqual([200, 200, 429])
      })

      it('takes its options from forRootAsync, and builds a limiter on the backend given', async () => {
        @Injectable()
        class Settings {
          readonly rules = '1/min'
        }
        @Module({ providers: [Settings], exports: [Settings] })
        class SettingsModule {}
        const backend = new MemoryBackend({ clock: () => T0, cleanupIntervalMs: 0 })
        @Module({
          imports: [
            FastLimitModule.forRootAsync({
              imports: [SettingsModule],
              inject: [Settings],
              useFactory: async (settings: Settings) => ({ backend, rules: settings.rules, clock: () => T0 }),
            }),
          ],
          controllers: [MiscController],
        })
        class AsyncModule {}
        const nest = await start(platform, AsyncModule)
        const c = await client(nest)
        expect(await statuses(c, '/', 2)).toEqual([200, 429])
        // The module built the limiter and closes it with the app; the backend is yours.
        const limiter = nest.get(FastLimit)
        await nest.close()
        await expect(limiter.check('x', '1/min')).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_CLOSED' })
        expect(
          await backend.checkAndIncrement('k', { algorithm: 'gcra', limit: 1, windowMs: 1000 }, 1),
        ).toMatchObject({
          allowed: true,
        })
      })

      it('injects the FastLimit the guard uses', async () => {
        @Controller('admin')
        class Admin {
          constructor(@Inject(FastLimit) readonly limiter: FastLimit) {}
          @Post('unblock')
          @SkipRateLimit()
          async unblock() {
            await this.limiter.reset('127.0.0.1')
            return 'unblocked'
          }
        }
        const c = await app({ ...frozen(), rules: '1/min' }, [MiscController, Admin])
        expect(await statuses(c, '/', 2)).toEqual([200, 429])
        expect((await c.request('/admin/unblock', { method: 'POST' })).body).toBe('unblocked')
        expect(await statuses(c, '/', 2)).toEqual([200, 429])
      })
    })
  }

  describe(`options (${version})`, () => {
    it('are checked when the app is created, and in decorators when they are applied', async () => {
      await expect(start('express', appModule({ rules: '5/fortnight' }, [MiscController]))).rejects.toThrow(
        ConfigError,
      )
      await expect(
        start('express', appModule({ windowMs: 1 } as unknown as FastLimitModuleOptions, [MiscController])),
      ).rejects.toThrow(/^\[fastlimit\] \[nestjs\] Unknown option "windowMs"/)
      expect(() => RateLimit('1/x')).toThrow(ConfigError)
      expect(() => RateLimit('1/min', { key: 'ip' as unknown as () => string })).toThrow(
        /^\[fastlimit\] \[nestjs\] key must be a function/,
      )
      expect(() => FastLimitModule.forRoot({ globalGuard: 'no' as unknown as boolean })).toThrow(
        /globalGuard must be true or false/,
      )
      expect(() => FastLimitModule.forRootAsync({} as never)).toThrow(/forRootAsync\(\) needs useFactory/)
      // A guard of its own takes a limit's options only: the module's are refused, not ignored.
      expect(() => rateLimitGuard({ rules: '5/fortnight' })).toThrow(ConfigError)
      expect(() => rateLimitGuard({ globalGuard: false } as never)).toThrow(
        /^\[fastlimit\] \[nestjs\] rateLimitGuard\(\) takes a limit's options, not the module's: globalGuard/,
      )
    })
  })
}
