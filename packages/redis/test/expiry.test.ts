// Keys expire with the window (PEXPIRE on the server's clock): while live every key of ours has a TTL no
// longer than its longest bucket needs, and once the windows have passed SCAN finds none.
import { ALGORITHMS, type BucketConfig } from '@fastlimit/core'
import { describe, expect, it } from 'vitest'
import { backendOn, scanKeys, type Topology } from './helpers'

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
