// Differential test: for every algorithm, random sequences of (time, cost) go through the Lua script
// (client time source) and through the TypeScript step from core; every result must be identical field by
// field, and so must the stored state, down to its text. Covers peek (cost 0), costs above the capacity,
// checkAndIncrementAll with mixed algorithms, bursts, fractional emission intervals (7 per 1000 ms),
// clocks running backwards (within and beyond the clock skew tolerance: 0 as with the server's TIME,
// 2 s, and the default 5 minutes of timeSource 'client'), long gaps and large timestamps.
import {
  ALGORITHMS,
  type Algorithm,
  type BucketConfig,
  bucketId,
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
import type { Cluster, Redis } from 'ioredis'
import { expect, it } from 'vitest'
import type { RedisBackend, RedisBackendOptions, RedisClient } from '../src'

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

type Op = { dt: number; kind: 'check' | 'peek' | 'all'; cost: number }

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
  const op = fc.record({
    dt: dtArb(bucket.windowMs),
    kind: fc.constantFrom<Op['kind']>('check', 'check', 'check', 'peek', 'all'),
    cost,
  })
  return fc.array(op, { minLength: 1, maxLength: 80 })
}

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
      kind: fc.constantFrom<Op['kind']>('check', 'check', 'check', 'check', 'check', 'peek', 'all'),
      cost: fc.oneof(
        { weight: 9, arbitrary: fc.constant(1) },
        { weight: 1, arbitrary: fc.integer({ min: 1, max: Math.min(bucket.limit, 50) }) },
      ),
    })
    return fc.record({
      bucket: fc.constant(bucket),
      skew: fc.constantFrom(...SKEWS),
      other: fc.constantFrom(...ALGORITHMS).chain(bucketArb),
      ops: fc.array(op, { minLength: 150, maxLength: 300 }),
      start: fc.constantFrom(...START_TIMES).chain((t) => fc.integer({ min: t, max: t + 100_000 })),
    })
  })

/** Where the differential test runs: a backend of the options given, and a client to read the states. */
export interface DifferentialOptions {
  /** Put before each test's name, e.g. `'node-redis (cluster): '`. */
  readonly label: string
  /** The keyPrefix of each test starts with it. */
  readonly prefix: string
  /** A backend with these options (client time, a long expiry margin); the test closes it. */
  backend(options: Omit<RedisBackendOptions, 'url' | 'client'>): RedisBackend<RedisClient>
  /** An ioredis client of the same server or Cluster, to read the stored states. */
  raw(): Redis | Cluster
  /** The share of the default runs (1: 150 per algorithm, 60 of the sliding-log overflow). @default 1 */
  readonly runs?: number
}

/**
 * Registers one concurrent test per algorithm: random sequences through the Lua script and through
 * core's step must agree on every result and on the stored state's text.
 */
export function differentialCases(options: DifferentialOptions): void {
  const cases: Array<[string, fc.Arbitrary<Scenario>, number]> = [
    ...ALGORITHMS.map((a): [string, fc.Arbitrary<Scenario>, number] => [a, scenario(a), 150]),
    ['sliding-log beyond its 64 entries', overflowScenario, 60],
  ]
  const scale = options.runs ?? 1
  for (const [name, arbitrary, numRuns] of cases) {
    it.concurrent(`${options.label}${name}`, async () => {
      let now = 0
      // A prefix per test: clear() at the end must not touch the tests running beside it.
      const prefix = `${options.prefix}${name.replace(/ /g, '-')}:`
      // No expiry during the test: the TypeScript side keeps its states forever too.
      const backends = new Map(
        SKEWS.map((skew) => [
          skew,
          options.backend({
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
      try {
        await fc.assert(
          fc.asyncProperty(arbitrary, async ({ bucket, skew, other, ops, start }) => {
            const backend = backends.get(skew) as RedisBackend<RedisClient>
            const key = String(run++)
            await backend.reset(key)
            const states = new Map<string, State>()
            const ids = [bucketId(bucket), bucketId(other)]
            now = start
            for (const [i, op] of ops.entries()) {
              now = Math.max(0, now + op.dt)
              const where = `op ${i} (${JSON.stringify(op)}) at ${now} of ${JSON.stringify(bucket)}`
              if (op.kind === 'peek') {
                const expected = step(states.get(ids[0] as string), now, bucket, 0, skew).result
                expect(await backend.peek(key, bucket), where).toEqual(expected)
              } else if (op.kind === 'check') {
                const out = step(states.get(ids[0] as string), now, bucket, op.cost, skew)
                if (out.result.allowed || out.rebased) states.set(ids[0] as string, out.state)
                expect(await backend.checkAndIncrement(key, bucket, op.cost), where).toEqual(out.result)
              } else {
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
                }
                expect(await backend.checkAndIncrementAll(key, buckets, op.cost), where).toEqual(all.results)
              }
              // The stored state, as text: the same integers, printed in full (never 1.7e+12).
              const stored = await options.raw().hmget(`${prefix}:${key}`, ...ids)
              expect(stored, `${where}: stored state`).toEqual(
                ids.map((id) => (states.has(id) ? encodeState(states.get(id) as State) : null)),
              )
              if (states.get(ids[0] as string)?.length === 2 * SLIDING_LOG_SLOTS) full++
            }
          }),
          { numRuns: Math.max(1, Math.round(numRuns * scale)) },
        )
        // The overflowing sequences do reach the bound (and merge from there on).
        if (name.startsWith('sliding-log beyond'))
          expect(full).toBeGreaterThan(Math.round(numRuns * scale) * 5)
      } finally {
        for (const backend of backends.values()) {
          await backend.clear()
          await backend.close()
        }
      }
    })
  }
}
