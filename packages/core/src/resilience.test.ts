// FastLimit against misbehaving backends: the minimal protocol, deadlines, the circuit breaker, the cap
// on calls in flight, the deferred synchronous path, scopes, a full store and the fallback's single charge.
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { Backend, BackendResult, BucketConfig, CallOptions } from './backend'
import { FastlimitError } from './errors'
import { type BreakerEvent, FastLimit } from './limiter'
import { MemoryBackend } from './memory'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** A backend in front of a MemoryBackend whose behaviour the test switches. */
function controlled() {
  const inner = new MemoryBackend()
  const state = {
    mode: 'ok' as 'ok' | 'reject' | 'hang' | 'full',
    calls: 0,
    reconnects: 0,
    deadlines: [] as Array<number | undefined>,
    hung: [] as Array<(err: Error) => void>,
  }
  const backend: Backend = {
    kind: 'test',
    checkAndIncrement(key: string, bucket: BucketConfig, cost: number, options?: CallOptions) {
      state.calls++
      state.deadlines.push(options?.deadline)
      if (state.mode === 'reject') return Promise.reject(new Error('ECONNREFUSED 127.0.0.1:1'))
      if (state.mode === 'full')
        return Promise.reject(
          new FastlimitError('ERR_FASTLIMIT_STORE_FULL', '[fastlimit] [test] The store is full.'),
        )
      if (state.mode === 'hang') return new Promise<BackendResult>((_, reject) => state.hung.push(reject))
      return inner.checkAndIncrement(key, bucket, cost)
    },
    reconnect() {
      state.reconnects++
      for (const reject of state.hung.splice(0)) reject(new Error('Connection is closed.'))
    },
  }
  return { backend, state, inner }
}

afterEach(() => {
  vi.restoreAllMocks()
})

describe('the minimal protocol', () => {
  it('takes a backend with only checkAndIncrement, and names a missing method at the earliest point', async () => {
    const inner = new MemoryBackend()
    const minimal: Backend = {
      checkAndIncrement: (key, bucket, cost) => inner.checkAndIncrement(key, bucket, cost),
    }
    const limiter = new FastLimit({ backend: minimal })
    expect((await limiter.check('u', '2/min')).remaining).toBe(1)
    expect(() => limiter.rules(['1/s', '10/min'])).toThrow(/has no checkAndIncrementAll\(\)/)
    await expect(limiter.check('u', ['1/s', '10/min'])).rejects.toMatchObject({
      code: 'ERR_FASTLIMIT_CONFIG',
      message: expect.stringMatching(/checkAndIncrementAll\(\), which checking several rules at once needs/),
    })
    await expect(limiter.peek('u', '2/min')).rejects.toThrow(/has no peek\(\)/)
    await expect(limiter.reset('u')).rejects.toThrow(/has no reset\(\)/)
    await limiter.close()
  })

  it('passes a deadline of timeoutMs with every asynchronous call', async () => {
    const { backend, state } = controlled()
    const limiter = new FastLimit({ backend, timeoutMs: 250 })
    const before = Date.now()
    await limiter.check('u', '5/s')
    const deadline = state.deadlines[0] as number
    expect(deadline).toBeGreaterThanOrEqual(before + 250)
    expect(deadline).toBeLessThanOrEqual(Date.now() + 250)
  })
})

