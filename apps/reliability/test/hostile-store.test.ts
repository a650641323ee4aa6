// Hostile traffic against the stores themselves: a sliding-log filled to a limit of 100,000 (every admission
// its own millisecond, the attacker's worst case) on memory, SQLite and Redis, and what it costs everyone else;
// an attacker flooding MemoryBackend with new identities to evict the clients it limits; and two rules that
// differ only by name, which must not share a bucket on any backend.
//
// Bounds (documented in the README of apps/reliability): once a sliding-log is full, a decision on it costs at
// most 0.2 ms of Redis time (INFO commandstats, the order of gcra's), 1 ms of wall time on SQLite and 0.1 ms in
// memory, and its stored state holds at most 2 × SLIDING_LOG_SLOTS integers whatever the limit. Before the log
// was bounded, a full log of 100,000 cost 86 ms of Redis time per denied call (147 ms per admitted one).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {
  type Backend,
  type BackendResult,
  type BucketConfig,
  bucketId,
  FastLimit,
  MemoryBackend,
  parseRule,
} from '@fastlimit/core'
import { RedisBackend } from '@fastlimit/redis'
import { SQLiteBackend } from '@fastlimit/sqlite'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type StandaloneSetup, startStandalone, stopAll } from '../../../packages/redis/test/servers'
import { Recorder, round, sleep } from './helpers'

const recorder = new Recorder('hostile-store', 'hostile')
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-reliability-store-'))

/** The most integers a sliding-log state may hold once bounded: 2 per slot, 64 slots. */
const MAX_STATE_INTEGERS = 2 * 64
/** Per-decision bounds on a full log (generous: a loaded 2-core machine stays far below them once bounded). */
const REDIS_USEC_PER_CALL = 200
const SQLITE_MS_PER_DECISION = 1
const MEMORY_MS_PER_CALL = 0.1
/** Wall time one backend may spend filling its logs: plenty once bounded; an unbounded log runs out of it. */
const FILL_BUDGET_MS = 90_000
/**
 * The limits attacked, and the cost of each admission. Once a log holds 64 entries its state and its cost
 * per call no longer grow, so the limit of 100,000 is filled 10 at a time (10,000 calls, one per ms); one
 * at a time, the same state takes 100,000 calls, about a minute on a loaded 2-core machine.
 */
const LEVELS = [
  { limit: 1000, cost: 1 },
  { limit: 10_000, cost: 1 },
  { limit: 100_000, cost: 10 },
] as const

let redis: StandaloneSetup
let raw: Redis

beforeAll(async () => {
  redis = await startStandalone()
  raw = new Redis({ port: redis.port, host: '127.0.0.1' })
})

afterAll(async () => {
  await raw.quit()
  await stopAll()
  fs.rmSync(dir, { recursive: true, force: true })
  recorder.save()
})

/** Evalsha calls and Redis microseconds since the last `CONFIG RESETSTAT`. */
async function scriptStats(): Promise<{ calls: number; usec: number }> {
  const stats = await raw.info('commandstats')
  let calls = 0
  let usec = 0
  for (const m of stats.matchAll(/^cmdstat_(?:eval|evalsha):calls=(\d+),usec=(\d+),/gm)) {
    calls += Number(m[1])
    usec += Number(m[2])
  }
  return { calls, usec }
}

/** A clock that the fill advances by hand: one millisecond per admission. */
function handClock(): { now: () => number; set(t: number): void } {
  let t = Date.now() - 3_600_000
  return { now: () => t, set: (v) => (t = v) }
}

interface Fill {
  admitted: number
  /** Wall ms the fill took, or undefined when it ran out of budget. */
  ms: number | undefined
  /** The clock at the end of the fill; every entry is within the window then. */
  end: number
}

/**
 * Charges `count` admissions of `cost`, each in its own millisecond, through the backend's public
 * `checkAndIncrement`, up to `inFlight` at a time; stops at the first denial (the log is full), or early
 * when the wall-clock budget runs out.
 */
