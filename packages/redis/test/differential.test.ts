// Differential test: for every algorithm, random sequences of (time, cost) go through the Lua script
// (client time source) and through the TypeScript step from core; every result must be identical field by
// field, and so must the stored state, down to its text. Covers peek (cost 0), costs above the capacity,
// checkAndIncrementAll with mixed algorithms, adjustments (refunds and extra charges of one bucket or two,
// with the charge of an earlier admission, a made-up charge, or none: core's adjustAll), bursts, fractional emission intervals (7 per 1000 ms),
// clocks running backwards (within and beyond the clock skew tolerance: 0 as with the server's TIME,
// 2 s, and the default 5 minutes of timeSource 'client'), long gaps and large timestamps.
import {
  ALGORITHMS,
  type Algorithm,
  adjustAll,
  adjustStep,
  type BackendResult,
  type BucketConfig,
  bucketId,
  type Charge,
  encodeState,
  MAX_SCALED,
  MAX_WINDOW_MS,
  parseRule,
  SLIDING_LOG_SLOTS,
  type State,
  step,
  stepAll,
} from '@fastlimit/core'
import fc from 'fast-check'
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RedisBackend } from '../src'
import { closeClient, rawClient, urlOf } from './helpers'

const PREFIX = 'differential:'
const METERS = new Set<Algorithm>(['token-bucket', 'leaky-bucket', 'gcra'])

function bucketArb(algorithm: Algorithm): fc.Arbitrary<BucketConfig> {
  const largeLimit = 1_000_000
  return fc
    .tuple(
      fc.oneof(
        fc.record({ limit: fc.integer({ min: 1, max: 25 }), windowMs: fc.integer({ min: 1, max: 50 }) }),
        fc.record({ limit: fc.integer({ min: 1, max: 25 }), windowMs: fc.integer({ min: 51, max: 5000 }) }),
        // Fractional emission intervals: 1000/7, 60000/7, 999/13 ms per unit.
        fc.record({ limit: fc.constantFrom(3, 7, 13), windowMs: fc.constantFrom(1000, 999, 60_000) }),
        fc.record({
          limit: fc.integer({ min: 1, max: largeLimit }),
          windowMs: fc.constantFrom(1000, 60_000, 3_600_000, MAX_WINDOW_MS),
        }),
      ),
      fc.option(fc.integer({ min: 1, max: 60 }), { nil: undefined, freq: 2 }),
    )
    .map(([{ limit, windowMs }, burst]) => {
      // Valid rules only: max(limit, burst) * windowMs <= 2^52 (parseRule checks it again).
      const most = Math.floor(MAX_SCALED / windowMs)
      return parseRule({
        algorithm,
        limit: Math.min(limit, most),
        windowMs,
        ...(METERS.has(algorithm) && burst !== undefined ? { burst: Math.min(burst, most) } : {}),
      })
    })
}

type Op = {
  dt: number
  kind: 'check' | 'peek' | 'all' | 'adjust' | 'adjust-all'
  cost: number
  /**
   * For the adjustments: the charges given (of the last admissions, of an earlier one picked by `pick`,
   * made up, or none), and delta's sign.
   */
  charge?: 'last' | 'earlier' | 'made-up' | 'none'
  pick?: number
  sign?: -1 | 0 | 1
  /** A made-up charge: resetMs and atMs offsets from now, and whether atMs is given. */
  madeUp?: { reset: number; at: number; withAt: boolean }
}

/** Time steps relative to the window: bursts (0), fractions, whole windows, long gaps, and backwards. */
function dtArb(windowMs: number): fc.Arbitrary<number> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.constant(0) },
    { weight: 4, arbitrary: fc.integer({ min: 0, max: Math.max(1, Math.floor(windowMs / 4)) }) },
    { weight: 3, arbitrary: fc.integer({ min: 0, max: 2 * windowMs }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: Math.min(60 * windowMs, 40 * 86_400_000) }) },
    { weight: 1, arbitrary: fc.integer({ min: -Math.min(windowMs, 5000), max: -1 }) },
    { weight: 1, arbitrary: fc.integer({ min: -400_000, max: -1 }) },
  )
}

