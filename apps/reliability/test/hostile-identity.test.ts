// Hostile identities and costs on every backend: braces, newlines, NUL, lone surrogates, prototype names,
// 1 MB strings, crafted near-collisions; each distinct identity gets its own limit. Bad costs are a clear
// FastlimitError (ERR_FASTLIMIT_ARGUMENT) and charge nothing. Misbehaving backends get the error policy.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {
  type Backend,
  type BackendResult,
  escapeIdentity,
  FastLimit,
  FastlimitError,
  MAX_IDENTITY_LENGTH,
  MemoryBackend,
  parseRule,
} from '@fastlimit/core'
import { RedisBackend } from '@fastlimit/redis'
import { SQLiteBackend } from '@fastlimit/sqlite'
import fc from 'fast-check'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type StandaloneSetup, startStandalone, stopAll } from '../../../packages/redis/test/servers'
import { Recorder, watchUnhandled } from './helpers'

const recorder = new Recorder('hostile-identity', 'hostile')
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-reliability-identity-'))
const MB = 2 ** 20

let redis: StandaloneSetup | undefined
const backends: Array<{ name: string; backend: Backend }> = []

beforeAll(async () => {
  redis = await startStandalone()
  backends.push(
    { name: 'memory', backend: new MemoryBackend({ cleanupIntervalMs: 0 }) },
    { name: 'sqlite', backend: new SQLiteBackend(path.join(dir, 'identities.db'), { cleanupIntervalMs: 0 }) },
    { name: 'redis', backend: RedisBackend.fromUrl(redis.url, { keyPrefix: 'hostile:' }) },
  )
})

afterAll(async () => {
  for (const b of backends) await b.backend.close?.()
  await stopAll()
  fs.rmSync(dir, { recursive: true, force: true })
  recorder.save()
})

/** Identities chosen to break keys: structure characters, escapes, encodings, prototype names, sizes. */
function hostileIdentities(): string[] {
  const long = 'a'.repeat(MAX_IDENTITY_LENGTH)
  const list = [
    '',
    ' ',
    '{',
    '}',
    '{}',
    'a{b}c',
    'a{b',
    'a%7Bb',
    'a%257Bb',
    '%',
    '%25',
    '%7B',
    '%7D',
    '%u0000',
    '%00',
    '%H',
    `%H${'0'.repeat(64)}`,
    '\n',
    '\r\n',
    'a\nb',
    '\u0000',
    'a\u0000',
    'a\u0000b',
    '\u0085',
    '\u00a0',
    '\u2028',
    '\u001b[31m',
    '\ud800',
    '\udc00',
    '\udc00\ud800',
    '\ud800\udc00',
    '%uD800',
    '😀',
    'é',
    'e\u0301',
    '__proto__',
    'constructor',
    'prototype',
    'toString',
    'hasOwnProperty',
    '__defineGetter__',
    'fl:{x}',
    'x}:{y',
    'x}',
    ':',
    'a:b',
    '*',
    '[a-z]*',
    '\\',
    long,
    `${long}a`,
    `${long.slice(1)}{`,
    `${long.slice(2)}{`,
    'a'.repeat(MB),
    `${'a'.repeat(MB - 1)}b`,
    `b${'a'.repeat(MB - 1)}`,
    // Identities that escaping triples cost ~0.25 ms per KB (see the timing test below): 64 KB here.
    '{'.repeat(64 * 1024),
    '\u0000'.repeat(64 * 1024),
    '😀'.repeat(32 * 1024),
    '\ud800'.repeat(64 * 1024),
  ]
  expect(new Set(list).size).toBe(list.length)
  return list
}

/**
 * Charges every identity 3 times, round by round, with a limit of 2: each must be admitted twice and denied
 * the third time. Two identities sharing a key would be denied in the second round.
 */
async function independent(limiter: FastLimit, ids: readonly string[], rule = '2/h'): Promise<boolean[][]> {
  const rounds: boolean[][] = []
  for (let round = 0; round < 3; round++) {
    const row: boolean[] = []
    for (const id of ids) row.push((await limiter.check(id, rule)).allowed)
    rounds.push(row)
  }
  return rounds
}

