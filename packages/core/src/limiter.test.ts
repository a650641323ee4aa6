import { afterEach, describe, expect, it, vi } from 'vitest'
import type { Backend, BackendResult, BucketConfig } from './backend'
import { ConfigError, type FastlimitError } from './errors'
import { FastLimit } from './limiter'
import { MemoryBackend } from './memory'
import { parseRules } from './rules'
import { fakeClock } from './testing'

/** A backend whose every call fails, or never answers, or answers late with a failure. */
function brokenBackend(mode: 'reject' | 'hang' | 'late-reject'): Backend & { calls: number } {
  const fail = () => {
    backend.calls++
    if (mode === 'reject') return Promise.reject(new Error('ECONNREFUSED 127.0.0.1:1'))
    if (mode === 'hang') return new Promise<never>(() => {})
    return new Promise<never>((_, reject) => setTimeout(() => reject(new Error('late')), 50))
  }
  const backend = {
    calls: 0,
    checkAndIncrement: fail,
    checkAndIncrementAll: fail,
    peek: fail,
    reset: fail,
    clear: async () => {},
    close: async () => {},
  } as Backend & { calls: number }
  return backend
}

afterEach(() => {
  vi.useRealTimers()
})

describe('FastLimit on the default memory backend', () => {
  it('admits exactly the limit and reports every figure', async () => {
    const limiter = new FastLimit()
    const results = []
    for (let i = 0; i < 4; i++) results.push(await limiter.check('user-1', '3/min'))
    expect(results.map((d) => d.allowed)).toEqual([true, true, true, false])
    expect(results.map((d) => d.remaining)).toEqual([2, 1, 0, 0])
    const denied = results[3]
    expect(denied).toMatchObject({ reason: 'rate-limited', source: 'backend', limit: 3, cost: 1 })
    expect(denied?.retryAfterMs).toBeGreaterThan(0)
    expect(denied?.retryAfterMs).toBeLessThanOrEqual(20_000)
    expect(denied?.rule.name).toBe('3/1m')
    expect(results[0]).toMatchObject({ reason: 'ok', retryAfterMs: 0 })
    expect(await limiter.check('user-2', '3/min')).toMatchObject({ allowed: true, remaining: 2 })
  })

  it('checks several rules all-or-nothing and reports the most restrictive', async () => {
    const limiter = new FastLimit({ algorithm: 'fixed-window' })
    const rules = ['2/s', '3/min']
    const a = await limiter.check('u', rules)
    expect(a.rule.name).toBe('2/1s')
    expect(a.rules.map((r) => r.remaining)).toEqual([1, 2])
    await limiter.check('u', rules)
    const denied = await limiter.check('u', rules)
    expect(denied).toMatchObject({ allowed: false, reason: 'rate-limited' })
    expect(denied.rule.name).toBe('2/1s')
    // The minute rule was not charged by the denied call.
    expect(denied.rules[1]).toMatchObject({ allowed: true, remaining: 1 })
    const peek = await limiter.peek('u', rules)
    expect(peek.rules.map((r) => r.remaining)).toEqual([0, 1])
  })

  it('charges a cost, and says when a cost can never pass', async () => {
    const limiter = new FastLimit()
    expect(await limiter.check('c', '10/min', { cost: 4 })).toMatchObject({
      allowed: true,
      remaining: 6,
      cost: 4,
    })
    const never = await limiter.check('c', '10/min', { cost: 11 })
    expect(never).toMatchObject({ allowed: false, reason: 'cost-exceeds-limit', remaining: 6 })
    expect(never.retryAfterMs).toBe(Number.POSITIVE_INFINITY)
  })

  it.each([0, -1, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, 1.5, '1', null])(
    'rejects a cost of %s with a clear error',
    async (cost) => {
      const limiter = new FastLimit()
      await expect(limiter.check('x', '1/s', { cost: cost as number })).rejects.toMatchObject({
        code: 'ERR_FASTLIMIT_ARGUMENT',
        message: expect.stringMatching(/cost must be a positive whole number/),
      })
    },
  )

  it('keeps hostile identities apart and never lets one collide with another', async () => {
    const limiter = new FastLimit()
    const ids = [
      'a{b}',
      'a%7Bb%7D',
      'a%257Bb',
      '__proto__',
      'constructor',
      '',
      '\n',
      'x'.repeat(1_000_000),
      'x'.repeat(999_999),
    ]
    for (const id of ids) expect((await limiter.check(id, '1/min')).allowed).toBe(true)
    for (const id of ids) expect((await limiter.check(id, '1/min')).allowed).toBe(false)
    await expect(limiter.check(42 as never, '1/min')).rejects.toMatchObject({
      code: 'ERR_FASTLIMIT_ARGUMENT',
    })
  })

  it('rejects a bad rule with a ConfigError, and caches good ones', async () => {
    const limiter = new FastLimit()
    await expect(limiter.check('x', '100/mn')).rejects.toBeInstanceOf(ConfigError)
    expect(limiter.rules('10/s')).toBe(limiter.rules('10/s'))
    expect(limiter.rules(['10/s', '1/min'])).toBe(limiter.rules(['10/s', '1/min']))
    const obj = { limit: 1, window: '1s' }
    expect(limiter.rules(obj)).toBe(limiter.rules(obj))
    const set = parseRules('5/s')
    expect(limiter.rules(set)).toBe(set)
  })

  it('resets an identity under every rule', async () => {
    const limiter = new FastLimit()
    await limiter.check('r', ['1/s', '5/min'])
    expect((await limiter.check('r', ['1/s', '5/min'])).allowed).toBe(false)
    await limiter.reset('r')
    expect((await limiter.check('r', ['1/s', '5/min'])).allowed).toBe(true)
  })

  it('refuses calls after close', async () => {
    const limiter = new FastLimit()
    await limiter.close()
    await expect(limiter.check('x', '1/s')).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_CLOSED' })
  })
})