describe('the circuit breaker', () => {
  it('opens after `failures` failures in a row, calls reconnect, and keeps calls off the store', async () => {
    const { backend, state } = controlled()
    const errors: FastlimitError[] = []
    const events: BreakerEvent[] = []
    const limiter = new FastLimit({
      backend,
      onError: (e) => errors.push(e),
      breaker: { failures: 3, openMs: 60_000 },
      onBackendError: 'fail-closed',
    })
    limiter.on('breaker', (e) => events.push(e))
    state.mode = 'reject'
    for (let i = 0; i < 3; i++) expect((await limiter.check('u', '5/s')).reason).toBe('fail-closed')
    expect(limiter.breakerState).toBe('open')
    expect(events).toMatchObject([{ state: 'open', backend }])
    expect(events[0]?.cause?.message).toMatch(/ECONNREFUSED/)
    expect(state.reconnects).toBe(1)
    for (let i = 0; i < 50; i++) {
      const d = await limiter.check('u', '5/s')
      expect(d).toMatchObject({ allowed: false, source: 'policy' })
      expect(d.error?.code).toBe('ERR_FASTLIMIT_CIRCUIT_OPEN')
    }
    expect(state.calls).toBe(3)
    // Refusals by the open breaker are not failures of the store: onError saw only the three.
    expect(errors).toHaveLength(3)
  })

  it('half-opens with a single probe, and closes when it succeeds', async () => {
    const { backend, state } = controlled()
    const events: string[] = []
    const limiter = new FastLimit({ backend, breaker: { failures: 2, openMs: 40 } })
    limiter.on('breaker', (e) => events.push(e.state))
    state.mode = 'reject'
    await limiter.check('u', '5/s')
    await limiter.check('u', '5/s')
    expect(limiter.breakerState).toBe('open')
    await sleep(60)
    state.mode = 'ok'
    // Three calls at once: the first is the probe, the others are refused while it runs.
    const [probe, second, third] = await Promise.all([
      limiter.check('u', '5/s'),
      limiter.check('u', '5/s'),
      limiter.check('u', '5/s'),
    ])
    expect(probe).toMatchObject({ source: 'backend', allowed: true, remaining: 4 })
    expect(second?.error?.code).toBe('ERR_FASTLIMIT_CIRCUIT_OPEN')
    expect(third?.error?.code).toBe('ERR_FASTLIMIT_CIRCUIT_OPEN')
    expect(limiter.breakerState).toBe('closed')
    expect(events).toEqual(['open', 'half-open', 'closed'])
    expect((await limiter.check('u', '5/s')).source).toBe('backend')
    expect(state.calls).toBe(4)
  })

  it('opens again when the probe fails, and reconnects again', async () => {
    const { backend, state } = controlled()
    const events: string[] = []
    const limiter = new FastLimit({ backend, breaker: { failures: 1, openMs: 30 } })
    limiter.on('breaker', (e) => events.push(e.state))
    state.mode = 'reject'
    await limiter.check('u', '5/s')
    await sleep(45)
    await limiter.check('u', '5/s')
    expect(events).toEqual(['open', 'half-open', 'open'])
    expect(state.reconnects).toBe(2)
    expect(limiter.breakerState).toBe('open')
  })

  it('counts timeouts, and reconnect fails the calls stalled on the store', async () => {
    const { backend, state } = controlled()
    const limiter = new FastLimit({ backend, timeoutMs: 20, breaker: { failures: 3, openMs: 60_000 } })
    state.mode = 'hang'
    const decisions = await Promise.all(Array.from({ length: 3 }, () => limiter.check('u', '5/s')))
    expect(decisions.map((d) => d.error?.code)).toEqual([
      'ERR_FASTLIMIT_TIMEOUT',
      'ERR_FASTLIMIT_TIMEOUT',
      'ERR_FASTLIMIT_TIMEOUT',
    ])
    expect(limiter.breakerState).toBe('open')
    // reconnect() rejected the three calls still waiting on the store: nothing is in flight any more.
    await sleep(0)
    expect(limiter.inFlight).toBe(0)
  })

  it('can be turned off', async () => {
    const { backend, state } = controlled()
    const limiter = new FastLimit({ backend, breaker: false })
    state.mode = 'reject'
    for (let i = 0; i < 20; i++) await limiter.check('u', '5/s')
    expect(limiter.breakerState).toBe('closed')
    expect(state.calls).toBe(20)
    expect(state.reconnects).toBe(0)
  })

  it.each([
    [{ failures: 0 }, /breaker.failures must be a whole number/],
    [{ openMs: -1 }, /breaker.openMs must be a whole number/],
    [{ failure: 3 }, /Unknown breaker option "failure"/],
    [true, /breaker must be an object or false/],
  ])('rejects breaker %j at construction', (breaker, message) => {
    expect(() => new FastLimit({ breaker: breaker as never })).toThrow(message)
  })
})

