// FastLimit.acquire: leases on MemoryBackend (1,000 concurrent acquirers, expiry, late release), options,
// the async path, and the error policies (fail-open, fail-closed, throw, fallback, breaker, late grants).
import { describe, expect, it } from 'vitest'
import type { AcquireResult, Backend, CallOptions, SlotConfig } from './backend'
import type { Lease } from './concurrency'
import { ConfigError, FastlimitError } from './errors'
import { createHttpLimiter } from './http'
import { FastLimit, type LeaseEvent } from './limiter'
import { MemoryBackend } from './memory'
import { fakeClock, leaseCrowd } from './testing'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('FastLimit.acquire on MemoryBackend', () => {
  it('grants up to the limit, reports holders and remaining, and releases idempotently', async () => {
    const clock = fakeClock(1_000_000)
    const limiter = new FastLimit({ backend: new MemoryBackend({ clock: clock.now }) })
    const a = await limiter.acquire('u', { limit: 2, leaseMs: 1000 })
    expect(a).toMatchObject({
      allowed: true,
      reason: 'ok',
      source: 'backend',
      limit: 2,
      leaseMs: 1000,
      holders: 1,
      remaining: 1,
      retryAfterMs: 0,
      expiresMs: 1_001_000,
      released: false,
    })
    clock.advance(100)
    const b = await limiter.acquire('u', { limit: 2, leaseMs: 1000 })
    expect(b).toMatchObject({ allowed: true, holders: 2, remaining: 0 })
    const c = await limiter.acquire('u', { limit: 2, leaseMs: 1000 })
    expect(c).toMatchObject({
      allowed: false,
      reason: 'concurrency-limited',
      holders: 2,
      remaining: 0,
      retryAfterMs: 900,
      expiresMs: undefined,
    })
    // Another identity, another scope: slots of their own.
    expect((await limiter.acquire('v', { limit: 2, leaseMs: 1000 })).allowed).toBe(true)
    expect((await limiter.acquire('u', { limit: 2, leaseMs: 1000, scope: 'jobs' })).allowed).toBe(true)
    const first = a.release()
    expect(a.released).toBe(true)
    expect(a.release()).toBe(first)
    await first
    await a.release()
    expect(await limiter.acquire('u', { limit: 2, leaseMs: 1000 })).toMatchObject({
      allowed: true,
      holders: 2,
    })
    expect((await limiter.acquire('u', { limit: 2, leaseMs: 1000 })).allowed).toBe(false)
    // A refused lease's release does nothing.
    await c.release()
    expect((await limiter.acquire('u', { limit: 2, leaseMs: 1000 })).allowed).toBe(false)
    expect(JSON.parse(JSON.stringify(c))).toMatchObject({ allowed: false, reason: 'concurrency-limited' })
  })

  it('reclaims a slot that is never released after leaseMs, and a late release frees nothing', async () => {
    const clock = fakeClock(1_000_000)
    const limiter = new FastLimit({ backend: new MemoryBackend({ clock: clock.now }) })
    const hung = await limiter.acquire('u', { limit: 1, leaseMs: 500 })
    clock.advance(499)
    expect((await limiter.acquire('u', { limit: 1, leaseMs: 500 })).retryAfterMs).toBe(1)
    clock.advance(1)
    const next = await limiter.acquire('u', { limit: 1, leaseMs: 500 })
    expect(next.allowed).toBe(true)
    await hung.release()
    expect(await limiter.acquire('u', { limit: 1, leaseMs: 500 })).toMatchObject({
      allowed: false,
      holders: 1,
    })
    await next.release()
    expect((await limiter.acquire('u', { limit: 1, leaseMs: 500 })).allowed).toBe(true)
  })

  it('never lets more than 5 of 1,000 concurrent acquirers hold a slot at once', async () => {
    const limiter = new FastLimit()
    const r = await leaseCrowd(limiter, 'hot', { n: 1000, limit: 5, leaseMs: 60_000, holdMs: 1, pollMs: 2 })
    expect(r.done).toBe(1000)
    expect(r.max).toBe(5)
    expect(r.refusals).toBeGreaterThan(0)
    // Every slot came back.
    expect((await limiter.acquire('hot', { limit: 5, leaseMs: 1000 })).holders).toBe(1)
  })

  it('keeps lease state bounded: emptied and expired keys are dropped, and a full table refuses new keys', async () => {
    const clock = fakeClock(1_000_000)
    const backend = new MemoryBackend({ clock: clock.now, maxKeys: 3, cleanupIntervalMs: 0 })
    const limiter = new FastLimit({ backend, onBackendError: 'fail-closed', onError: () => undefined })
    const l1 = await limiter.acquire('a', { limit: 1, leaseMs: 100 })
    await limiter.acquire('b', { limit: 1, leaseMs: 100 })
    await limiter.acquire('c', { limit: 1, leaseMs: 1000 })
    expect(backend.leaseKeys).toBe(3)
    await l1.release()
    // An emptied key stays for its next acquire, until the sweep or a full table drops it.
    expect(backend.leaseKeys).toBe(3)
    await limiter.acquire('d', { limit: 1, leaseMs: 1000 })
    const full = await limiter.acquire('e', { limit: 1, leaseMs: 1000 })
    expect(full).toMatchObject({ allowed: false, source: 'policy', reason: 'fail-closed' })
    expect(full.error?.code).toBe('ERR_FASTLIMIT_STORE_FULL')
    // 'b' expires: its key makes room.
    clock.advance(100)
    expect((await limiter.acquire('e', { limit: 1, leaseMs: 1000 })).allowed).toBe(true)
    clock.advance(1000)
    expect(await backend.sweep()).toBe(3)
    expect(backend.leaseKeys).toBe(0)
  })

  it('validates options and names a backend without acquire', async () => {
    const limiter = new FastLimit()
    for (const bad of [
      undefined,
      {},
      { limit: 0 },
      { limit: 10_001 },
      { limit: 1, leaseMs: 0 },
      { limit: 1, leaseMs: 2 ** 31 },
      { limit: 1, lease: 5 },
    ]) {
      await expect(limiter.acquire('u', bad as never)).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_CONFIG' })
    }
    expect((await limiter.acquire('u', { limit: 1 })).leaseMs).toBe(60_000)
    const inner = new MemoryBackend()
    const minimal: Backend = { checkAndIncrement: (k, b, c) => inner.checkAndIncrement(k, b, c) }
    await expect(new FastLimit({ backend: minimal }).acquire('u', { limit: 1 })).rejects.toThrow(
      /has no acquire\(\), which acquire\(\) needs\. Implement acquire and release/,
    )
    await expect(
      new FastLimit({ onBackendError: { fallback: minimal } }).acquire('u', { limit: 1 }),
    ).rejects.toThrow(/acquire\(\) with this fallback/)
    const closed = new FastLimit()
    await closed.close()
    await expect(closed.acquire('u', { limit: 1 })).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_CLOSED' })
  })

  it('tells lease listeners of each acquire and release, and call listeners of each store call', async () => {
    const limiter = new FastLimit()
    const leases: LeaseEvent[] = []
    const calls: string[] = []
    limiter.on('lease', (e) => leases.push(e))
    limiter.on('call', (e) => calls.push(`${e.operation}:${e.sync}`))
    const l = await limiter.acquire('u', { limit: 1, scope: 's', mode: 'shadow' })
    await limiter.acquire('u', { limit: 1, scope: 's' })
    await l.release()
    await l.release()
    expect(leases.map((e) => [e.operation, e.lease.allowed, e.identity, e.scope, e.mode])).toEqual([
      ['acquire', true, 'u', 's', 'shadow'],
      ['acquire', false, 'u', 's', 'enforce'],
      ['release', true, 'u', 's', 'shadow'],
    ])
    expect(calls).toEqual(['acquire:true', 'acquire:true', 'release:true'])
  })
})

