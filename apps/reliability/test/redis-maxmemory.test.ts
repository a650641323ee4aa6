// A Redis that runs out of memory (maxmemory), under each eviction policy: what happens to limits. A flood
// of fresh identities fills it while 20 clients sit at their limit (5 of 5/h); afterwards those clients
// and a fresh one check again. noeviction: the writes fail with ERR_FASTLIMIT_STORE_FULL (before: an
// anonymous ERR_FASTLIMIT_BACKEND) and the policy applies, denials still hold; the other policies evict
// limiter keys silently and the clients at their limit are admitted again. Then the bytes each key takes
// (MEMORY USAGE, and INFO memory over 100,000 keys), for the README's sizing advice.
import { FastLimit, type FastlimitError } from '@fastlimit/core'
import { RedisBackend } from '@fastlimit/redis'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  infoField,
  type StandaloneSetup,
  startStandalone,
  stopAll,
} from '../../../packages/redis/test/servers'
import { formatTally, Recorder, round } from './helpers'

const recorder = new Recorder('redis-maxmemory', 'fault')
const LIMIT = 5
const RULE = `${LIMIT}/h`
const VICTIMS = 20
const FLOOD = 40_000
/** Room over the memory used before the flood: about a third of what the flood needs. */
const ROOM = 2_000_000

let server: StandaloneSetup | undefined
let raw: Redis

beforeAll(async () => {
  server = await startStandalone()
  raw = new Redis({ port: server.port, host: '127.0.0.1' })
})

afterAll(async () => {
  raw?.disconnect()
  await stopAll()
  recorder.save()
})

async function used(): Promise<number> {
  return Number(infoField(await raw.info('memory'), 'used_memory'))
}

const POLICIES = [
  'noeviction',
  'noeviction, breaker off',
  'allkeys-lru',
  'allkeys-lfu',
  'allkeys-random',
  'volatile-lru',
  'volatile-ttl',
] as const