function opsArb(bucket: BucketConfig): fc.Arbitrary<Op[]> {
  const capacity = bucket.burst ?? bucket.limit
  const cost = fc.oneof(
    { weight: 6, arbitrary: fc.constant(1) },
    { weight: 3, arbitrary: fc.integer({ min: 1, max: capacity + 2 }) },
    { weight: 1, arbitrary: fc.constantFrom(capacity, capacity + 1) },
  )
  // Adjustments come mostly soon after a check, while the bucket still holds its charge.
  const soon = fc.oneof(
    { weight: 4, arbitrary: fc.constant(0) },
    { weight: 3, arbitrary: fc.integer({ min: 0, max: Math.max(1, Math.floor(bucket.windowMs / 4)) }) },
    { weight: 2, arbitrary: dtArb(bucket.windowMs) },
  )
  const op = fc.oneof(
    {
      weight: 5,
      arbitrary: fc.record({
        dt: dtArb(bucket.windowMs),
        kind: fc.constantFrom<Op['kind']>('check', 'check', 'check', 'peek', 'all'),
        cost,
        ...adjustArbs(bucket.windowMs),
      }),
    },
    {
      weight: 4,
      arbitrary: fc.record({
        dt: soon,
        kind: fc.constantFrom<Op['kind']>('adjust', 'adjust', 'adjust-all'),
        cost,
        ...adjustArbs(bucket.windowMs),
      }),
    },
  )
  return fc.array(op, { minLength: 1, maxLength: 80 })
}

/** The fields of an adjustment: mostly refunds of the last admission's charge. */
function adjustArbs(windowMs: number) {
  const offset = fc.oneof(
    fc.integer({ min: -2 * windowMs, max: 2 * windowMs }),
    fc.integer({ min: -3, max: 3 }),
  )
  return {
    charge: fc.constantFrom<NonNullable<Op['charge']>>('last', 'last', 'last', 'earlier', 'made-up', 'none'),
    pick: fc.nat(),
    sign: fc.constantFrom<NonNullable<Op['sign']>>(-1, -1, -1, 1, 0),
    madeUp: fc.record({ reset: offset, at: offset, withAt: fc.boolean() }),
  }
}

/**
 * The charges of an adjustment op: from the last or an earlier admission of each bucket (else made up),
 * or none. `admitted` holds each bucket's admissions, oldest first.
 */
function chargesOf(
  op: Op,
  ids: readonly string[],
  admitted: ReadonlyMap<string, readonly Charge[]>,
  now: number,
): Charge[] | undefined {
  if (op.charge === 'none') return undefined
  return ids.map((id) => {
    const all = admitted.get(id) ?? []
    const known =
      op.charge === 'last'
        ? all[all.length - 1]
        : op.charge === 'earlier' && all.length > 0
          ? all[(op.pick as number) % all.length]
          : undefined
    if (known !== undefined) return known
    const m = op.madeUp as NonNullable<Op['madeUp']>
    return { cost: op.cost, resetMs: now + m.reset, ...(m.withAt ? { atMs: now + m.at } : {}) }
  })
}

/** A check's result as RedisBackend returns it: core's, admitting ones with the time the script stepped with. */
const at = (r: BackendResult, now: number): BackendResult => (r.allowed ? { ...r, atMs: now } : r)

const START_TIMES = [
  1_700_000_000_123, // now-ish
  1_000, // near the epoch
  2 ** 50 + 12_345, // ~ year 37,000
  8_000_000_000_000_007, // near the largest Date
]

/** The clock skew tolerances (maxClockSkewMs) the script is run with, each on a backend of its own. */
const SKEWS = [0, 2000, 300_000]

interface Scenario {
  bucket: BucketConfig
  skew: number
  other: BucketConfig
  ops: Op[]
  start: number
}

const scenario = (algorithm: Algorithm): fc.Arbitrary<Scenario> =>
  bucketArb(algorithm).chain((bucket) =>
    fc.record({
      bucket: fc.constant(bucket),
      skew: fc.constantFrom(...SKEWS),
      other: fc.constantFrom(...ALGORITHMS).chain(bucketArb),
      ops: opsArb(bucket),
      start: fc.constantFrom(...START_TIMES).chain((t) => fc.integer({ min: t, max: t + 100_000 })),
    }),
  )

/** The charge an admitting result stands for, as a reservation keeps it. */
const charged = (cost: number, r: BackendResult, now: number): Charge => ({
  cost,
  resetMs: r.resetMs,
  atMs: now,
})

let raw: Redis

beforeAll(() => {
  raw = rawClient('standalone') as Redis
})

afterAll(async () => {
  await closeClient(raw)
})

/**
 * Sliding-log sequences that overflow its SLIDING_LOG_SLOTS entries: limits above 64, many admissions
 * a few milliseconds apart within one window, so that entries merge on most calls.
 */