/** An asynchronous lease backend in front of a MemoryBackend whose behaviour the test switches. */
function controlled() {
  const inner = new MemoryBackend()
  const state = {
    mode: 'ok' as 'ok' | 'reject' | 'hang' | 'late',
    acquires: 0,
    releases: [] as string[],
    deadlines: [] as Array<number | undefined>,
    late: [] as Array<() => void>,
  }
  const backend: Backend = {
    kind: 'test',
    checkAndIncrement: (k, b, c) => inner.checkAndIncrement(k, b, c),
    acquire(key: string, slots: SlotConfig, token: string, options?: CallOptions) {
      state.acquires++
      state.deadlines.push(options?.deadline)
      if (state.mode === 'reject') return Promise.reject(new Error('ECONNREFUSED 127.0.0.1:1'))
      if (state.mode === 'hang') return new Promise<AcquireResult>(() => undefined)
      if (state.mode === 'late') {
        // Applied now, answered when the test says.
        const r = inner.acquireSync(key, slots, token)
        return new Promise<AcquireResult>((resolve) => state.late.push(() => resolve(r)))
      }
      return inner.acquire(key, slots, token)
    },
    release(key: string, token: string) {
      state.releases.push(token)
      if (state.mode === 'reject') return Promise.reject(new Error('ECONNREFUSED 127.0.0.1:1'))
      return inner.release(key, token)
    },
  }
  return { backend, state, inner }
}