describe('the cap on calls in flight', () => {
  it('refuses calls over maxInFlight without touching the store, timed-out calls included', async () => {
    const { backend, state } = controlled()
    const limiter = new FastLimit({ backend, maxInFlight: 3, timeoutMs: 20, breaker: false })
    state.mode = 'hang'
    const first = await Promise.all(Array.from({ length: 5 }, () => limiter.check('u', '5/s')))
    expect(first.map((d) => d.error?.code)).toEqual([
      'ERR_FASTLIMIT_TIMEOUT',
      'ERR_FASTLIMIT_TIMEOUT',
      'ERR_FASTLIMIT_TIMEOUT',
      'ERR_FASTLIMIT_OVERLOADED',
      'ERR_FASTLIMIT_OVERLOADED',
    ])
    expect(state.calls).toBe(3)
    // The three timed out but are still queued on the store: they still count.
    expect(limiter.inFlight).toBe(3)
    expect((await limiter.check('u', '5/s')).error?.code).toBe('ERR_FASTLIMIT_OVERLOADED')
    expect(state.calls).toBe(3)
    backend.reconnect?.(new Error('test'))
    await sleep(0)
    expect(limiter.inFlight).toBe(0)
    state.mode = 'ok'
    expect((await limiter.check('u', '5/s')).source).toBe('backend')
  })

  it.each([0, -1, 1.5, Number.NaN])('rejects maxInFlight %s at construction', (maxInFlight) => {
    expect(() => new FastLimit({ maxInFlight })).toThrow(/maxInFlight must be a whole number/)
  })
})

describe('the synchronous fast path that cannot decide now', () => {
  it('falls back to the asynchronous call with its deadline', async () => {
    const inner = new MemoryBackend()
    let locked = true
    const calls: string[] = []
    const backend = {
      checkAndIncrementSync(key: string, bucket: BucketConfig, cost: number) {
        calls.push('sync')
        return locked ? undefined : inner.checkAndIncrementSync(key, bucket, cost)
      },
      checkAndIncrementAllSync(key: string, buckets: readonly BucketConfig[], cost: number) {
        calls.push('syncAll')
        return locked ? undefined : inner.checkAndIncrementAllSync(key, buckets, cost)
      },
      async checkAndIncrement(key: string, bucket: BucketConfig, cost: number, options?: CallOptions) {
        calls.push(`async:${typeof options?.deadline}`)
        await sleep(1)
        return inner.checkAndIncrementSync(key, bucket, cost)
      },
      async checkAndIncrementAll(
        key: string,
        buckets: readonly BucketConfig[],
        cost: number,
        options?: CallOptions,
      ) {
        calls.push(`asyncAll:${typeof options?.deadline}`)
        return inner.checkAndIncrementAllSync(key, buckets, cost)
      },
    }
    const limiter = new FastLimit({ backend })
    expect((await limiter.check('u', '2/min')).remaining).toBe(1)
    expect((await limiter.check('u', ['2/min', '10/h'])).remaining).toBe(0)
    locked = false
    expect((await limiter.check('u', '2/min')).allowed).toBe(false)
    expect(calls).toEqual(['sync', 'async:number', 'syncAll', 'asyncAll:number', 'sync'])
  })
})

