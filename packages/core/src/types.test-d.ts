import { describe, expectTypeOf, it } from 'vitest'
import {
  type Algorithm,
  type Backend,
  type BackendResult,
  type BucketConfig,
  type Charge,
  type Decision,
  FastLimit,
  gcra,
  type Lease,
  type MemoryBackend,
  parseRule,
  type Reservation,
  type Rule,
  type Settlement,
  type StepFunction,
  type SyncBackend,
  step,
} from './index'

describe('public types', () => {
  it('types the protocol precisely', () => {
    expectTypeOf<Algorithm>().toEqualTypeOf<
      'fixed-window' | 'sliding-window' | 'sliding-log' | 'token-bucket' | 'leaky-bucket' | 'gcra'
    >()
    expectTypeOf<Backend['checkAndIncrement']>().returns.toEqualTypeOf<Promise<BackendResult>>()
    expectTypeOf<Backend['checkAndIncrementAll']>().returns.toEqualTypeOf<Promise<BackendResult[]>>()
    expectTypeOf<MemoryBackend>().toExtend<Backend>()
    expectTypeOf<MemoryBackend>().toExtend<SyncBackend>()
    // Its fast path always decides: never undefined.
    expectTypeOf<MemoryBackend['checkAndIncrementSync']>().returns.toEqualTypeOf<BackendResult>()
    expectTypeOf<MemoryBackend['checkAndIncrementAllSync']>().returns.toEqualTypeOf<BackendResult[]>()
    expectTypeOf<MemoryBackend['peekSync']>().returns.toEqualTypeOf<BackendResult>()
    expectTypeOf<MemoryBackend['kind']>().toEqualTypeOf<'memory'>()
    expectTypeOf(gcra).toEqualTypeOf<StepFunction>()
    expectTypeOf(step).parameter(2).toEqualTypeOf<BucketConfig>()
    expectTypeOf(parseRule('1/s')).toEqualTypeOf<Rule>()
    expectTypeOf<Rule>().toExtend<BucketConfig>()
  })

  it('types FastLimit calls and decisions', () => {
    const limiter = new FastLimit()
    expectTypeOf(limiter.check('id', '10/s')).toEqualTypeOf<Promise<Decision>>()
    expectTypeOf<string | readonly string[]>().toExtend<Parameters<typeof limiter.check>[1]>()
    expectTypeOf<Decision['reason']>().toEqualTypeOf<
      'ok' | 'rate-limited' | 'cost-exceeds-limit' | 'fail-open' | 'fail-closed' | 'concurrency-limited'
    >()
    expectTypeOf(limiter.acquire('id', { limit: 5 })).toEqualTypeOf<Promise<Lease>>()
    expectTypeOf<Lease['release']>().toEqualTypeOf<() => Promise<void>>()
    expectTypeOf<Lease['holders']>().toEqualTypeOf<number | undefined>()
    expectTypeOf<Lease['reason']>().toEqualTypeOf<
      'ok' | 'concurrency-limited' | 'fail-open' | 'fail-closed'
    >()
    // @ts-expect-error limit is required
    limiter.acquire('id', { leaseMs: 1000 })
    expectTypeOf<Decision['source']>().toEqualTypeOf<'backend' | 'fallback' | 'policy'>()
    // @ts-expect-error an unknown algorithm is a type error
    limiter.check('id', { limit: 1, window: '1s', algorithm: 'leaky' })
    // @ts-expect-error cost is a number
    limiter.check('id', '1/s', { cost: '2' })
    // @ts-expect-error the policy is a closed set
    new FastLimit({ onBackendError: 'open' })
  })

  it('types reservations and adjust', () => {
    const limiter = new FastLimit()
    expectTypeOf(limiter.reserve('id', '10/s', { cost: 3, scope: 's' })).toEqualTypeOf<Promise<Reservation>>()
    expectTypeOf<Reservation>().toExtend<Decision>()
    expectTypeOf<Reservation['settle']>().toEqualTypeOf<(actualCost: number) => Promise<Settlement>>()
    expectTypeOf<Reservation['cancel']>().toEqualTypeOf<() => Promise<Settlement>>()
    expectTypeOf(limiter.refund('id', '10/s', 2, { scope: 's' })).toEqualTypeOf<Promise<Settlement>>()
    expectTypeOf<Settlement['outcome']>().toEqualTypeOf<'adjusted' | 'unchanged' | 'skipped' | 'failed'>()
    expectTypeOf<NonNullable<Backend['adjust']>>().parameter(3).toEqualTypeOf<readonly Charge[] | undefined>()
    expectTypeOf<MemoryBackend['adjustSync']>().returns.toEqualTypeOf<BackendResult[]>()
    // @ts-expect-error refund takes a cost
    limiter.refund('id', '10/s')
  })
})