describe('FastLimit.acquire on an asynchronous backend, and the error policies', () => {
  it('passes a deadline, and releases through the store', async () => {
    const { backend, state } = controlled()
    const limiter = new FastLimit({ backend, timeoutMs: 500 })
    const before = Date.now()
    const l = await limiter.acquire('u', { limit: 1 })
    expect(l.allowed).toBe(true)
    expect(state.deadlines[0]).toBeGreaterThanOrEqual(before + 500)
    expect((await limiter.acquire('u', { limit: 1 })).allowed).toBe(false)
    await l.release()
    expect(state.releases).toHaveLength(1)
    expect((await limiter.acquire('u', { limit: 1 })).allowed).toBe(true)
  })

  it('fail-open gives an allowed lease that holds nothing, whose release does nothing', async () => {
    const { backend, state } = controlled()
    const errors: string[] = []
    const limiter = new FastLimit({ backend, onError: (e) => errors.push(e.code) })
    state.mode = 'reject'
    const l = await limiter.acquire('u', { limit: 1 })
    expect(l).toMatchObject({
      allowed: true,
      reason: 'fail-open',
      source: 'policy',
      holders: undefined,
      remaining: undefined,
      expiresMs: undefined,
    })
    expect(l.error?.code).toBe('ERR_FASTLIMIT_BACKEND')
    await l.release()
    expect(state.releases).toEqual([])
    expect(errors).toEqual(['ERR_FASTLIMIT_BACKEND'])
  })

  it("fail-closed refuses with retryAfterMs 1000; 'throw' rejects; a failed release is reported", async () => {
    const { backend, state } = controlled()
    const closed = new FastLimit({ backend, onBackendError: 'fail-closed' })
    state.mode = 'reject'
    expect(await closed.acquire('u', { limit: 1 })).toMatchObject({
      allowed: false,
      reason: 'fail-closed',
      retryAfterMs: 1000,
    })
    const throwing = new FastLimit({ backend, onBackendError: 'throw', breaker: false })
    await expect(throwing.acquire('u', { limit: 1 })).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_BACKEND' })
    state.mode = 'ok'
    const l = await throwing.acquire('u', { limit: 1 })
    state.mode = 'reject'
    await expect(l.release()).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_BACKEND' })
    const errors: string[] = []
    const open = new FastLimit({ backend, onError: (e) => errors.push(e.code), breaker: false })
    state.mode = 'ok'
    const l2 = await open.acquire('v', { limit: 1 })
    state.mode = 'reject'
    await l2.release()
    expect(errors).toEqual(['ERR_FASTLIMIT_BACKEND'])
  })

  it('a fallback takes the lease when the store fails, and the lease is released there', async () => {
    const { backend, state } = controlled()
    const fallback = new MemoryBackend()
    const limiter = new FastLimit({ backend, onBackendError: { fallback }, breaker: false })
    state.mode = 'reject'
    const l = await limiter.acquire('u', { limit: 1 })
    expect(l).toMatchObject({ allowed: true, source: 'fallback', holders: 1 })
    expect(l.error?.code).toBe('ERR_FASTLIMIT_BACKEND')
    expect(await limiter.acquire('u', { limit: 1 })).toMatchObject({ allowed: false, source: 'fallback' })
    state.mode = 'ok'
    await l.release()
    expect(state.releases).toEqual([])
    expect(fallback.acquireSync('fl:{u}', { limit: 1, leaseMs: 1000 }, 'probe')).toMatchObject({
      acquired: true,
      holders: 1,
    })
  })

  it('times out a hung store, opens the breaker, and never calls the store while it is open', async () => {
    const { backend, state } = controlled()
    const limiter = new FastLimit({ backend, timeoutMs: 20, breaker: { failures: 2, openMs: 60_000 } })
    state.mode = 'hang'
    const a = await limiter.acquire('u', { limit: 1 })
    expect(a.error?.code).toBe('ERR_FASTLIMIT_TIMEOUT')
    await limiter.acquire('u', { limit: 1 })
    expect(limiter.breakerState).toBe('open')
    const c = await limiter.acquire('u', { limit: 1 })
    expect(c.error?.code).toBe('ERR_FASTLIMIT_CIRCUIT_OPEN')
    expect(state.acquires).toBe(2)
  })

  it('releases at once a lease the store granted after the limiter gave up on it', async () => {
    const { backend, state, inner } = controlled()
    const limiter = new FastLimit({ backend, timeoutMs: 20, onBackendError: 'fail-closed' })
    state.mode = 'late'
    const l = await limiter.acquire('u', { limit: 1 })
    expect(l).toMatchObject({ allowed: false, reason: 'fail-closed' })
    expect(inner.acquireSync('fl:{u}', { limit: 1, leaseMs: 1000 }, 'probe-1').acquired).toBe(false)
    // The store answers late: the limiter releases the grant nobody holds.
    for (const answer of state.late.splice(0)) answer()
    await sleep(5)
    expect(state.releases).toHaveLength(1)
    expect(inner.acquireSync('fl:{u}', { limit: 1, leaseMs: 1000 }, 'probe-2').acquired).toBe(true)
  })

  it('rejects a malformed answer as a backend failure', async () => {
    const backend: Backend = {
      checkAndIncrement: () => Promise.reject(new Error('unused')),
      acquire: () => Promise.resolve({ acquired: 'yes' } as never),
      release: () => Promise.resolve(true),
    }
    const limiter = new FastLimit({ backend, onBackendError: 'fail-closed' })
    const l: Lease = await limiter.acquire('u', { limit: 1 })
    expect(l.error).toBeInstanceOf(FastlimitError)
    expect(l.error?.message).toMatch(/not an AcquireResult/)
  })
})