describe('scopes', () => {
  it('keep scoped and unscoped identities apart, whatever the identity holds', async () => {
    const limiter = new FastLimit()
    for (let i = 0; i < 3; i++) await limiter.check('login|203.0.113.50', '3/min')
    expect((await limiter.check('login|203.0.113.50', '3/min')).allowed).toBe(false)
    // The victim, scoped: untouched by the unscoped identity that spells its key.
    expect((await limiter.check('203.0.113.50', '3/min', { scope: 'login' })).remaining).toBe(2)
    expect((await limiter.check('%Slogin;203.0.113.50', '3/min')).remaining).toBe(2)
    expect((await limiter.check('203.0.113.50', '3/min', { scope: 'reset' })).remaining).toBe(2)
    expect((await limiter.peek('203.0.113.50', '3/min', { scope: 'login' })).remaining).toBe(2)
    await limiter.reset('203.0.113.50', { scope: 'login' })
    expect((await limiter.peek('203.0.113.50', '3/min', { scope: 'login' })).remaining).toBe(3)
    expect((await limiter.peek('login|203.0.113.50', '3/min')).remaining).toBe(0)
  })

  it.each(['', 'has space', 'a;b', 'x'.repeat(65), 5])('rejects scope %j', async (scope) => {
    const limiter = new FastLimit()
    await expect(limiter.check('u', '1/s', { scope: scope as never })).rejects.toMatchObject({
      code: 'ERR_FASTLIMIT_ARGUMENT',
    })
  })
})

describe('a full store', () => {
  it('is warned about once per process when nobody listens, and the policy applies', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    const a = controlled()
    const b = controlled()
    a.state.mode = 'full'
    b.state.mode = 'full'
    const heard: FastlimitError[] = []
    const listened = new FastLimit({ backend: a.backend, onBackendError: 'fail-closed' })
    const off = listened.on('error', (e) => heard.push(e))
    expect((await listened.check('u', '5/s')).error?.code).toBe('ERR_FASTLIMIT_STORE_FULL')
    expect(heard).toHaveLength(1)
    expect(warn).not.toHaveBeenCalled()
    off()
    const quiet = new FastLimit({ backend: b.backend, onBackendError: 'fail-closed' })
    for (let i = 0; i < 3; i++) {
      expect(await quiet.check('u', '5/s')).toMatchObject({ allowed: false, reason: 'fail-closed' })
    }
    await listened.check('u', '5/s')
    // Warned once in this process; the test file runs in a process of its own.
    expect(warn).toHaveBeenCalledTimes(1)
    expect(String(warn.mock.calls[0]?.[0])).toMatch(/store is full.*pass onError/s)
    expect(heard).toHaveLength(1)
  })
})

describe('{ fallback }', () => {
  it('charges each decision once: the store honours the deadline, the fallback decides', async () => {
    const store = new MemoryBackend()
    let applied = 0
    let lateRefused = 0
    // A store that answers after 30 ms and applies nothing past the call's deadline.
    const slow: Backend = {
      async checkAndIncrement(key, bucket, cost, options) {
        await sleep(30)
        if (options?.deadline !== undefined && Date.now() > options.deadline) {
          lateRefused++
          throw new FastlimitError('ERR_FASTLIMIT_TIMEOUT', '[fastlimit] [test] applied past its deadline')
        }
        applied++
        return store.checkAndIncrementSync(key, bucket, cost)
      },
    }
    const fallback = new MemoryBackend()
    const limiter = new FastLimit({
      backend: slow,
      timeoutMs: 10,
      onBackendError: { fallback },
      breaker: false,
    })
    const decisions = await Promise.all(Array.from({ length: 4 }, () => limiter.check('u', '10/min')))
    expect(decisions.map((d) => d.source)).toEqual(['fallback', 'fallback', 'fallback', 'fallback'])
    expect(decisions.map((d) => d.remaining)).toEqual([9, 8, 7, 6])
    await sleep(60)
    expect(applied).toBe(0)
    expect(lateRefused).toBe(4)
    expect(store.peekSync('fl:{u}', (await limiter.rules('10/min')).rules[0] as BucketConfig).remaining).toBe(
      10,
    )
  })
})

