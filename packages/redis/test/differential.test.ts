// Differential test: for every algorithm, random sequences of (time, cost) go through the Lua script
// (client time source) and through the TypeScript step from core; every result must be identical field by
// field, and so must the stored state, down to its text. Covers peek (cost 0), costs above the capacity,
// checkAndIncrementAll with mixed algorithms, bursts, fractional emission intervals (7 per 1000 ms),
// clocks running backwards (within and beyond the clock skew tolerance: 0 as with the server's TIME,
// 2 s, and the default 5 minutes of timeSource 'client'), long gaps and large timestamps.
import {
  type BucketConfig,
  bucketId,
  encodeState,
  MAX_WINDOW_MS,
  parseRule,
  SLIDING_LOG_SLOTS,
  step,
} from '@fastlimit/core'
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RedisBackend } from '../src'
import { differentialCases } from './differential'
import { closeClient, rawClient, urlOf } from './helpers'

const PREFIX = 'differential:'

let raw: Redis

beforeAll(() => {
  raw = rawClient('standalone') as Redis
})

afterAll(async () => {
  await closeClient(raw)
})

describe('the Lua scripts and the TypeScript steps agree exactly', () => {
  differentialCases({
    label: '',
    prefix: PREFIX,
    backend: (options) => RedisBackend.fromUrl(urlOf('standalone'), options),
    raw: () => raw,
  })

  it('brings a sliding-log of an older release (one entry per admitting ms) down to 64 entries, as core does', async () => {
    const T = 1_700_000_000_000
    const backend = RedisBackend.fromUrl(urlOf('standalone'), {
      keyPrefix: `${PREFIX}old:`,
      timeSource: 'client',
      clock: () => T + 5000,
    })
    try {
      const bucket = parseRule({ algorithm: 'sliding-log', limit: 20_000, windowMs: 60_000 })
      const old: number[] = []
      for (let i = 0; i < 5000; i++) old.push(T + i, 1 + (i % 3))
      await raw.hset(`${PREFIX}old::k`, bucketId(bucket), encodeState(old))
      expect(await backend.peek('k', bucket)).toEqual(step(old, T + 5000, bucket, 0).result)
      const out = step(old, T + 5000, bucket, 7)
      expect(out.state.length).toBe(2 * SLIDING_LOG_SLOTS)
      expect(await backend.checkAndIncrement('k', bucket, 7)).toEqual(out.result)
      expect(await raw.hget(`${PREFIX}old::k`, bucketId(bucket))).toBe(encodeState(out.state))
    } finally {
      await backend.clear()
      await backend.close()
    }
  })

  it('prints large integers in full and reads them back', async () => {
    const backend = RedisBackend.fromUrl(urlOf('standalone'), {
      keyPrefix: `${PREFIX}big:`,
      timeSource: 'client',
      clock: () => 8_640_000_000_000_000 - 1,
    })
    try {
      const bucket: BucketConfig = { algorithm: 'sliding-window', limit: 5, windowMs: MAX_WINDOW_MS }
      await backend.checkAndIncrement('big', bucket, 2)
      const text = await raw.hget(`${PREFIX}big::big`, bucketId(bucket))
      const start = 8_640_000_000_000_000 - 1 - ((8_640_000_000_000_000 - 1) % MAX_WINDOW_MS)
      expect(text).toBe(`${start},0,2`)
      expect(await backend.peek('big', bucket)).toMatchObject({
        remaining: 3,
        resetMs: start + 2 * MAX_WINDOW_MS,
      })
    } finally {
      await backend.clear()
      await backend.close()
    }
  })

  it('reads a malformed stored state as no state, like decodeState', async () => {
    const backend = RedisBackend.fromUrl(urlOf('standalone'), {
      keyPrefix: `${PREFIX}junk:`,
      timeSource: 'client',
      clock: () => 5000,
    })
    try {
      const bucket: BucketConfig = { algorithm: 'fixed-window', limit: 3, windowMs: 1000 }
      for (const junk of ['', 'x', '1,2,', '5000,abc', '1.5,2', '99999999999999999999,1', '5000']) {
        await raw.hset(`${PREFIX}junk::junk`, bucketId(bucket), junk)
        expect(await backend.peek('junk', bucket), JSON.stringify(junk)).toEqual(
          step(undefined, 5000, bucket, 0).result,
        )
      }
      await raw.hset(`${PREFIX}junk::junk`, bucketId(bucket), '5000,2')
      expect((await backend.peek('junk', bucket)).remaining).toBe(1)
    } finally {
      await backend.clear()
      await backend.close()
    }
  })
})