describe('identities', () => {
  it('hostile identities (structure characters, escapes, lone surrogates, prototype names, 1 MB strings) each get their own limit on every backend', async () => {
    const ids = hostileIdentities()
    for (const { name, backend } of backends) {
      const limiter = new FastLimit({ backend, prefix: 'h', onBackendError: 'throw' })
      const rounds = await independent(limiter, ids)
      const wrong = ids.filter(
        (_, i) => rounds[0]?.[i] !== true || rounds[1]?.[i] !== true || rounds[2]?.[i] !== false,
      )
      expect(
        wrong.map((id) => JSON.stringify(id.slice(0, 40))),
        `${name}: identities that did not get exactly 2 of 3`,
      ).toEqual([])
      await limiter.close()
    }
    // The default in-memory path of FastLimit (no key string built) too.
    const own = new FastLimit()
    const rounds = await independent(own, ids)
    expect(rounds.map((r) => r.filter(Boolean).length)).toEqual([ids.length, ids.length, 0])
    await own.close()
    recorder.add({
      class:
        'hostile identities (braces, %-escapes, NUL, newlines, lone surrogates, __proto__, 1 MB strings)',
      cases: ids.length * (backends.length + 1),
      result: `${ids.length} identities × memory, sqlite, redis, default: each admitted exactly 2 of 3, no collisions`,
    })
  })

  it('in Redis, every hostile identity is one key whose hash tag is the escaped identity (no brace inside, bounded length)', async () => {
    const ids = hostileIdentities()
    const setup = redis as StandaloneSetup
    const backend = backends.find((b) => b.name === 'redis')?.backend as Backend
    const limiter = new FastLimit({ backend, prefix: 'keys', onBackendError: 'throw' })
    for (const id of ids) expect((await limiter.check(id, '2/h')).allowed).toBe(true)
    await limiter.close()
    const client = new Redis({ port: setup.port, host: '127.0.0.1' })
    try {
      const keys: Buffer[] = []
      let cursor = '0'
      do {
        const [next, batch] = await client.scanBuffer(cursor, 'MATCH', 'hostile::keys:*', 'COUNT', 1000)
        cursor = next.toString()
        keys.push(...batch)
      } while (cursor !== '0')
      expect(keys).toHaveLength(ids.length)
      for (const key of keys) {
        const text = key.toString('latin1')
        expect(text.indexOf('{')).toBe('hostile::keys:'.length)
        expect(text.indexOf('}')).toBe(text.length - 1)
        expect(key.length).toBeLessThanOrEqual('hostile::keys:{}'.length + MAX_IDENTITY_LENGTH * 3)
      }
    } finally {
      client.disconnect()
    }
  })

  it('fast-check: random identity sets (any code unit, lone surrogates, %-escape look-alikes) never share a limit', async () => {
    let cases = 0
    const idArb = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 8 }),
      fc.string({
        unit: fc.constantFrom(
          '%',
          '{',
          '}',
          '7',
          'B',
          'D',
          'u',
          'H',
          '2',
          '5',
          '\u0000',
          '\ud800',
          '\udc00',
          'a',
        ),
        maxLength: 8,
      }),
      fc.string({ unit: fc.constantFrom('a', '{', '%'), minLength: 195, maxLength: 205 }),
    )
    const redisBackend = backends.find((b) => b.name === 'redis')?.backend as Backend
    const sqliteBackend = backends.find((b) => b.name === 'sqlite')?.backend as Backend
    let run = 0
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(idArb, { minLength: 2, maxLength: 12 }), async (ids) => {
        run++
        for (const backend of [new MemoryBackend(), sqliteBackend, redisBackend]) {
          const limiter = new FastLimit({ backend, prefix: `fc${run}`, onBackendError: 'throw' })
          const rounds = await independent(limiter, ids)
          expect(rounds.map((r) => r.filter(Boolean).length)).toEqual([ids.length, ids.length, 0])
          await limiter.close()
        }
        cases += ids.length
      }),
      { numRuns: 150 },
    )
    recorder.add({
      class: 'random identity sets (fast-check) on memory, sqlite, redis',
      cases,
      result: 'each identity exactly 2 of 3; no two identities ever shared a limit',
    })
  })

  it('fast-check: escapeIdentity is injective and its output is safe (no braces or control characters, no lone surrogates, ≤ 200 units)', async () => {
    const seen = new Map<string, string>()
    const arb = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 20 }),
      fc.string({
        unit: fc.constantFrom('%', '{', '}', '7', 'B', 'u', 'H', '0', '\u0000', '\ud800', '\udc00'),
        maxLength: 12,
      }),
      fc.string({ unit: fc.constantFrom('a', '%', '{'), minLength: 60, maxLength: 260 }),
    )
    let cases = 0
    await fc.assert(
      fc.asyncProperty(arb, async (id) => {
        cases++
        const e = await escapeIdentity(id)
        const before = seen.get(e)
        if (before !== undefined)
          expect(before, `${JSON.stringify(id)} and ${JSON.stringify(before)} share a key`).toBe(id)
        seen.set(e, id)
        expect(e.length).toBeLessThanOrEqual(MAX_IDENTITY_LENGTH)
        expect(e).not.toMatch(/[{}\u0000-\u001f\u007f-\u009f]/)
        expect(e).not.toMatch(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/)
      }),
      { numRuns: 20_000 },
    )
    recorder.add({
      class: 'escapeIdentity injectivity (fast-check)',
      cases,
      result: `${seen.size} distinct identities, ${seen.size} distinct keys; all safe`,
    })
  })

  it('a 1 MB identity of braces is decided correctly, within a bound that rules out a hang (timing recorded)', async () => {
    const limiter = new FastLimit()
    const timings: Record<string, number> = {}
    for (const [name, id] of [
      ['1 MB of a', 'a'.repeat(MB)],
      ['1 MB of {', '{'.repeat(MB)],
      ['1 MB of NUL', '\u0000'.repeat(MB)],
      ['1 MB of lone surrogates', '\ud800'.repeat(MB)],
    ] as const) {
      const t = performance.now()
      const d = await limiter.check(id, '1/h')
      timings[name] = Math.round(performance.now() - t)
      expect(d.allowed).toBe(true)
      expect((await limiter.check(id, '1/h')).allowed).toBe(false)
      // Linear work: seconds would mean something quadratic or a hang.
      expect(timings[name]).toBeLessThan(5000)
    }
    await limiter.close()
    recorder.details.oneMbIdentityCheckMs = timings
    recorder.add({
      class: '1 MB identities, one check each (event-loop time)',
      cases: 4,
      result: `correct; time per check: ${Object.entries(timings)
        .map(([k, v]) => `${k} ${v} ms`)
        .join(', ')}`,
    })
  })

  it('identities that are not strings are refused with ERR_FASTLIMIT_ARGUMENT, as a rejection', async () => {
    const limiter = new FastLimit()
    const bad: unknown[] = [
      undefined,
      null,
      42,
      4.2,
      Number.NaN,
      true,
      {},
      [],
      ['a'],
      Symbol('s'),
      () => 'a',
      10n,
      new String('a'),
    ]
    for (const id of bad) {
      const p = limiter.check(id as string, '1/s')
      expect(p).toBeInstanceOf(Promise)
      await expect(p).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_ARGUMENT' })
    }
    await limiter.close()
    recorder.add({
      class: 'non-string identities',
      cases: bad.length,
      result: 'each a rejected FastlimitError ERR_FASTLIMIT_ARGUMENT',
    })
  })
})