describe('events', () => {
  it('reports every decision with its mode, scope and backend kind, and stops when unsubscribed', async () => {
    const limiter = new FastLimit()
    const seen: Array<[string, boolean, string | undefined, string, string]> = []
    const off = limiter.on('decision', (e) =>
      seen.push([e.operation, e.decision.allowed, e.scope, e.mode, e.backend]),
    )
    await limiter.check('u', '1/min')
    await limiter.check('u', '1/min', { mode: 'shadow' })
    await limiter.check('u', '1/min', { scope: 'login' })
    await limiter.peek('u', '1/min')
    off()
    await limiter.check('u', '1/min')
    expect(seen).toEqual([
      ['check', true, undefined, 'enforce', 'memory'],
      ['check', false, undefined, 'shadow', 'memory'],
      ['check', true, 'login', 'enforce', 'memory'],
      ['peek', false, undefined, 'enforce', 'memory'],
    ])
  })

  it('reports each store call with its duration and outcome, sync or not', async () => {
    const sync = new FastLimit()
    const syncCalls: Array<{ sync: boolean; durationMs: number }> = []
    sync.on('call', (e) => syncCalls.push(e))
    await sync.check('u', '5/s')
    expect(syncCalls).toHaveLength(1)
    expect(syncCalls[0]?.sync).toBe(true)
    expect(syncCalls[0]?.durationMs).toBeGreaterThanOrEqual(0)

    const { backend, state } = controlled()
    const limiter = new FastLimit({ backend, timeoutMs: 20, breaker: false })
    const calls: Array<{ operation: string; sync: boolean; backend: string; code: string | undefined }> = []
    limiter.on('call', (e) =>
      calls.push({ operation: e.operation, sync: e.sync, backend: e.backend, code: e.error?.code }),
    )
    await limiter.check('u', '5/s')
    state.mode = 'reject'
    await limiter.check('u', '5/s')
    state.mode = 'hang'
    await limiter.check('u', '5/s')
    expect(calls).toEqual([
      { operation: 'check', sync: false, backend: 'test', code: undefined },
      { operation: 'check', sync: false, backend: 'test', code: 'ERR_FASTLIMIT_BACKEND' },
      { operation: 'check', sync: false, backend: 'test', code: 'ERR_FASTLIMIT_TIMEOUT' },
    ])
  })

  it('refuses an unknown event or a listener that is not a function', () => {
    const limiter = new FastLimit()
    expect(() => limiter.on('decisions' as never, () => undefined)).toThrow(/Unknown event "decisions"/)
    expect(() => limiter.on('decision', 5 as never)).toThrow(/must be a function/)
  })
})

describe('the breaker and a full store', () => {
  it('does not open for a full store, which still answers', async () => {
    vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    const { backend, state } = controlled()
    const limiter = new FastLimit({
      backend,
      breaker: { failures: 2, openMs: 60_000 },
      onError: () => undefined,
    })
    state.mode = 'full'
    for (let i = 0; i < 10; i++)
      expect((await limiter.check('u', '5/s')).error?.code).toBe('ERR_FASTLIMIT_STORE_FULL')
    expect(limiter.breakerState).toBe('closed')
    expect(state.calls).toBe(10)
    expect(state.reconnects).toBe(0)
  })
})

describe('events on the synchronous fast path', () => {
  it('reports a decision before the promise resolves, and a call listener can skip synchronous calls', async () => {
    const limiter = new FastLimit()
    const order: string[] = []
    limiter.on('decision', () => order.push('event'))
    const heard: boolean[] = []
    limiter.on('call', (e) => heard.push(e.sync), { sync: false })
    const p = limiter.check('u', '5/s')
    order.push('returned')
    await p
    expect(order).toEqual(['event', 'returned'])
    expect(heard).toEqual([])
    expect(() => limiter.on('call', () => undefined, { sync: 'no' as never })).toThrow(
      /sync must be true or false/,
    )
  })

  it('hears asynchronous calls with { sync: false }, and an unsubscribe is idempotent', async () => {
    const { backend } = controlled()
    const limiter = new FastLimit({ backend })
    const heard: boolean[] = []
    const off = limiter.on('call', (e) => heard.push(e.sync), { sync: false })
    await limiter.check('u', '5/s')
    off()
    off()
    await limiter.check('u', '5/s')
    expect(heard).toEqual([false])
  })
})