async function fill(
  backend: Backend,
  key: string,
  bucket: BucketConfig,
  count: number,
  cost: number,
  clock: { now: () => number; set(t: number): void },
  deadline: number,
  inFlight: number,
): Promise<Fill> {
  const started = performance.now()
  let admitted = 0
  let t = clock.now()
  while (admitted < count) {
    if (performance.now() > deadline) return { admitted, ms: undefined, end: t }
    const n = Math.min(inFlight, count - admitted)
    const calls: Array<Promise<BackendResult>> = []
    for (let i = 0; i < n; i++) {
      clock.set(++t)
      calls.push(backend.checkAndIncrement(key, bucket, cost))
    }
    let denied = false
    for (const r of await Promise.all(calls)) {
      if (r.allowed) admitted++
      else denied = true
    }
    if (denied) break
  }
  return { admitted, ms: performance.now() - started, end: t }
}

interface Cost {
  backend: string
  limit: number
  cost: number
  filled: number
  fillMs: number | null
  /** Per call on the full log: Redis µs of server time (commandstats), SQLite and memory wall ms. */
  deniedPerCall: number
  admittedPerCall: number | null
  stateIntegers: number | null
}

const costs: Cost[] = []

/** A backend under attack, and how to read its cost per call. */
interface Target {
  readonly name: 'redis' | 'sqlite' | 'memory'
  readonly backend: Backend
  readonly clock: { now: () => number; set(t: number): void }
  /** Calls the fill keeps in flight. */
  readonly inFlight: number
  /** The bound per call, in the unit of `perCall`. */
  readonly bound: number
  /** Runs `calls` calls; returns their cost per call: Redis µs of server time, else wall ms. */
  perCall(run: () => Promise<void>, calls: number): Promise<number>
  /** How many integers the stored state of a key holds (null where it cannot be read). */
  stateIntegers(key: string, bucket: BucketConfig): Promise<number | null>
}

/** The cheapest of 5 batches of 40 calls: a GC pause or a neighbour's burst inflates one batch, not all. */
async function cheapest(target: Target, call: () => Promise<void>): Promise<number> {
  let best = Number.POSITIVE_INFINITY
  for (let b = 0; b < 5; b++) {
    const cost = await target.perCall(async () => {
      for (let i = 0; i < 40; i++) await call()
    }, 40)
    best = Math.min(best, cost)
  }
  return best
}

/**
 * Fills a sliding-log of each limit (1,000, 10,000, 100,000) one admission per millisecond, measures
 * the last 200 admissions and 200 denied calls on the full log, and checks them against the bounds.
 */
async function attackLogs(target: Target): Promise<void> {
  const deadline = performance.now() + FILL_BUDGET_MS
  for (const { limit, cost } of LEVELS) {
    const bucket = parseRule({ limit, window: '1h', algorithm: 'sliding-log' })
    const key = `attacker-${limit}`
    const head = await fill(
      target.backend,
      key,
      bucket,
      limit / cost - 200,
      cost,
      target.clock,
      deadline,
      target.inFlight,
    )
    let admittedPerCall: number | null = null
    let filled = head.admitted * cost
    if (head.ms !== undefined) {
      admittedPerCall = await cheapest(target, async () => {
        target.clock.set(target.clock.now() + 1)
        if ((await target.backend.checkAndIncrement(key, bucket, cost)).allowed) filled += cost
      })
    }
    let denied = 0
    const deniedPerCall = await cheapest(target, async () => {
      if (!(await target.backend.checkAndIncrement(key, bucket, cost)).allowed) denied++
    })
    const stateIntegers = await target.stateIntegers(key, bucket)
    costs.push({
      backend: target.name,
      limit,
      cost,
      filled,
      fillMs: head.ms === undefined ? null : Math.round(head.ms),
      deniedPerCall: round(deniedPerCall, 4),
      admittedPerCall: admittedPerCall === null ? null : round(admittedPerCall, 4),
      stateIntegers,
    })
    expect(filled, `filled to ${limit} within ${FILL_BUDGET_MS} ms`).toBe(limit)
    expect(denied).toBe(200)
    expect(deniedPerCall).toBeLessThan(target.bound)
    expect(admittedPerCall).toBeLessThan(target.bound)
    if (stateIntegers !== null) expect(stateIntegers).toBeLessThanOrEqual(MAX_STATE_INTEGERS)
  }
}

const wallMs = async (run: () => Promise<void>, calls: number) => {
  const t = performance.now()
  await run()
  return (performance.now() - t) / calls
}