describe('FastLimit options', () => {
  it.each([
    [{ prefix: 'a b' }, /Invalid prefix "a b"/],
    [{ prefix: '{x}' }, /Invalid prefix/],
    [{ algorithm: 'leaky' }, /Unknown algorithm "leaky"/],
    [{ onBackendError: 'open' }, /onBackendError "open" is not a policy/],
    [{ onBackendError: { fallback: {} } }, /is not a policy/],
    [{ timeoutMs: 0 }, /timeoutMs must be a whole number/],
    [{ timeoutMs: 1.5 }, /timeoutMs/],
    [{ backend: {} }, /does not implement Backend/],
    [{ onError: 'log' }, /onError must be a function/],
    [{ timeout: 5 }, /Unknown FastLimit option "timeout"/],
  ])('rejects %j at construction', (options, message) => {
    expect(() => new FastLimit(options as never)).toThrow(ConfigError)
    expect(() => new FastLimit(options as never)).toThrow(message)
  })
})

describe('backend failures', () => {
  it('fails open by default, reporting the error', async () => {
    const errors: FastlimitError[] = []
    const limiter = new FastLimit({ backend: brokenBackend('reject'), onError: (e) => errors.push(e) })
    const d = await limiter.check('x', ['5/s', '10/min'])
    // Nothing is known of the client's standing: no remaining or reset is invented.
    expect(d).toMatchObject({
      allowed: true,
      reason: 'fail-open',
      source: 'policy',
      limit: 5,
      retryAfterMs: 0,
    })
    expect(d.remaining).toBeUndefined()
    expect(d.resetMs).toBeUndefined()
    expect(d.rules.map((r) => [r.limit, r.remaining, r.resetMs])).toEqual([
      [5, undefined, undefined],
      [10, undefined, undefined],
    ])
    expect(d.error?.code).toBe('ERR_FASTLIMIT_BACKEND')
    expect(d.error?.message).toMatch(/ECONNREFUSED/)
    expect(errors).toHaveLength(1)
  })

  it('fails closed when asked', async () => {
    const limiter = new FastLimit({ backend: brokenBackend('reject'), onBackendError: 'fail-closed' })
    const d = await limiter.check('x', '5/s')
    expect(d).toMatchObject({ allowed: false, reason: 'fail-closed', retryAfterMs: 1000, source: 'policy' })
    expect(d.remaining).toBeUndefined()
  })

  it('throws when asked', async () => {
    const limiter = new FastLimit({ backend: brokenBackend('reject'), onBackendError: 'throw' })
    await expect(limiter.check('x', '5/s')).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_BACKEND' })
    await expect(limiter.reset('x')).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_BACKEND' })
  })

  it('falls back to another backend, exactly', async () => {
    const fallback = new MemoryBackend()
    const limiter = new FastLimit({ backend: brokenBackend('reject'), onBackendError: { fallback } })
    const ds = []
    for (let i = 0; i < 3; i++) ds.push(await limiter.check('x', '2/min'))
    expect(ds.map((d) => d.allowed)).toEqual([true, true, false])
    expect(ds[2]).toMatchObject({ source: 'fallback', reason: 'rate-limited' })
    expect(ds[2]?.error?.code).toBe('ERR_FASTLIMIT_BACKEND')
    expect((await limiter.peek('x', '2/min')).source).toBe('fallback')
  })

  it('bounds a backend that never answers by timeoutMs', async () => {
    vi.useFakeTimers()
    const limiter = new FastLimit({
      backend: brokenBackend('hang'),
      timeoutMs: 250,
      onBackendError: 'fail-closed',
    })
    let settled: unknown
    limiter.check('x', '5/s').then((d) => {
      settled = d
    })
    await vi.advanceTimersByTimeAsync(249)
    expect(settled).toBeUndefined()
    await vi.advanceTimersByTimeAsync(1)
    expect(settled).toMatchObject({ allowed: false, reason: 'fail-closed' })
    expect((settled as { error: FastlimitError }).error.code).toBe('ERR_FASTLIMIT_TIMEOUT')
  })

  it('ignores a failure that arrives after the timeout (no unhandled rejection)', async () => {
    const limiter = new FastLimit({ backend: brokenBackend('late-reject'), timeoutMs: 10 })
    const d = await limiter.check('x', '5/s')
    expect(d.error?.code).toBe('ERR_FASTLIMIT_TIMEOUT')
    await new Promise((r) => setTimeout(r, 80))
  })

  it('survives a throwing onError', async () => {
    const limiter = new FastLimit({
      backend: brokenBackend('reject'),
      onError: () => {
        throw new Error('logger down')
      },
    })
    expect((await limiter.check('x', '5/s')).allowed).toBe(true)
  })
})