describe('maxmemory: what each eviction policy does to limits', () => {
  it.each(POLICIES)('%s', async (label) => {
    const s = server as StandaloneSetup
    const policy = label.split(',')[0] as string
    const breakerOff = label.endsWith('breaker off')
    await raw.config('SET', 'maxmemory', '0')
    await raw.flushall()
    await raw.config('SET', 'maxmemory-policy', policy)
    await raw.config('RESETSTAT')
    const backend = RedisBackend.fromUrl(s.url)
    const errors: Record<string, number> = {}
    const limiter = new FastLimit({
      backend,
      prefix: 'mm',
      onBackendError: 'fail-open',
      ...(breakerOff ? { breaker: false as const } : {}),
      onError: (err: FastlimitError) => {
        errors[err.code] = (errors[err.code] ?? 0) + 1
      },
    })
    try {
      for (let v = 0; v < VICTIMS; v++) {
        for (let i = 0; i < LIMIT; i++) expect((await limiter.check(`victim-${v}`, RULE)).allowed).toBe(true)
      }
      await raw.config('SET', 'maxmemory', String((await used()) + ROOM))
      // The flood: fresh identities, 500 at a time.
      const flood: Record<string, number> = {}
      for (let i = 0; i < FLOOD; i += 500) {
        const ds = await Promise.all(
          Array.from({ length: 500 }, (_, j) => limiter.check(`flood-${i + j}`, RULE)),
        )
        for (const d of ds) {
          const k = d.source === 'backend' ? d.reason : `${d.reason} (${d.error?.code})`
          flood[k] = (flood[k] ?? 0) + 1
        }
      }
      const floodErrors = { ...errors }
      // The clients at their limit check again, 5 times each: every admission is one over the limit.
      let victimsAdmitted = 0
      const victimOutcomes: Record<string, number> = {}
      for (let v = 0; v < VICTIMS; v++) {
        for (let i = 0; i < LIMIT; i++) {
          const d = await limiter.check(`victim-${v}`, RULE)
          if (d.allowed) victimsAdmitted++
          const k = d.source === 'backend' ? d.reason : `${d.reason} (${d.error?.code})`
          victimOutcomes[k] = (victimOutcomes[k] ?? 0) + 1
        }
      }
      // A fresh client: 10 checks on 5/h.
      const fresh = []
      for (let i = 0; i < 2 * LIMIT; i++) fresh.push(await limiter.check('fresh-after', RULE))
      const freshAdmitted = fresh.filter((d) => d.allowed).length
      const stats = await raw.info('stats')
      const evicted = Number(infoField(stats, 'evicted_keys'))
      recorder.add({
        fault: `maxmemory (used + 2 MB), ${label}: ${FLOOD.toLocaleString('en-US')} fresh identities`,
        policy: 'fail-open',
        requests: FLOOD + VICTIMS * LIMIT + 2 * LIMIT,
        outcomesDuringFault: formatTally(flood),
        backendErrors: formatTally(floodErrors),
        overLimit: victimsAdmitted + Math.max(0, freshAdmitted - LIMIT),
        exactAfter:
          `clients at 5/5 admitted ${victimsAdmitted} more of ${VICTIMS * LIMIT} (${formatTally(victimOutcomes)}); ` +
          `fresh client ${freshAdmitted}/10 (${[...new Set(fresh.map((d) => d.source))].join(', ')}); ` +
          `evicted keys ${evicted}`,
      })
      if (policy === 'noeviction') {
        // Loud: the writes that do not fit fail as a full store, and the policy decides them.
        expect(floodErrors.ERR_FASTLIMIT_STORE_FULL ?? 0).toBeGreaterThan(0)
        expect(evicted).toBe(0)
        expect(fresh.every((d) => d.source === 'policy')).toBe(true)
        if (breakerOff) {
          expect(Object.keys(floodErrors)).toEqual(['ERR_FASTLIMIT_STORE_FULL'])
          // Denials write nothing: the clients at their limit are still refused by Redis.
          expect(victimsAdmitted).toBe(0)
          expect(fresh.every((d) => d.error?.code === 'ERR_FASTLIMIT_STORE_FULL')).toBe(true)
        }
      } else {
        // Silent: Redis evicts (limiter keys too) and never says it is full.
        expect(evicted).toBeGreaterThan(0)
        expect(floodErrors).toEqual({})
      }
    } finally {
      await limiter.close()
      await backend.close()
      await raw.config('SET', 'maxmemory', '0')
      await raw.flushall()
    }
  })
})

describe('bytes per key', () => {
  it('MEMORY USAGE of one key, and INFO memory over 100,000 keys, for one and two rules', async () => {
    const s = server as StandaloneSetup
    await raw.config('SET', 'maxmemory', '0')
    await raw.flushall()
    const backend = RedisBackend.fromUrl(s.url)
    const limiter = new FastLimit({ backend, prefix: 'app', onBackendError: 'throw' })
    const sizes: Record<string, unknown> = {}
    try {
      for (const [label, rules] of [
        ['gcra 100/h', ['100/h']],
        [
          'gcra 100/h + sliding-window 1000/d',
          ['100/h', { limit: 1000, window: '1d', algorithm: 'sliding-window' }],
        ],
        ['fixed-window 100/h', [{ limit: 100, window: '1h', algorithm: 'fixed-window' }]],
      ] as const) {
        await raw.flushall()
        const before = await used()
        const n = 100_000
        for (let i = 0; i < n; i += 1000) {
          await Promise.all(
            Array.from({ length: 1000 }, (_, j) =>
              limiter.check(`user-${String(i + j).padStart(6, '0')}`, rules as never),
            ),
          )
        }
        const after = await used()
        const usage = Number(
          await raw.call('MEMORY', 'USAGE', 'fastlimit::app:{user-000042}', 'SAMPLES', '0'),
        )
        const key = 'fastlimit::app:{user-000042}'
        sizes[label] = {
          memoryUsageBytes: usage,
          infoBytesPerKey: round((after - before) / n, 1),
          keyLength: key.length,
          keys: Number(await raw.dbsize()),
        }
        expect(Number(await raw.dbsize())).toBe(n)
      }
    } finally {
      await limiter.close()
      await backend.close()
      await raw.flushall()
    }
    recorder.details['bytes per key (user-NNNNNN identities, prefix app)'] = sizes
  })
})
