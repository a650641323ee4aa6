import { describe, expectTypeOf, it } from 'vitest'
import type { Lease } from '../concurrency'
import type { Decision } from '../limiter'
import type { RuleSet, RulesInput } from '../rules'
import { createHttpLimiter, type HttpAdapter, type HttpDenial, type HttpLimiter } from './http-limiter'
import type { RateLimitInfo } from './info'
import type { RateLimitCommonOptions } from './options'

interface Req {
  readonly user: string
}
type Res = Map<string, string>

describe('HTTP layer types', () => {
  it("takes mode 'delay' with maxDelayMs and maxQueue, and an adapter's signal", () => {
    expectTypeOf<RateLimitCommonOptions<Req>['mode']>().toEqualTypeOf<
      'enforce' | 'shadow' | 'delay' | undefined
    >()
    expectTypeOf<RateLimitCommonOptions<Req>['maxDelayMs']>().toEqualTypeOf<number | undefined>()
    expectTypeOf<RateLimitCommonOptions<Req>['maxQueue']>().toEqualTypeOf<number | undefined>()
    const options: RateLimitCommonOptions<Req> = { mode: 'delay', maxDelayMs: 5000, maxQueue: 100 }
    expectTypeOf(options).toMatchTypeOf<RateLimitCommonOptions<Req>>()
    expectTypeOf<HttpAdapter<Req, Res>['signal']>().toEqualTypeOf<
      ((req: Req, res: Res) => AbortSignal | undefined) | undefined
    >()
  })

  it('passes the framework request to every option function', () => {
    expectTypeOf<RateLimitCommonOptions<Req>['key']>().toEqualTypeOf<
      ((req: Req) => string | Promise<string>) | undefined
    >()
    const options: RateLimitCommonOptions<Req> = {
      key: (req) => req.user,
      cost: async (req) => req.user.length,
      skip: (req) => req.user === 'admin',
      onLimit: (req, decision) => {
        expectTypeOf(req).toEqualTypeOf<Req>()
        expectTypeOf(decision).toEqualTypeOf<Decision>()
      },
      message: (_req, d) => ({ retryAfterMs: d.retryAfterMs }),
      trustProxy: ['10.0.0.0/8'],
      headers: 'draft-8',
    }
    expectTypeOf(options).toMatchTypeOf<RateLimitCommonOptions<Req>>()
  })

  it('types trustProxy, skipMethods and normalize', () => {
    const options: RateLimitCommonOptions<Req> = {
      trustProxy: { hops: 1, from: ['10.0.0.0/8', 'loopback'] },
      skipMethods: ['OPTIONS', 'HEAD'],
      normalize: (id) => id.toLowerCase(),
    }
    expectTypeOf(options.normalize).toEqualTypeOf<((identity: string) => string) | undefined>()
    const any: RateLimitCommonOptions<Req> = { trustProxy: { hops: 2, from: 'any' } }
    expectTypeOf(any).toMatchTypeOf<RateLimitCommonOptions<Req>>()
    // @ts-expect-error: from is required with hops
    const noFrom: RateLimitCommonOptions<Req> = { trustProxy: { hops: 1 } }
    expectTypeOf(noFrom).toMatchTypeOf<RateLimitCommonOptions<Req>>()
    // @ts-expect-error: true would trust everything
    const yes: RateLimitCommonOptions<Req> = { trustProxy: true }
    expectTypeOf(yes).toMatchTypeOf<RateLimitCommonOptions<Req>>()
  })

  it('infers the request and response types from the adapter', () => {
    const http = createHttpLimiter(
      {},
      {
        name: 'test',
        remoteAddress: (req: Req) => req.user,
        header: () => undefined,
        method: () => 'GET',
        setHeader: (res: Res, name, value) => {
          res.set(name, value)
        },
      },
    )
    expectTypeOf(http.handle).parameters.toEqualTypeOf<[Req, Res]>()
    expectTypeOf(http.handle).returns.toEqualTypeOf<Promise<HttpDenial | undefined>>()
    // @ts-expect-error: rejects options the layer does not know
    const bad: RateLimitCommonOptions<Req> = { max: 5 }
    expectTypeOf(bad).toEqualTypeOf<RateLimitCommonOptions<Req>>()
  })

  it('says what is unknown, and which refusal a denial is', () => {
    expectTypeOf<RateLimitInfo['remaining']>().toEqualTypeOf<number | undefined>()
    expectTypeOf<RateLimitInfo['resetMs']>().toEqualTypeOf<number | undefined>()
    expectTypeOf<RateLimitInfo['limit']>().toEqualTypeOf<number>()
    expectTypeOf<RateLimitInfo['reset']>().toEqualTypeOf<() => Promise<void>>()
    expectTypeOf<RateLimitInfo['peek']>().toEqualTypeOf<() => Promise<RateLimitInfo>>()
    const denial = {} as HttpDenial
    expectTypeOf(denial.kind).toEqualTypeOf<'limit' | 'concurrency' | 'outage'>()
    expectTypeOf(denial.lease).toEqualTypeOf<Lease | undefined>()
    expectTypeOf<RateLimitCommonOptions<Req>['concurrency']>().toEqualTypeOf<
      number | { limit: number; leaseMs?: number } | undefined
    >()
    expectTypeOf(denial.decision).toEqualTypeOf<Decision>()
    const options: RateLimitCommonOptions<Req> = { invalidCost: 'reject', outageStatusCode: 503 }
    expectTypeOf(options.invalidCost).toEqualTypeOf<'reject' | number | undefined>()
  })

  it('resets and peeks by request', () => {
    const http = createHttpLimiter(
      {},
      {
        name: 'test',
        remoteAddress: (req: Req) => req.user,
        header: () => undefined,
        method: () => 'GET',
        setHeader: (_res: Res) => undefined,
      },
    )
    expectTypeOf(http.reset).toEqualTypeOf<(req: Req) => Promise<void>>()
    expectTypeOf(http.peek).toEqualTypeOf<(req: Req) => Promise<RateLimitInfo | undefined>>()
  })

  it('types countWhen and settle on the request alone, or on the request and response', () => {
    expectTypeOf<RateLimitCommonOptions<Req>['countWhen']>().toEqualTypeOf<
      ((req: Req) => boolean | Promise<boolean>) | undefined
    >()
    expectTypeOf<RateLimitCommonOptions<Req, Res>['settle']>().toEqualTypeOf<
      ((req: Req, res: Res) => number | Promise<number>) | undefined
    >()
    expectTypeOf<RateLimitCommonOptions<Req>['rules']>().toEqualTypeOf<
      RulesInput | RuleSet | ((req: Req) => RulesInput | RuleSet | Promise<RulesInput | RuleSet>) | undefined
    >()
    // Options written for the request alone serve an adapter that has a response too.
    const alone: RateLimitCommonOptions<Req> = { countWhen: (req) => req.user !== '' }
    const adapter = {
      name: 'typed',
      remoteAddress: () => undefined,
      header: () => undefined,
      method: () => 'GET',
      setHeader: (res: Res, name: string, value: string) => {
        res.set(name, value)
      },
    }
    expectTypeOf(createHttpLimiter(alone, adapter)).toEqualTypeOf<HttpLimiter<Req, Res>>()
    createHttpLimiter({ settle: (_req, res) => res.size }, adapter)
  })
})