describe('costs', () => {
  const BAD: unknown[] = [
    0,
    -0,
    -1,
    1.5,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    2 ** 53,
    2 ** 53 + 2,
    1e300,
    '1',
    null,
    true,
    1n,
    {},
    [],
  ]

  it('cost 0, -1, NaN, Infinity, 2^53, strings, ... are ERR_FASTLIMIT_ARGUMENT on every backend and charge nothing; 2^53 - 1 can never pass', async () => {
    let cases = 0
    for (const { name, backend } of backends) {
      const limiter = new FastLimit({ backend, prefix: 'cost', onBackendError: 'fail-open' })
      for (const cost of BAD) {
        const p = limiter.check('cost-victim', '5/h', { cost: cost as number })
        await expect(p, `${name}: cost ${String(cost)}`).rejects.toBeInstanceOf(FastlimitError)
        await expect(p).rejects.toMatchObject({
          code: 'ERR_FASTLIMIT_ARGUMENT',
          message: expect.stringMatching(/cost/),
        })
        cases++
      }
      const never = await limiter.check('cost-victim', '5/h', { cost: 2 ** 53 - 1 })
      expect(never).toMatchObject({
        allowed: false,
        reason: 'cost-exceeds-limit',
        retryAfterMs: Number.POSITIVE_INFINITY,
      })
      const undef = await limiter.check('cost-victim', '5/h', { cost: undefined })
      expect(undef.cost).toBe(1)
      // Nothing above was charged: 4 left of 5.
      const ds = []
      for (let i = 0; i < 5; i++) ds.push((await limiter.check('cost-victim', '5/h')).allowed)
      expect(ds, name).toEqual([true, true, true, true, false])
      cases += 2
      await limiter.close()
    }
    recorder.add({
      class: 'costs 0, -0, -1, 1.5, NaN, ±Infinity, 2^53, 2^53+2, 1e300, "1", null, true, 1n, {}, []',
      cases,
      result:
        'each a rejected FastlimitError ERR_FASTLIMIT_ARGUMENT on memory, sqlite, redis; nothing charged; 2^53-1 denied as cost-exceeds-limit (Infinity)',
    })
  })

  it('MemoryBackend and SQLiteBackend refuse a negative or fractional cost handed to them directly, as RedisBackend does', async () => {
    const fw = parseRule({ algorithm: 'fixed-window', limit: 3, window: '1h' })
    const refunds: Record<string, string> = {}
    for (const { name, backend } of backends) {
      const key = 'direct-negative'
      for (let i = 0; i < 3; i++) await backend.checkAndIncrement(key, fw, 1)
      let outcome: string
      try {
        const r: BackendResult = await backend.checkAndIncrement(key, fw, -2)
        outcome = `allowed ${r.allowed}, remaining ${r.remaining}`
      } catch (err) {
        outcome = `rejected ${(err as FastlimitError).code}`
      }
      refunds[name] = outcome
    }
    recorder.details.negativeCost = refunds
    expect(refunds).toEqual({
      memory: 'rejected ERR_FASTLIMIT_ARGUMENT',
      sqlite: 'rejected ERR_FASTLIMIT_ARGUMENT',
      redis: 'rejected ERR_FASTLIMIT_ARGUMENT',
    })
  })
})