describe('a sliding-log filled to a limit of 100,000, one admission per millisecond', () => {
  let attacker: RedisBackend

  it('Redis: the script costs at most 0.2 ms of server time per call on a full log, and its state stays bounded', async () => {
    const clock = handClock()
    attacker = RedisBackend.fromUrl(redis.url, { keyPrefix: 'log:', timeSource: 'client', clock: clock.now })
    const serverUsec = async (run: () => Promise<void>) => {
      await raw.config('RESETSTAT')
      await run()
      const s = await scriptStats()
      return s.usec / s.calls
    }
    // For comparison, gcra on the same server: 200 calls on one key.
    const gcra = parseRule('1000000/h')
    recorder.details.redisGcraUsecPerCall = round(
      await serverUsec(async () => {
        for (let i = 0; i < 200; i++) await attacker.checkAndIncrement('gcra', gcra, 1)
      }),
      1,
    )
    await attackLogs({
      name: 'redis',
      backend: attacker,
      clock,
      inFlight: 128,
      bound: REDIS_USEC_PER_CALL,
      perCall: serverUsec,
      stateIntegers: async (key, bucket) => {
        const text = await raw.hget(`log::${key}`, bucketId(bucket))
        return text === null ? null : text.split(',').length
      },
    })
  })

  it('Redis: an ordinary user on the same server is never failed open while an attacker hammers the full log', async () => {
    const bucket = parseRule({ limit: 100_000, window: '1h', algorithm: 'sliding-log' })
    expect((await attacker.peek('attacker-100000', bucket)).remaining).toBe(0)
    // The user: its own limiter and connection, the server's clock, a 200 ms timeout, fail-open.
    const user = new FastLimit({
      backend: RedisBackend.fromUrl(redis.url, { keyPrefix: 'user:' }),
      timeoutMs: 200,
      onBackendError: 'fail-open',
    })
    let stop = false
    let attacks = 0
    const hammer = async () => {
      while (!stop) {
        await attacker.checkAndIncrement('attacker-100000', bucket, 1)
        attacks++
      }
    }
    try {
      const hammers = Array.from({ length: 8 }, hammer)
      const reasons: Record<string, number> = {}
      const until = performance.now() + 3000
      let decisions = 0
      while (performance.now() < until) {
        const d = await user.check('ordinary-user', '1000/min')
        reasons[d.reason] = (reasons[d.reason] ?? 0) + 1
        decisions++
        await sleep(10)
      }
      stop = true
      await Promise.all(hammers)
      recorder.add({
        class:
          'an ordinary user (gcra 1000/min, timeoutMs 200, fail-open) on the Redis where 8 loops hammer a full sliding-log of 100,000',
        cases: decisions,
        result: `${attacks} attacker calls in 3 s; user decisions: ${JSON.stringify(reasons)}`,
      })
      expect(reasons).toEqual({ ok: decisions })
    } finally {
      stop = true
      await user.close()
    }
  })

  it('SQLite: a decision on a full log takes at most 1 ms, and its state stays bounded', async () => {
    const clock = handClock()
    const file = path.join(dir, 'log.db')
    const backend = new SQLiteBackend(file, { clock: clock.now, cleanupIntervalMs: 0 })
    try {
      await attackLogs({
        name: 'sqlite',
        backend,
        clock,
        inFlight: 1,
        bound: SQLITE_MS_PER_DECISION,
        perCall: wallMs,
        stateIntegers: async (key) => {
          const row = backend.database.prepare('SELECT state FROM fastlimit WHERE key = ?').get(key) as
            | { state: string }
            | undefined
          return row === undefined ? null : row.state.split(',').length
        },
      })
    } finally {
      await backend.close()
    }
  })

  it('memory: a call on a full log takes at most 0.1 ms', async () => {
    const clock = handClock()
    const backend = new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 })
    try {
      await attackLogs({
        name: 'memory',
        backend,
        clock,
        inFlight: 1,
        bound: MEMORY_MS_PER_CALL,
        perCall: wallMs,
        stateIntegers: async () => null,
      })
    } finally {
      await backend.close()
    }
  })

  afterAll(async () => {
    await attacker?.clear()
    await attacker?.close()
    recorder.details.slidingLogCost = costs
    for (const c of costs) {
      const unit = c.backend === 'redis' ? 'µs of Redis time' : 'ms'
      recorder.add({
        class: `sliding-log, limit ${c.limit.toLocaleString('en-US')}, filled with one admission of ${c.cost} per ms, on ${c.backend}`,
        cases: c.filled / c.cost + 200,
        result:
          `filled ${c.filled}${c.fillMs === null ? ' (fill ran out of time)' : ` in ${c.fillMs} ms`}; ` +
          `per call on the full log: denied ${c.deniedPerCall} ${unit}, admitted ${c.admittedPerCall ?? '—'} ${unit}` +
          (c.stateIntegers === null ? '' : `; state ${c.stateIntegers} integers`),
      })
    }
  })
})