const overflowScenario = fc
  .record({
    limit: fc.oneof(
      fc.integer({ min: SLIDING_LOG_SLOTS + 1, max: 1000 }),
      fc.integer({ min: 1001, max: 1_000_000 }),
    ),
    windowMs: fc.oneof(
      fc.integer({ min: 100, max: 5000 }),
      fc.constantFrom(60_000, 3_600_000, MAX_WINDOW_MS),
    ),
  })
  .chain(({ limit, windowMs }) => {
    const bucket = parseRule({
      algorithm: 'sliding-log',
      limit: Math.min(limit, Math.floor(MAX_SCALED / windowMs)),
      windowMs,
    })
    const op = fc.record({
      dt: fc.oneof(
        { weight: 2, arbitrary: fc.constant(0) },
        { weight: 24, arbitrary: fc.integer({ min: 1, max: Math.max(1, Math.floor(windowMs / 300)) }) },
        { weight: 1, arbitrary: fc.integer({ min: 0, max: windowMs }) },
        { weight: 1, arbitrary: fc.integer({ min: -Math.min(windowMs, 5000), max: -1 }) },
      ),
      kind: fc.constantFrom<Op['kind']>('check', 'check', 'check', 'check', 'check', 'peek', 'all', 'adjust'),
      cost: fc.oneof(
        { weight: 9, arbitrary: fc.constant(1) },
        { weight: 1, arbitrary: fc.integer({ min: 1, max: Math.min(bucket.limit, 50) }) },
      ),
      ...adjustArbs(windowMs),
    })
    return fc.record({
      bucket: fc.constant(bucket),
      skew: fc.constantFrom(...SKEWS),
      other: fc.constantFrom(...ALGORITHMS).chain(bucketArb),
      ops: fc.array(op, { minLength: 150, maxLength: 300 }),
      start: fc.constantFrom(...START_TIMES).chain((t) => fc.integer({ min: t, max: t + 100_000 })),
    })
  })

