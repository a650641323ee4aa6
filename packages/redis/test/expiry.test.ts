// Keys expire with the window (PEXPIRE on the server's clock): while live every key of ours has a TTL no
// longer than its longest bucket needs, and once the windows have passed SCAN finds none.
import { ALGORITHMS, type BucketConfig, bucketId } from '@fastlimit/core'
import { Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { RedisBackend } from '../src'
import { backendOn, scanKeys, type Topology } from './helpers'
import { startStandalone } from './servers'

const MARGIN = 50

describe.each<Topology>(['standalone', 'cluster'])(
  'keys expire with the window (%s, server time)',
  (topology) => {
    it('leaves no key of ours once every window has passed', async () => {
      const prefix = `expiry-${topology}:`
      const backend = backendOn(topology, { keyPrefix: prefix, expiryMarginMs: MARGIN })
      try {
        await backend.clear()
        for (const algorithm of ALGORITHMS) {
          const short: BucketConfig = { algorithm, limit: 3, windowMs: 200 }
          const longer: BucketConfig = { algorithm, limit: 5, windowMs: 300 }
          await backend.checkAndIncrement(`fl:{${algorithm}}`, short, 2)
          await backend.checkAndIncrementAll(`fl:{${algorithm}}:all`, [short, longer], 1)
          // Neither a peek nor a denied call writes a key.
          await backend.peek(`fl:{${algorithm}}:peek`, short)
          await backend.checkAndIncrement(`fl:{${algorithm}}:denied`, short, 4)
        }
        const keys = await scanKeys(backend.client, `${prefix}*`)
        expect(keys).toHaveLength(2 * ALGORITHMS.length)
        for (const key of keys) {
          const ttl = await backend.client.pttl(key)
          // Every key has a TTL: at most two windows (sliding-window remembers the previous one) plus twice
          // the margin (an expiry that has to grow grows to twice the margin past the need).
          expect(ttl, key.toString()).toBeGreaterThan(0)
          expect(ttl, key.toString()).toBeLessThanOrEqual(2 * 300 + 2 * MARGIN)
        }
        // Real time has to pass; wait as long as it takes (the TTLs above bound it to well under a second).
        const deadline = Date.now() + 15_000
        let left = keys.length
        while (left > 0 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 100))
          left = (await scanKeys(backend.client, `${prefix}*`)).length
        }
        expect(await scanKeys(backend.client, `${prefix}*`)).toEqual([])
      } finally {
        await backend.close()
      }
    })
  },
)

// A window's state written in the current window vouches for its key's expiry (every write keeps the key
// until the window's end plus the margin), so a charge in the same window skips PTTL; nothing else does.
describe('a charge in the window its state was written in (server time)', () => {
  const minute: BucketConfig = { algorithm: 'fixed-window', limit: 1000, windowMs: 60_000 }
  const hour: BucketConfig = { algorithm: 'gcra', limit: 10, windowMs: 3_600_000 }

  it('runs no PTTL for a fixed or sliding window charged again in its window, and keeps the TTL', async () => {
    // A server of its own: INFO commandstats counts every client's PTTL.
    const server = await startStandalone()
    const raw = new Redis(server.url)
    const backend = RedisBackend.fromUrl(server.url, { keyPrefix: 'kept', expiryMarginMs: MARGIN })
    try {
      for (const algorithm of ['fixed-window', 'sliding-window'] as const) {
        const bucket: BucketConfig = { ...minute, algorithm }
        const key = `fl:{${algorithm}}`
        const first = await backend.checkAndIncrement(key, bucket, 1)
        const pttls = async () =>
          Number(/^cmdstat_pttl:calls=(\d+)/m.exec(await raw.info('commandstats'))?.[1] ?? 0)
        const before = await pttls()
        for (let i = 0; i < 5; i++) {
          const r = await backend.checkAndIncrement(key, bucket, 1)
          // Past a window's edge the state is a new window's, and PTTL runs: start over.
          if (r.resetMs !== first.resetMs) return
        }
        expect(await pttls(), algorithm).toBe(before)
        const ttl = await raw.pttl(`kept::${key}`)
        expect(ttl, algorithm).toBeGreaterThan(first.resetMs - Date.now() - 1000)
      }
    } finally {
      await backend.close()
      raw.disconnect()
      await server.stop()
    }
  })

  it('still grows the expiry for another bucket of the key charged with it', async () => {
    const backend = backendOn('standalone', { keyPrefix: 'kept-all', expiryMarginMs: MARGIN })
    try {
      await backend.clear()
      for (let i = 1; i <= 4; i++) {
        const [, g] = await backend.checkAndIncrementAll('fl:{all}', [minute, hour], 1)
        // The gcra bucket is full again i * 6 minutes from now: the key lives at least that long.
        const ttl = await backend.client.pttl('kept-all::fl:{all}')
        expect(ttl, `charge ${i}`).toBeGreaterThanOrEqual((g?.resetMs ?? 0) - Date.now())
        expect(ttl, `charge ${i}`).toBeGreaterThan(i * 360_000 - 60_000)
      }
    } finally {
      await backend.clear()
      await backend.close()
    }
  })

  it('does not take a sliding window with no count in this window for a kept key', async () => {
    const backend = backendOn('standalone', { keyPrefix: 'kept-sw', expiryMarginMs: MARGIN })
    try {
      await backend.clear()
      const bucket: BucketConfig = { algorithm: 'sliding-window', limit: 10, windowMs: 3_600_000 }
      const [seconds] = (await backend.client.time()) as unknown as [string, string]
      const start = Math.floor((Number(seconds) * 1000) / bucket.windowMs) * bucket.windowMs
      // A state of this window with no count (as a refund leaves it), on a key with no expiry.
      await backend.client.hset('kept-sw::fl:{sw}', bucketId(bucket), `${start},3,0`)
      await backend.checkAndIncrement('fl:{sw}', bucket, 1)
      expect(await backend.client.pttl('kept-sw::fl:{sw}')).toBeGreaterThan(0)
    } finally {
      await backend.clear()
      await backend.close()
    }
  })
})