describe('misbehaving backends', () => {
  function custom(
    methods: Partial<Record<'checkAndIncrement' | 'checkAndIncrementAll' | 'peek', unknown>>,
  ): Backend {
    return {
      checkAndIncrement: async () => ({ allowed: true, limit: 1, remaining: 0, resetMs: 0, retryAfterMs: 0 }),
      checkAndIncrementAll: async () => [],
      peek: async () => ({ allowed: true, limit: 1, remaining: 0, resetMs: 0, retryAfterMs: 0 }),
      reset: async () => undefined,
      clear: async () => undefined,
      close: async () => undefined,
      ...methods,
    } as Backend
  }

  it('a backend that never answers, or rejects with anything (not an Error, undefined), gets the policy within timeoutMs', async () => {
    const unhandled = watchUnhandled()
    const cases: Array<[string, Backend]> = [
      ['never settles', custom({ checkAndIncrement: () => new Promise(() => undefined) })],
      ['rejects with undefined', custom({ checkAndIncrement: () => Promise.reject(undefined) })],
      ['rejects with a string', custom({ checkAndIncrement: () => Promise.reject('boom') })],
      [
        'rejects with a FastlimitError',
        custom({ checkAndIncrement: () => Promise.reject(new FastlimitError('ERR_FASTLIMIT_BACKEND', 'x')) }),
      ],
    ]
    for (const [what, backend] of cases) {
      for (const policy of ['fail-open', 'fail-closed'] as const) {
        const limiter = new FastLimit({ backend, onBackendError: policy, timeoutMs: 50 })
        const d = await limiter.check('x', '1/s')
        expect(d.reason, `${what} / ${policy}`).toBe(policy)
        expect(d.error).toBeInstanceOf(FastlimitError)
        await limiter.close()
      }
    }
    unhandled.stop()
    expect(unhandled.seen).toEqual([])
    recorder.add({
      class: 'misbehaving backends (never settles, rejects with non-errors)',
      cases: cases.length * 2,
      result: 'the policy decided every call; no unhandled rejection',
    })
  })

  it('a backend whose checkAndIncrement throws synchronously gets the error policy', async () => {
    // A plain (non-async) implementation that throws, e.g. a client that throws when its connection is closed.
    const backend = custom({
      checkAndIncrement: () => {
        throw new Error('client is closed')
      },
    })
    const limiter = new FastLimit({ backend, onBackendError: 'fail-open' })
    let thrown: unknown
    let decision: unknown
    try {
      decision = await limiter.check('x', '1/s')
    } catch (err) {
      thrown = err
    }
    expect(thrown).toBeUndefined()
    expect(decision).toMatchObject({ allowed: true, reason: 'fail-open' })
  })

  it('a backend that resolves a malformed result gets the error policy', async () => {
    const backend = custom({ checkAndIncrement: async () => undefined })
    const limiter = new FastLimit({ backend, onBackendError: 'fail-closed' })
    await expect(limiter.check('x', '1/s')).resolves.toMatchObject({ allowed: false, reason: 'fail-closed' })
  })
})
