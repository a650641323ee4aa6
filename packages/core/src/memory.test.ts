import { describe, expect, it } from 'vitest'
import type { BucketConfig } from './backend'
import { ConfigError } from './errors'
import { MemoryBackend } from './memory'
import { backendConformance, fakeClock } from './testing'

backendConformance({
  name: 'MemoryBackend',
  make: (clock) => new MemoryBackend({ clock, cleanupIntervalMs: 0 }),
  countKeys: async (backend) => backend.size,
  sweep: async (backend) => {
    await backend.sweep()
  },
})

const bucket: BucketConfig = { algorithm: 'fixed-window', limit: 1, windowMs: 60_000 }

describe('MemoryBackend', () => {
  it('holds at most maxKeys and drops the least recently used first', async () => {
    const backend = new MemoryBackend({ maxKeys: 3, cleanupIntervalMs: 0 })
    await backend.checkAndIncrement('a', bucket, 1)
    await backend.checkAndIncrement('b', bucket, 1)
    await backend.checkAndIncrement('c', bucket, 1)
    await backend.checkAndIncrement('a', bucket, 1) // touches a (denied, still a use)
    await backend.checkAndIncrement('d', bucket, 1) // evicts b, the least recently used
    expect(backend.size).toBe(3)
    expect((await backend.peek('a', bucket)).remaining).toBe(0)
    expect((await backend.peek('b', bucket)).remaining).toBe(1)
    expect((await backend.peek('c', bucket)).remaining).toBe(0)
    expect((await backend.peek('d', bucket)).remaining).toBe(0)
    await backend.close()
  })

  it('stays within maxKeys under 200,000 distinct keys', async () => {
    const backend = new MemoryBackend({ maxKeys: 10_000, cleanupIntervalMs: 0 })
    for (let i = 0; i < 200_000; i++) backend.checkAndIncrementSync(`ip-${i}`, bucket, 1)
    expect(backend.size).toBe(10_000)
    expect((await backend.peek('ip-199999', bucket)).remaining).toBe(0)
    expect((await backend.peek('ip-0', bucket)).remaining).toBe(1)
    await backend.close()
  })

  it('drops expired keys lazily and in the sweep, and keeps live ones', async () => {
    const clock = fakeClock()
    const backend = new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 })
    const short: BucketConfig = { algorithm: 'gcra', limit: 10, windowMs: 1000 }
    const long: BucketConfig = { algorithm: 'gcra', limit: 10, windowMs: 3_600_000 }
    for (let i = 0; i < 25_000; i++) backend.checkAndIncrementSync(`short-${i}`, short, 1)
    for (let i = 0; i < 100; i++) backend.checkAndIncrementSync(`long-${i}`, long, 1)
    clock.advance(5000)
    expect(await backend.sweep()).toBe(25_000)
    expect(backend.size).toBe(100)
    clock.advance(3_600_000)
    backend.checkAndIncrementSync('long-0', long, 1) // lazily replaced
    expect(backend.size).toBe(100)
    expect(await backend.sweep()).toBe(99)
  })

  it('sweeps on an unref-ed timer by itself', async () => {
    const clock = fakeClock()
    const backend = new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 20 })
    backend.checkAndIncrementSync('x', bucket, 1)
    clock.advance(120_000)
    await new Promise((r) => setTimeout(r, 80))
    expect(backend.size).toBe(0)
    await backend.close()
  })

  it('refuses bad options at construction and calls after close', async () => {
    expect(() => new MemoryBackend({ maxKeys: 0 })).toThrow(ConfigError)
    expect(() => new MemoryBackend({ maxKeys: 1.5 })).toThrow(
      /maxKeys must be a whole number from 1 to 1073741824, got 1.5/,
    )
    expect(() => new MemoryBackend({ cleanupIntervalMs: -1 })).toThrow(/cleanupIntervalMs/)
    expect(() => new MemoryBackend({ clock: 5 as never })).toThrow(/clock must be a function/)
    expect(() => new MemoryBackend({ maxkeys: 5 } as never)).toThrow(/Unknown option "maxkeys"/)
    const backend = new MemoryBackend()
    await backend.close()
    await expect(backend.checkAndIncrement('a', bucket, 1)).rejects.toMatchObject({
      code: 'ERR_FASTLIMIT_CLOSED',
    })
  })
})

describe('MemoryBackend keys', () => {
  it('FastLimit (prefix, identity) lookups and direct prefix:{identity} keys reach the same state', async () => {
    const { FastLimit } = await import('./limiter')
    const backend = new MemoryBackend()
    const limiter = new FastLimit({ backend, prefix: 'app:v1' })
    const rule = limiter.rules('2/min').rules[0] as BucketConfig
    await limiter.check('user-{1}', '2/min')
    expect((await backend.peek('app:v1:{user-%7B1%7D}', rule)).remaining).toBe(1)
    await backend.checkAndIncrement('app:v1:{user-%7B1%7D}', rule, 1)
    expect((await limiter.check('user-{1}', '2/min')).allowed).toBe(false)
    await backend.reset('app:v1:{user-%7B1%7D}')
    expect((await limiter.check('user-{1}', '2/min')).remaining).toBe(1)
    // Keys of other shapes never alias a prefixed one.
    await backend.checkAndIncrement('app:v1:{x}}', rule, 2)
    await backend.checkAndIncrement('{x}', rule, 2)
    expect((await limiter.peek('x', '2/min')).remaining).toBe(2)
    expect(backend.size).toBe(3)
  })
})
