// A million spoofed client addresses against a bounded memory backend, through the core HTTP layer that every
// adapter uses: the store never holds more than maxKeys, the heap stays bounded, and counts stay exact.
// (Its own file, so the heap baseline is not shared with fast-check's caches.)
import { createHttpLimiter, FastLimit, MemoryBackend } from '@fastlimit/core'
import { afterAll, describe, expect, it } from 'vitest'
import { fakeAdapter } from './fake-adapter'
import { heapAfterGcMb, Recorder, round } from './helpers'

const recorder = new Recorder('hostile-million', 'hostile')
afterAll(() => recorder.save())

describe('a million spoofed addresses', () => {
  it('1,000,000 distinct client addresses (spoofed XFF behind a trusted proxy, and distinct IPv6 peers) keep MemoryBackend within maxKeys and the heap bounded', async () => {
    const backend = new MemoryBackend({ maxKeys: 10_000, cleanupIntervalMs: 0 })
    const limiter = new FastLimit({ backend })
    const viaProxy = createHttpLimiter(
      { limiter, rules: '5/min', trustProxy: 1, headers: false, scope: 'xff' },
      fakeAdapter,
    )
    const direct = createHttpLimiter(
      { limiter, rules: '5/min', headers: false, scope: 'direct' },
      fakeAdapter,
    )
    const res: Record<string, string> = {}
    const heapBefore = heapAfterGcMb()
    const samples: number[] = []
    let maxSize = 0
    const N = 1_000_000
    const t = performance.now()
    for (let base = 0; base < N; base += 1000) {
      const batch: Array<Promise<unknown>> = []
      for (let i = base; i < base + 1000; i++) {
        if (i % 2 === 0) {
          // An IPv4 address per request, spoofed in X-Forwarded-For; the proxy appended nothing else.
          const ip = `${11 + (i >>> 24)}.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`
          batch.push(viaProxy.handle({ remote: '10.0.0.1', headers: { 'x-forwarded-for': ip } }, res))
        } else {
          // An IPv6 peer in its own /56 each time.
          const ip = `2001:${(i >>> 16).toString(16)}:${(i & 0xffff).toString(16)}:${((i * 7) & 0xff).toString(16)}00::1`
          batch.push(direct.handle({ remote: ip, headers: {} }, res))
        }
      }
      await Promise.all(batch)
      maxSize = Math.max(maxSize, backend.size)
      if (base % 100_000 === 0) {
        expect(backend.size).toBeLessThanOrEqual(10_000)
        samples.push(round(process.memoryUsage().heapUsed / 1024 / 1024))
      }
    }
    const seconds = (performance.now() - t) / 1000
    const heapAfter = heapAfterGcMb()
    expect(maxSize).toBe(10_000)
    // 10,000 keys take about a megabyte; allow for V8's own growth, not for a key per address.
    expect(heapAfter - heapBefore).toBeLessThan(20)
    // The limiter still counts exactly after the flood.
    let admitted = 0
    for (let i = 0; i < 8; i++)
      if (
        (await viaProxy.handle(
          { remote: '10.0.0.1', headers: { 'x-forwarded-for': '198.51.100.200' } },
          res,
        )) === undefined
      )
        admitted++
    expect(admitted).toBe(5)
    await limiter.close()
    recorder.details.millionHeapSamplesMb = samples
    recorder.add({
      class:
        '1,000,000 distinct spoofed addresses (500k XFF behind trustProxy 1, 500k IPv6 peers in distinct /56s), MemoryBackend maxKeys 10,000',
      cases: N,
      result: `size never above ${maxSize} (= maxKeys); heap ${round(heapBefore)} -> ${round(heapAfter)} MB after GC; ${round(N / seconds / 1000)}k req/s; exact afterwards (5 of 8)`,
    })
  })
})
