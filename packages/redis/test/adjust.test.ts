// RedisBackend.adjust with the script's hardening: a refund that reaches Redis past its deadline changes
// nothing; a full Redis says so (ERR_FASTLIMIT_STORE_FULL); a flushed script cache is reloaded (NOSCRIPT);
// an auto-pipelined client and a Cluster (keys that are not UTF-8 included) adjust in the key's one slot;
// bad arguments are refused before anything is sent.
import { type BucketConfig, type Charge, FastLimit, FastlimitError } from '@fastlimit/core'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RedisBackend } from '../src'
import { backendOn, closeClient, urlOf } from './helpers'
import { infoField, type StandaloneSetup, startStandalone } from './servers'

const LIMIT = 5
const bucket: BucketConfig = Object.freeze({ algorithm: 'gcra', limit: LIMIT, windowMs: 3_600_000 })
const other: BucketConfig = Object.freeze({ algorithm: 'fixed-window', limit: 10, windowMs: 3_600_000 })

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

async function rejection(promise: Promise<unknown>): Promise<FastlimitError> {
  try {
    await promise
  } catch (err) {
    expect(err).toBeInstanceOf(FastlimitError)
    return err as FastlimitError
  }
  throw new Error('expected a rejection')
}

describe('on a Redis of its own', () => {
  let server: StandaloneSetup
  let raw: Redis
  beforeAll(async () => {
    server = await startStandalone({ config: ['enable-debug-command yes'] })
    raw = new Redis({ port: server.port, host: '127.0.0.1' })
  })
  afterAll(async () => {
    await closeClient(raw)
    await server.stop()
  })

  it('a refund that reaches Redis past its deadline changes nothing and rejects with ERR_FASTLIMIT_TIMEOUT', async () => {
    const backend = RedisBackend.fromUrl(server.url, { keyPrefix: 'late:' })
    try {
      const charged = await backend.checkAndIncrementAll('a', [bucket, other], 3)
      const charges = charged.map((r) => ({ cost: 3, resetMs: r.resetMs, atMs: r.atMs }))
      const sleeper = new Redis({ port: server.port, host: '127.0.0.1', lazyConnect: true })
      await sleeper.connect()
      const woken = sleeper.call('DEBUG', 'SLEEP', '0.8').then(() => sleeper.disconnect())
      await delay(100)
      const deadline = Date.now() + 200
      const errors = await Promise.all([
        rejection(backend.adjust('a', [bucket, other], -3, charges, { deadline })),
        rejection(backend.adjust('a', [bucket], 2, undefined, { deadline })),
      ])
      for (const err of errors) {
        expect(err.code).toBe('ERR_FASTLIMIT_TIMEOUT')
        expect(err.message).toMatch(
          /^\[fastlimit\] \[redis\] adjust was applied \d+ ms past its deadline; nothing was changed\./,
        )
      }
      await woken
      expect((await backend.peek('a', bucket)).remaining).toBe(LIMIT - 3)
      expect((await backend.peek('a', other)).remaining).toBe(10 - 3)
      // Within its deadline, the same refund gives back both charges.
      await backend.adjust('a', [bucket, other], -3, charges, { deadline: Date.now() + 10_000 })
      expect((await backend.peek('a', bucket)).remaining).toBe(LIMIT)
      expect((await backend.peek('a', other)).remaining).toBe(10)
    } finally {
      await backend.clear()
      await backend.close()
    }
  })

  it('reconnect() (the breaker) fails every adjustment in flight at once; none applies when the server wakes', async () => {
    const backend = RedisBackend.fromUrl(server.url, { keyPrefix: 'dropped:' })
    try {
      const charges: Charge[][] = []
      for (let i = 0; i < 20; i++) {
        const r = await backend.checkAndIncrement(`k${i}`, bucket, 2)
        charges.push([{ cost: 2, resetMs: r.resetMs, atMs: r.atMs }])
      }
      const sleeper = new Redis({ port: server.port, host: '127.0.0.1', lazyConnect: true })
      await sleeper.connect()
      const woken = sleeper.call('DEBUG', 'SLEEP', '1.5').then(() => sleeper.disconnect())
      await delay(100)
      // Past the deadline (before the server wakes) whatever reached it changes nothing.
      const deadline = Date.now() + 1000
      const calls = Array.from({ length: 500 }, (_, i) =>
        backend.adjust(`k${i % 20}`, [bucket], -2, charges[i % 20], { deadline }).then(
          () => 'answered',
          (err: FastlimitError) => err.code,
        ),
      )
      await delay(200)
      backend.reconnect(new Error('the breaker opened'))
      // Dropped with the connection (on a loaded machine, a call made after its deadline is not sent).
      const outcomes = await Promise.all(calls)
      expect(outcomes).toContain('ERR_FASTLIMIT_BACKEND')
      expect(outcomes.filter((o) => o !== 'ERR_FASTLIMIT_BACKEND' && o !== 'ERR_FASTLIMIT_TIMEOUT')).toEqual(
        [],
      )
      await woken
      // Whatever reached the server's buffers ran past its deadline: nothing was refunded.
      for (let i = 0; i < 20; i++) {
        for (;;) {
          try {
            expect((await backend.peek(`k${i}`, bucket)).remaining).toBe(LIMIT - 2)
            break
          } catch (err) {
            if (!(err instanceof FastlimitError) || err.code !== 'ERR_FASTLIMIT_BACKEND') throw err
            await delay(20)
          }
        }
      }
    } finally {
      await backend.clear().catch(() => undefined)
      await backend.close()
    }
  })

  it('on a full Redis a refund that would write rejects with ERR_FASTLIMIT_STORE_FULL and changes nothing', async () => {
    const backend = RedisBackend.fromUrl(server.url, { keyPrefix: 'full:' })
    try {
      await backend.checkAndIncrement('a', bucket, 2)
      await raw.config('SET', 'maxmemory-policy', 'noeviction')
      await raw.set('full-filler', 'x'.repeat(400_000))
      const used = Number(infoField(await raw.info('memory'), 'used_memory'))
      await raw.config('SET', 'maxmemory', String(used - 100_000))
      const err = await rejection(backend.adjust('a', [bucket], -2, undefined))
      expect(err.code).toBe('ERR_FASTLIMIT_STORE_FULL')
      expect(err.message).toMatch(
        /^\[fastlimit\] \[redis\] adjust failed: redis:\/\/127\.0\.0\.1:\d+ is full \(OOM/,
      )
      // An adjustment that changes nothing writes nothing: still answered.
      expect((await backend.adjust('fresh', [bucket], -1, undefined))[0]?.remaining).toBe(LIMIT)
      await raw.config('SET', 'maxmemory', '0')
      expect((await backend.peek('a', bucket)).remaining).toBe(LIMIT - 2)
    } finally {
      await raw.config('SET', 'maxmemory', '0')
      await raw.del('full-filler')
      await backend.clear()
      await backend.close()
    }
  })

  it('reloads the script after SCRIPT FLUSH (NOSCRIPT), once', async () => {
    const backend = RedisBackend.fromUrl(server.url, { keyPrefix: 'noscript:' })
    try {
      await backend.checkAndIncrement('a', bucket, 4)
      await raw.script('FLUSH')
      const [after] = await backend.adjust('a', [bucket], -4, undefined)
      expect(after?.remaining).toBe(LIMIT)
    } finally {
      await backend.clear()
      await backend.close()
    }
  })
})

describe('arguments', () => {
  it('refuses a bad delta or bad charges with ERR_FASTLIMIT_ARGUMENT, sending nothing', async () => {
    const backend = backendOn('standalone', { keyPrefix: 'adjust-args:' })
    try {
      for (const delta of [1.5, Number.NaN, '1', 2 ** 53]) {
        const err = await rejection(backend.adjust('a', [bucket], delta as number, undefined))
        expect(err.code).toBe('ERR_FASTLIMIT_ARGUMENT')
        expect(err.message).toMatch(/delta must be a whole number/)
      }
      for (const charges of [
        [],
        [{ cost: 0, resetMs: 1 }],
        [{ cost: 1, resetMs: 1.5 }],
        [{ cost: 1, resetMs: 1, atMs: '2' }],
        [null],
        'x',
      ]) {
        const err = await rejection(backend.adjust('a', [bucket], -1, charges as never))
        expect(err.code, JSON.stringify(charges)).toBe('ERR_FASTLIMIT_ARGUMENT')
      }
      expect(await backend.adjust('a', [], -1, undefined)).toEqual([])
      expect(await backend.adjust('a', [], -1, [])).toEqual([])
    } finally {
      await backend.close()
    }
  })
})

describe('clients', () => {
  it('adjusts through an auto-pipelined client (the defined command)', async () => {
    const client = new Redis(urlOf('standalone'), { enableAutoPipelining: true })
    const backend = new RedisBackend({ client, keyPrefix: 'adjust-ap:' })
    try {
      const limiter = new FastLimit({ backend, onBackendError: 'throw' })
      const reservations = await Promise.all(
        Array.from({ length: 20 }, () => limiter.reserve('user', '100/h', { cost: 3 })),
      )
      await Promise.all(reservations.map((r, i) => (i % 2 === 0 ? r.cancel() : r.settle(1))))
      expect((await limiter.peek('user', '100/h')).remaining).toBe(100 - 10)
    } finally {
      await backend.clear()
      await backend.close()
      await closeClient(client)
    }
  })

  it('on a Cluster, a refund of several rules reaches the key of its identity, whatever the key', async () => {
    const backend = backendOn('cluster', { keyPrefix: 'adjust-cluster:' })
    try {
      const limiter = new FastLimit({ backend, onBackendError: 'throw' })
      const rules = limiter.rules(['5/h', '20/d'])
      // A lone surrogate: the key is not UTF-8, and goes by its real slot.
      for (const identity of ['plain', 'brace{x}', 'lone\ud800']) {
        const r = await limiter.reserve(identity, rules, { cost: 4 })
        expect(r.allowed, identity).toBe(true)
        expect((await r.settle(1)).outcome).toBe('adjusted')
        const left = await limiter.peek(identity, rules)
        expect(left.remaining, identity).toBe(4)
        await limiter.refund(identity, rules, 1)
        expect((await limiter.peek(identity, rules)).remaining, identity).toBe(5)
      }
    } finally {
      await backend.clear()
      await backend.close()
    }
  })
})