describe('FastLimit with a custom backend', () => {
  it('passes prefix-scoped keys and validated buckets to it', async () => {
    const seen: Array<[string, BucketConfig[], number]> = []
    const clock = fakeClock()
    const inner = new MemoryBackend({ clock: clock.now })
    const spy: Backend = {
      checkAndIncrement: (key, bucket, cost) => {
        seen.push([key, [bucket], cost])
        return inner.checkAndIncrement(key, bucket, cost)
      },
      checkAndIncrementAll: (key, buckets, cost): Promise<BackendResult[]> => {
        seen.push([key, [...buckets], cost])
        return inner.checkAndIncrementAll(key, buckets, cost)
      },
      peek: (key, bucket) => inner.peek(key, bucket),
      reset: (key) => inner.reset(key),
      clear: () => inner.clear(),
      close: () => inner.close(),
    }
    const limiter = new FastLimit({ backend: spy, prefix: 'app' })
    await limiter.check('user:{1}', '10/s', { cost: 2 })
    await limiter.check('u2', ['10/s', { limit: 100, window: '1h', algorithm: 'sliding-window' }])
    expect(seen[0]?.[0]).toBe('app:{user:%7B1%7D}')
    expect(seen[0]?.[1][0]).toMatchObject({ algorithm: 'gcra', limit: 10, windowMs: 1000 })
    expect(seen[0]?.[2]).toBe(2)
    expect(seen[1]?.[1].map((b) => b.algorithm)).toEqual(['gcra', 'sliding-window'])
  })
})

