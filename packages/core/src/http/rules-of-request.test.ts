import { describe, expect, it, vi } from 'vitest'
import { FastLimit } from '../limiter'
import { MemoryBackend } from '../memory'
import { fakeClock } from '../testing'
import { createHttpLimiter, type HttpAdapter } from './http-limiter'
import type { RateLimitInfo } from './info'
import type { RateLimitCommonOptions } from './options'

interface Req {
  key: string
  plan?: unknown
  info?: RateLimitInfo
}
type Res = Record<string, string>

const adapter: HttpAdapter<Req, Res> = {
  name: 'test',
  requestName: 'req',
  remoteAddress: () => '203.0.113.7',
  header: () => undefined,
  method: () => 'GET',
  setHeader: (res, name, value) => {
    res[name] = value
  },
  attach: (req, _res, info) => {
    req.info = info
  },
  attached: (req) => req.info,
}

const T0 = 1_700_000_040_000

function make(options: RateLimitCommonOptions<Req>) {
  const clock = fakeClock(T0)
  const limiter = new FastLimit({ backend: new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }) })
  const http = createHttpLimiter<Req, Res>(
    { limiter, clock: clock.now, key: (req) => req.key, ...options },
    adapter,
  )
  const send = async (req: Req) => {
    const res: Res = {}
    const denial = await http.handle(req, res)
    return { status: denial?.status ?? 200, res, req }
  }
  return { limiter, http, send }
}

const PLANS: Record<string, unknown> = {
  free: '2/min',
  pro: ['5/min', '100/day'],
  team: { limit: 3, window: '1m', name: 'team' },
}

describe('rules as a function of the request', () => {
  it('limits each request by the rules it returns (sync or async), with their own headers', async () => {
    for (const async of [false, true]) {
      const fn = (req: Req) => PLANS[req.plan as string] as string
      const { send } = make({ rules: async ? async (req) => fn(req) : fn })
      const statuses = async (key: string, plan: string, n: number) => {
        const out: number[] = []
        for (let i = 0; i < n; i++) out.push((await send({ key, plan })).status)
        return out
      }
      expect(await statuses('a', 'free', 3)).toEqual([200, 200, 429])
      expect(await statuses('b', 'pro', 6)).toEqual([200, 200, 200, 200, 200, 429])
      expect(await statuses('c', 'team', 4)).toEqual([200, 200, 200, 429])
      const pro = await send({ key: 'd', plan: 'pro' })
      expect(pro.res['ratelimit-policy']).toBe('5;w=60, 100;w=86400')
      expect(pro.res.ratelimit).toBe('limit=5, remaining=4, reset=12')
      const team = await send({ key: 'e', plan: 'team' })
      expect(team.res['ratelimit-policy']).toBe('3;w=60')
      expect(team.req.info?.rule.name).toBe('team')
    }
  })

  it('compiles each value once: the same strings or objects cost no parsing per request', async () => {
    const { limiter, send } = make({ rules: (req) => PLANS[req.plan as string] as string })
    const rules = vi.spyOn(limiter, 'rules')
    for (let i = 0; i < 50; i++) {
      await send({ key: `k${i}`, plan: 'free' })
      await send({ key: `k${i}`, plan: 'team' })
      await send({ key: `k${i}`, plan: 'pro' })
    }
    // Once per distinct value, whatever the number of requests.
    expect(rules).toHaveBeenCalledTimes(3)
  })

  it('fails a request whose function returns something that is not a rule, naming the value', async () => {
    for (const bad of ['100/fortnight', { limit: 0, window: '1m' }, [], undefined, 42]) {
      const { send } = make({ rules: () => bad as string })
      const error = await send({ key: 'a' }).then(
        () => undefined,
        (err: unknown) => err,
      )
      expect((error as { code?: string }).code, String(bad)).toBe('ERR_FASTLIMIT_ARGUMENT')
      expect((error as Error).message).toContain(
        `[fastlimit] [test] rules(req) returned ${JSON.stringify(bad) ?? 'undefined'}, which is not a rule: `,
      )
    }
    const { send } = make({
      rules: async () => {
        throw Object.assign(new Error('no plan'), { code: 'E_PLAN' })
      },
    })
    await expect(send({ key: 'a' })).rejects.toMatchObject({ code: 'E_PLAN' })
  })

  it("peeks and resets a request's bucket under its own rules", async () => {
    const { http, send } = make({ rules: (req) => PLANS[req.plan as string] as string })
    await send({ key: 'a', plan: 'pro' })
    const { req } = await send({ key: 'a', plan: 'pro' })
    expect((await req.info?.peek())?.remaining).toBe(3)
    expect((await http.peek({ key: 'a', plan: 'pro' }))?.remaining).toBe(3)
    expect((await http.peek({ key: 'a', plan: 'free' }))?.remaining).toBe(2)
    await http.reset(req)
    expect((await http.peek({ key: 'a', plan: 'pro' }))?.remaining).toBe(5)
  })

  it('shares buckets with a fixed-rules middleware of the same limiter, scope and rules', async () => {
    const { limiter, send } = make({ rules: () => '2/min', scope: 'api' })
    const fixed = createHttpLimiter<Req, Res>(
      { limiter, rules: '2/min', scope: 'api', key: (r) => r.key },
      adapter,
    )
    await send({ key: 'a' })
    expect((await fixed.peek({ key: 'a' }))?.remaining).toBe(1)
  })
})