describe('the concurrency option of the HTTP layer', () => {
  const adapter = {
    name: 'test',
    remoteAddress: () => '127.0.0.1',
    header: () => undefined,
    method: () => 'GET',
    setHeader: () => undefined,
    onFinished: () => undefined,
  }
  it('checks the option, the backend and the adapter when rateLimit() is called', () => {
    for (const bad of [0, 10_001, 1.5, '5', { limit: 5, lease: 1 }, { limit: 5, leaseMs: 0 }, [5], null]) {
      expect(() => createHttpLimiter({ concurrency: bad as never }, adapter)).toThrow(ConfigError)
    }
    expect(() => createHttpLimiter({ concurrency: 5 }, adapter)).not.toThrow()
    expect(() => createHttpLimiter({ concurrency: { limit: 5, leaseMs: 1000 } }, adapter)).not.toThrow()
    const { onFinished: _, ...blind } = adapter
    expect(() => createHttpLimiter({ concurrency: 5 }, blind)).toThrow(/HttpAdapter\.onFinished/)
    const inner = new MemoryBackend()
    const minimal: Backend = { checkAndIncrement: (k, b, c) => inner.checkAndIncrement(k, b, c) }
    expect(() =>
      createHttpLimiter({ concurrency: 5, limiter: new FastLimit({ backend: minimal }) }, adapter),
    ).toThrow(/acquire\(\) and release\(\)/)
  })
})