describe('a flood of new identities against a full MemoryBackend', () => {
  const login = { limit: 5, window: '15m', name: 'login' } as const

  /**
   * A victim IP is limited on the login rule; the store (maxKeys 10,000) also holds `expired` keys of earlier
   * visitors whose state has expired; then the attacker sends `flood` requests from new spoofed addresses.
   * Returns how many of the victim's next 5 attempts are admitted (0 when its limit survived).
   */
  async function evictionAttack(expired: number, flood: number): Promise<number> {
    let now = 1_700_000_000_000
    const backend = new MemoryBackend({ maxKeys: 10_000, cleanupIntervalMs: 0, clock: () => now })
    const limiter = new FastLimit({ backend })
    try {
      for (let i = 0; i < 6; i++) await limiter.check('198.51.100.7', login, { scope: 'login' })
      for (let i = 0; i < expired; i++) await limiter.check(`192.0.2.${i % 250}-${i}`, '10/s')
      now += 60_000
      for (let i = 0; i < flood; i++)
        await limiter.check(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, login, { scope: 'login' })
      let admitted = 0
      for (let i = 0; i < 5; i++)
        if ((await limiter.check('198.51.100.7', login, { scope: 'login' })).allowed) admitted++
      expect(backend.size).toBeLessThanOrEqual(10_000)
      return admitted
    } finally {
      await limiter.close()
      await backend.close()
    }
  }

  it('a limited client is not reset while the store holds expired keys, nor by new identities charged once', async () => {
    // 9,999 expired keys, then 9,999 new identities: before, the least recently used key (the victim) went first.
    const whileExpired = await evictionAttack(9_999, 9_999)
    // No expired key left, 200,000 new identities (20 times maxKeys), each charged once: they displace each other.
    const flood = await evictionAttack(0, 200_000)
    recorder.add({
      class:
        'a victim limited on 5/15m in MemoryBackend({ maxKeys: 10,000 }), then new spoofed identities: 9,999 (with 9,999 expired keys held), or 200,000',
      cases: 9_999 + 200_000 + 10,
      result: `victim's next 5 attempts admitted: ${whileExpired} after 9,999 (with expired keys held), ${flood} after 200,000 (before: 5 and 5)`,
    })
    expect(whileExpired).toBe(0)
    expect(flood).toBe(0)
  })
})

describe('rules that differ only by name', () => {
  it('keep separate buckets on memory, SQLite and Redis: 5 login attempts leave a password-reset limit alone', async () => {
    const login = { limit: 5, window: '15m', name: 'login' } as const
    const passwordReset = { limit: 5, window: '15m', name: 'password-reset' } as const
    const backends: Array<[string, Backend]> = [
      ['memory', new MemoryBackend({ cleanupIntervalMs: 0 })],
      ['sqlite', new SQLiteBackend(path.join(dir, 'names.db'), { cleanupIntervalMs: 0 })],
      ['redis', RedisBackend.fromUrl(redis.url, { keyPrefix: 'names:' })],
    ]
    const admitted: Record<string, number> = {}
    for (const [name, backend] of backends) {
      const limiter = new FastLimit({ backend })
      try {
        for (let i = 0; i < 6; i++) await limiter.check('203.0.113.50', login)
        let n = 0
        for (let i = 0; i < 5; i++) if ((await limiter.check('203.0.113.50', passwordReset)).allowed) n++
        admitted[name] = n
      } finally {
        await limiter.close()
        await backend.close?.()
      }
    }
    recorder.add({
      class:
        'rules { 5/15m, name: login } and { 5/15m, name: password-reset } on one identity, after 6 logins',
      cases: 3 * 11,
      result: `password resets admitted of 5: ${JSON.stringify(admitted)} (before: 0 on each)`,
    })
    expect(admitted).toEqual({ memory: 5, sqlite: 5, redis: 5 })
  })
})
