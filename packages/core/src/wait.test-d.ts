import { describe, expectTypeOf, it } from 'vitest'
import { type Decision, FastLimit, type Throttled, throttle, type WaitOptions } from './index'

describe('wait and throttle types', () => {
  it('limiter.wait resolves with a Decision and takes typed options', () => {
    const l = new FastLimit()
    expectTypeOf(l.wait('u', '10/s')).toEqualTypeOf<Promise<Decision>>()
    expectTypeOf<WaitOptions['signal']>().toEqualTypeOf<AbortSignal | undefined>()
    expectTypeOf<WaitOptions['maxWaitMs']>().toEqualTypeOf<number | undefined>()
    // @ts-expect-error: an unknown option
    l.wait('u', '10/s', { timeout: 5 })
  })

  it('throttle keeps the parameters, this and the awaited return type', () => {
    const get = throttle(async (url: string, retries?: number) => ({ url, retries }), { rules: '10/s' })
    expectTypeOf(get).parameters.toEqualTypeOf<[url: string, retries?: number]>()
    expectTypeOf(get).returns.toEqualTypeOf<Promise<{ url: string; retries: number | undefined }>>()
    // A synchronous function gives a promise of its result; a promise is not nested.
    const sync = throttle((a: number, b: number) => a + b, { rules: '10/s' })
    expectTypeOf(sync).toEqualTypeOf<(this: unknown, a: number, b: number) => Promise<number>>()
    const nested = throttle(async () => Promise.resolve('x'), { rules: '10/s' })
    expectTypeOf(nested).returns.toEqualTypeOf<Promise<string>>()
    // `this` is kept.
    const method = throttle(
      function (this: { base: number }, x: number) {
        return this.base + x
      },
      { rules: '10/s' },
    )
    expectTypeOf(method).thisParameter.toEqualTypeOf<{ base: number }>()
    expectTypeOf<Throttled<(x: Date) => boolean>>().toEqualTypeOf<
      (this: unknown, x: Date) => Promise<boolean>
    >()
    // @ts-expect-error: the wrong argument type
    get(42)
  })

  it('types key and cost as functions of the same arguments', () => {
    throttle(async (host: string, n: number) => host.repeat(n), {
      rules: '10/s',
      key: (host, n) => {
        expectTypeOf(host).toEqualTypeOf<string>()
        expectTypeOf(n).toEqualTypeOf<number>()
        return host
      },
      cost: (host, n) => host.length + n,
    })
    throttle(async (host: string) => host, {
      rules: '10/s',
      // @ts-expect-error: a key must be a string
      key: (host) => host.length,
    })
  })
})