describe('the synchronous fast path', () => {
  it('is used for any SyncBackend, and its failures follow the policy', async () => {
    const inner = new MemoryBackend()
    let syncCalls = 0
    let fail = false
    const sync = {
      checkAndIncrement: () => Promise.reject(new Error('async path must not be used')),
      checkAndIncrementAll: () => Promise.reject(new Error('async path must not be used')),
      peek: () => Promise.reject(new Error('async path must not be used')),
      reset: (key: string) => inner.reset(key),
      clear: () => inner.clear(),
      close: () => inner.close(),
      checkAndIncrementSync: (key: string, bucket: BucketConfig, cost: number) => {
        syncCalls++
        if (fail) throw new Error('SQLITE_BUSY: database is locked')
        return inner.checkAndIncrementSync(key, bucket, cost)
      },
      checkAndIncrementAllSync: (key: string, buckets: readonly BucketConfig[], cost: number) =>
        inner.checkAndIncrementAllSync(key, buckets, cost),
      peekSync: (key: string, bucket: BucketConfig) => inner.peekSync(key, bucket),
    }
    const limiter = new FastLimit({ backend: sync, onBackendError: 'fail-closed' })
    expect((await limiter.check('s', '1/min')).allowed).toBe(true)
    expect((await limiter.check('s', ['1/min', '5/h'])).allowed).toBe(false)
    expect((await limiter.peek('s', '1/min')).remaining).toBe(0)
    fail = true
    const d = await limiter.check('s', '1/min')
    expect(d).toMatchObject({ allowed: false, reason: 'fail-closed' })
    expect(d.error?.message).toMatch(/SQLITE_BUSY/)
    expect(syncCalls).toBe(2)
  })
})

describe('checkNow', () => {
  it('answers with the Decision itself when a SyncBackend decides at once, observed as check is', async () => {
    const limiter = new FastLimit({ backend: new MemoryBackend({ cleanupIntervalMs: 0 }) })
    const events: Array<{ operation: string; identity: string; allowed: boolean; mode: string }> = []
    limiter.on('decision', (e) => {
      events.push({ operation: e.operation, identity: e.identity, allowed: e.decision.allowed, mode: e.mode })
    })
    const first = limiter.checkNow('a', '1/min')
    expect(first).not.toBeInstanceOf(Promise)
    // Observed before checkNow returned, as check observes a synchronous decision.
    expect(events).toEqual([{ operation: 'check', identity: 'a', allowed: true, mode: 'enforce' }])
    expect((first as { remaining: number }).remaining).toBe(0)
    const second = limiter.checkNow('a', '1/min', { mode: 'shadow' })
    expect(second).toMatchObject({ allowed: false, remaining: 0 })
    expect(events[1]).toEqual({ operation: 'check', identity: 'a', allowed: false, mode: 'shadow' })
    // check is the same, always as a promise.
    const checked = limiter.check('a', '1/min')
    expect(checked).toBeInstanceOf(Promise)
    expect(await checked).toMatchObject({ allowed: false })
    expect(events).toHaveLength(3)
  })

  it('answers with a promise for an asynchronous backend, and rejects bad arguments', async () => {
    const memory = new MemoryBackend({ cleanupIntervalMs: 0 })
    const backend: Backend = { checkAndIncrement: (...args) => memory.checkAndIncrement(...args) }
    const limiter = new FastLimit({ backend })
    const later = limiter.checkNow('a', '1/min')
    expect(later).toBeInstanceOf(Promise)
    expect(await later).toMatchObject({ allowed: true })
    const bad = new FastLimit().checkNow('a', '100/mn')
    expect(bad).toBeInstanceOf(Promise)
    await expect(bad).rejects.toBeInstanceOf(ConfigError)
  })
})