describe('the Lua scripts and the TypeScript steps agree exactly', () => {
  const cases: Array<[string, fc.Arbitrary<Scenario>, number]> = [
    ...ALGORITHMS.map((a): [string, fc.Arbitrary<Scenario>, number] => [a, scenario(a), 150]),
    ['sliding-log beyond its 64 entries', overflowScenario, 60],
  ]
  for (const [name, arbitrary, numRuns] of cases) {
    it.concurrent(`${name}`, async () => {
      let now = 0
      // A prefix per test: clear() at the end must not touch the tests running beside it.
      const prefix = `${PREFIX}${name.replace(/ /g, '-')}:`
      // No expiry during the test: the TypeScript side keeps its states forever too.
      const backends = new Map(
        SKEWS.map((skew) => [
          skew,
          RedisBackend.fromUrl(urlOf('standalone'), {
            keyPrefix: prefix,
            timeSource: 'client',
            clock: () => now,
            maxClockSkewMs: skew,
            expiryMarginMs: 86_400_000,
          }),
        ]),
      )
      let run = 0
      let full = 0
      // Adjustments that changed a state: refunds of a charge, and the others.
      const changed = { refund: 0, other: 0 }
      try {
        await fc.assert(
          fc.asyncProperty(arbitrary, async ({ bucket, skew, other, ops, start }) => {
            const backend = backends.get(skew) as RedisBackend
            const key = String(run++)
            await backend.reset(key)
            const states = new Map<string, State>()
            const ids = [bucketId(bucket), bucketId(other)]
            now = start
            // The charges of each bucket's admissions, for the adjustments to settle.
            const admitted = new Map<string, Charge[]>()
            const admit = (id: string, charge: Charge) => {
              const list = admitted.get(id) ?? []
              list.push(charge)
              admitted.set(id, list)
            }
            for (const [i, op] of ops.entries()) {
              now = Math.max(0, now + op.dt)
              const where = `op ${i} (${JSON.stringify(op)}) at ${now} of ${JSON.stringify(bucket)}`
              if (op.kind === 'peek') {
                const expected = step(states.get(ids[0] as string), now, bucket, 0, skew).result
                expect(await backend.peek(key, bucket), where).toEqual(expected)
              } else if (op.kind === 'check') {
                const out = step(states.get(ids[0] as string), now, bucket, op.cost, skew)
                if (out.result.allowed || out.rebased) states.set(ids[0] as string, out.state)
                if (out.result.allowed) admit(ids[0] as string, charged(op.cost, out.result, now))
                expect(await backend.checkAndIncrement(key, bucket, op.cost), where).toEqual(
                  at(out.result, now),
                )
              } else if (op.kind === 'all') {
                const buckets = [bucket, other]
                const all = stepAll(
                  ids.map((id) => states.get(id)),
                  now,
                  buckets,
                  op.cost,
                  skew,
                )
                for (const [j, o] of all.outputs.entries()) {
                  if (all.allowed || o.rebased) states.set(ids[j] as string, o.state)
                  if (all.allowed) admit(ids[j] as string, charged(op.cost, o.result, now))
                }
                expect(await backend.checkAndIncrementAll(key, buckets, op.cost), where).toEqual(
                  all.allowed ? all.results.map((r) => at(r, now)) : all.results,
                )
              } else {
                const n = op.kind === 'adjust' ? 1 : 2
                const buckets = [bucket, other].slice(0, n)
                const adjusted = ids.slice(0, n)
                const delta = (op.sign as number) * op.cost
                const charges = chargesOf(op, adjusted, admitted, now)
                const outputs = adjustAll(
                  adjusted.map((id) => states.get(id)),
                  now,
                  buckets,
                  delta,
                  charges,
                  skew,
                )
                for (const [j, o] of outputs.entries()) {
                  if (o.changed || o.rebased) states.set(adjusted[j] as string, o.state)
                  if (o.changed) changed[delta < 0 && charges !== undefined ? 'refund' : 'other']++
                }
                expect(await backend.adjust(key, buckets, delta, charges), where).toEqual(
                  outputs.map((o) => o.result),
                )
              }
              // The stored state, as text: the same integers, printed in full (never 1.7e+12).
              const stored = await raw.hmget(`${prefix}:${key}`, ...ids)
              expect(stored, `${where}: stored state`).toEqual(
                ids.map((id) => (states.has(id) ? encodeState(states.get(id) as State) : null)),
              )
              if (states.get(ids[0] as string)?.length === 2 * SLIDING_LOG_SLOTS) full++
            }
          }),
          { numRuns },
        )
        // The adjustments do change states, refunds of a charge included.
        expect(changed.refund).toBeGreaterThan(numRuns / 4)
        expect(changed.other).toBeGreaterThan(numRuns / 4)
        // The overflowing sequences do reach the bound (and merge from there on).
        if (name.startsWith('sliding-log beyond')) expect(full).toBeGreaterThan(numRuns * 5)
      } finally {
        for (const backend of backends.values()) {
          await backend.clear()
          await backend.close()
        }
      }
    })
  }

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
      expect(await backend.checkAndIncrement('k', bucket, 7)).toEqual(at(out.result, T + 5000))
      expect(await raw.hget(`${PREFIX}old::k`, bucketId(bucket))).toBe(encodeState(out.state))
    } finally {
      await backend.clear()
      await backend.close()
    }
  })

  it('refunds a sliding-log charge only from its own entry up to a limit of 64, from its slot above', async () => {
    const T = 1_700_000_000_000 // a multiple of the slot (16 ms of a 1000 ms window)
    let now = T
    const backend = RedisBackend.fromUrl(urlOf('standalone'), {
      keyPrefix: `${PREFIX}slot:`,
      timeSource: 'client',
      clock: () => now,
      maxClockSkewMs: 0,
    })
    try {
      for (const limit of [5, 100]) {
        const bucket = parseRule({ algorithm: 'sliding-log', limit, windowMs: 1000 })
        const key = `k${limit}`
        let state: State | undefined
        // Two charges 1 ms apart, in one slot; the first is cancelled, then refunded once more: only above
        // 64, where entries merge, may the later entry of its slot hold it.
        now = T
        const first = await backend.checkAndIncrement(key, bucket, 1)
        state = step(state, now, bucket, 1).state
        now = T + 1
        await backend.checkAndIncrement(key, bucket, 1)
        state = step(state, now, bucket, 1).state
        const charge: Charge = { cost: 1, resetMs: first.resetMs, atMs: first.atMs }
        for (let i = 0; i < 2; i++) {
          const out = adjustStep(state, now, bucket, -1, charge)
          if (out.changed || out.rebased) state = out.state
          expect(await backend.adjust(key, [bucket], -1, [charge]), `limit ${limit}, refund ${i}`).toEqual([
            out.result,
          ])
          expect(await raw.hget(`${PREFIX}slot::${key}`, bucketId(bucket))).toBe(encodeState(state))
        }
        expect(state).toEqual(limit === 5 ? [T + 1, 1] : [])
      }
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
