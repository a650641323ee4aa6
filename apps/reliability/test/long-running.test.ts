// Long-running processes on fake clocks: windows and gaps past 24.8 days (2^31 ms) up to 400 days, and clocks
// that jump backwards by a second to 400 days, for every algorithm on the memory, SQLite and Redis backends.
// retryAfterMs is never negative, finite unless the cost can never pass, never above the rule's longest wait;
// resetMs is sane; and once the clock has recovered, decisions are exact again.
import {
  ALGORITHMS,
  type Algorithm,
  type Backend,
  type BackendResult,
  type BucketConfig,
  FastLimit,
  MAX_WINDOW_MS,
  MemoryBackend,
  parseRule,
  RateLimitHeaders,
  type Rule,
} from '@fastlimit/core'
import { type FakeClock, fakeClock } from '@fastlimit/core/testing'
import { RedisBackend } from '@fastlimit/redis'
import { SQLiteBackend } from '@fastlimit/sqlite'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { type StandaloneSetup, startStandalone, stopAll } from '../../../packages/redis/test/servers'
import { Recorder } from './helpers'

const recorder = new Recorder('long-running', 'clock')
const T = 1_700_000_000_000
const SEC = 1000
const DAY = 86_400_000
const BUCKETS = new Set<Algorithm>(['token-bucket', 'leaky-bucket', 'gcra'])
/** Backward jumps of the clock, as an NTP step or a VM restored from a snapshot would make. */
const BACK = [SEC, 60 * SEC, 3_600_000, DAY, 30 * DAY, 400 * DAY]
/** Gaps between two calls around 2^31 ms (24.8 days, where 32-bit timers overflow) and beyond. */
const GAPS = [2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1, 30 * DAY, 365 * DAY, 400 * DAY]

function shapes(algorithm: Algorithm): Rule[] {
  const list: Rule[] = [
    parseRule({ algorithm, limit: 3, window: 1000 }),
    parseRule({ algorithm, limit: 7, window: 2 ** 31 + 1 }),
    parseRule({ algorithm, limit: 5, window: MAX_WINDOW_MS }),
  ]
  if (BUCKETS.has(algorithm)) list.push(parseRule({ algorithm, limit: 2, window: '1h', burst: 9 }))
  return list
}

function capacity(b: BucketConfig): number {
  return b.burst ?? b.limit
}

/** The longest a cost of `cost` can ever have to wait under `b`: the rule's own bound, not a clock's. */
function retryBound(b: BucketConfig, cost: number): number {
  if (b.algorithm === 'fixed-window' || b.algorithm === 'sliding-log') return b.windowMs
  if (b.algorithm === 'sliding-window') return 2 * b.windowMs
  return Math.ceil((cost * b.windowMs) / b.limit)
}

/** How far past the latest time the key has seen its reset can lie. */
function resetBound(b: BucketConfig): number {
  return BUCKETS.has(b.algorithm) ? Math.ceil((capacity(b) * b.windowMs) / b.limit) : 2 * b.windowMs
}

/** How long after its last admission a full bucket is guaranteed to be whole again. */
function recoverMs(b: BucketConfig): number {
  return resetBound(b)
}

interface Named {
  readonly name: string
  readonly backend: Backend
  readonly clock: FakeClock
}

let redis: StandaloneSetup | undefined
const backends: Named[] = []
const stats = new Map<
  string,
  { checks: number; maxRetryOverBound: number; maxResetAhead: number; infinite: number }
>()

function stat(name: string) {
  let s = stats.get(name)
  if (s === undefined) {
    s = { checks: 0, maxRetryOverBound: 0, maxResetAhead: 0, infinite: 0 }
    stats.set(name, s)
  }
  return s
}

beforeAll(async () => {
  redis = await startStandalone()
  const memClock = fakeClock(T)
  const sqlClock = fakeClock(T)
  const redisClock = fakeClock(T)
  backends.push(
    {
      name: 'memory',
      backend: new MemoryBackend({ clock: memClock.now, cleanupIntervalMs: 0 }),
      clock: memClock,
    },
    {
      name: 'sqlite',
      backend: new SQLiteBackend(':memory:', { clock: sqlClock.now, cleanupIntervalMs: 0 }),
      clock: sqlClock,
    },
    {
      name: 'redis',
      backend: RedisBackend.fromUrl(redis.url, {
        timeSource: 'client',
        clock: redisClock.now,
        // One clock that jumps back (as memory and SQLite see it), not app servers apart by up to 5 min.
        maxClockSkewMs: 0,
        keyPrefix: 'clock:',
        // Keys expire by Redis's real clock, the others by the fake one: a day of real time keeps a slow
        // machine from dropping state in the middle of a walk.
        expiryMarginMs: 86_400_000,
      }),
      clock: redisClock,
    },
  )
})

afterAll(async () => {
  for (const b of backends) await b.backend.close?.()
  await stopAll()
  const rows = [...stats.entries()].map(([name, s]) => ({
    class: name,
    cases: s.checks,
    result: `retryAfterMs ≥ 0 and ≤ the rule's bound in every case (max used ${(s.maxRetryOverBound * 100).toFixed(0)}% of it); ${s.infinite} Infinity, all for costs above capacity; resetMs ≥ now and ≤ latest time seen + bound (max ${(s.maxResetAhead * 100).toFixed(0)}% of it)`,
  }))
  for (const r of rows) recorder.add(r)
  recorder.save()
})

/**
 * Checks one result against the rule's bounds. `now` is the clock of the call, `latest` the latest time the
 * key was charged at (a clock that went back leaves state from the future).
 */
function checkResult(
  where: string,
  b: BucketConfig,
  cost: number,
  r: BackendResult,
  now: number,
  latest: number,
  tally: ReturnType<typeof stat>,
): void {
  tally.checks++
  const ctx = `${where} ${JSON.stringify({ ...b, cost, now: now - T, latest: latest - T })} -> ${JSON.stringify(r)}`
  expect(Number.isInteger(r.remaining) && r.remaining >= 0 && r.remaining <= capacity(b), ctx).toBe(true)
  expect(r.limit, ctx).toBe(capacity(b))
  expect(r.retryAfterMs >= 0, ctx).toBe(true)
  if (r.allowed) expect(r.retryAfterMs, ctx).toBe(0)
  if (cost > capacity(b)) {
    expect(r.retryAfterMs, ctx).toBe(Number.POSITIVE_INFINITY)
    tally.infinite++
  } else {
    expect(Number.isSafeInteger(r.retryAfterMs), ctx).toBe(true)
    expect(r.retryAfterMs, ctx).toBeLessThanOrEqual(retryBound(b, cost))
    tally.maxRetryOverBound = Math.max(tally.maxRetryOverBound, r.retryAfterMs / retryBound(b, cost))
  }
  expect(Number.isSafeInteger(r.resetMs), ctx).toBe(true)
  expect(r.resetMs, ctx).toBeGreaterThanOrEqual(now)
  const ahead = r.resetMs - Math.max(now, latest)
  expect(ahead, ctx).toBeLessThanOrEqual(resetBound(b))
  tally.maxResetAhead = Math.max(tally.maxResetAhead, ahead / resetBound(b))
}

/** Charges `count` calls of cost 1 at the current time; returns how many were admitted. */
async function fill(
  n: Named,
  key: string,
  b: Rule,
  count: number,
  latest: number,
  where: string,
): Promise<number> {
  let admitted = 0
  const now = n.clock.now()
  for (let i = 0; i < count; i++) {
    const r = await n.backend.checkAndIncrement(key, b, 1)
    checkResult(where, b, 1, r, now, Math.max(latest, r.allowed ? now : latest), stat(`${n.name}: fill`))
    if (r.allowed) admitted++
  }
  return admitted
}

describe.each(['memory', 'sqlite', 'redis'])('%s backend on a fake clock', (name) => {
  const named = () => backends.find((b) => b.name === name) as Named

  it.each(ALGORITHMS)(
    '%s: backward jumps of 1 s to 400 days give bounded results, exact once the clock recovers',
    async (algorithm) => {
      const n = named()
      for (const b of shapes(algorithm)) {
        for (const back of BACK) {
          const key = `back:${algorithm}:${b.id}:${back}`
          n.clock.set(T)
          expect(await fill(n, key, b, capacity(b) + 1, T, 'fill'), `${key}: exactly capacity at T`).toBe(
            capacity(b),
          )
          n.clock.set(T - back)
          for (const cost of [1, capacity(b), capacity(b) + 1]) {
            const r = await n.backend.checkAndIncrement(key, b, cost)
            checkResult(
              `${name} back ${back}`,
              b,
              cost,
              r,
              T - back,
              T,
              stat(`${name}: clock back 1 s..400 d`),
            )
          }
          // The clock recovers: past the pre-jump time by the rule's full refill. Exact again.
          n.clock.set(T + recoverMs(b))
          expect(
            await fill(n, key, b, capacity(b) + 1, T, 'recovered'),
            `${key}: exactly capacity once recovered`,
          ).toBe(capacity(b))
        }
      }
    },
  )

  it.each(ALGORITHMS)(
    '%s: gaps around 2^31 ms and up to 400 days never overflow; a full refill admits exactly capacity',
    async (algorithm) => {
      const n = named()
      for (const b of shapes(algorithm)) {
        for (const gap of GAPS) {
          const key = `gap:${algorithm}:${b.id}:${gap}`
          n.clock.set(T)
          expect(await fill(n, key, b, capacity(b) + 1, T, 'fill')).toBe(capacity(b))
          n.clock.set(T + gap)
          const r = await n.backend.checkAndIncrement(key, b, 1)
          checkResult(
            `${name} gap ${gap}`,
            b,
            1,
            r,
            T + gap,
            r.allowed ? T + gap : T,
            stat(`${name}: gaps 2^31-1 ms..400 d`),
          )
          if (gap >= recoverMs(b)) {
            expect(r.allowed, `${key}: refilled after ${gap} ms`).toBe(true)
            expect(
              1 + (await fill(n, key, b, capacity(b), T + gap, 'after gap')),
              `${key}: exactly capacity after the gap`,
            ).toBe(capacity(b))
          }
        }
      }
    },
  )
})

describe('random walks of the clock, the same on every backend', () => {
  it('fast-check: time steps of -400 d..+400 d and costs up to capacity + 1 keep every bound; SQLite and Redis agree exactly', async () => {
    let runs = 0
    let steps = 0
    const stepArb = fc.oneof(
      fc.integer({ min: 0, max: 5000 }),
      fc.constantFrom(2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1, 30 * DAY, 365 * DAY, 400 * DAY),
      fc.constantFrom(-1, -SEC, -60 * SEC, -3_600_000, -DAY, -30 * DAY, -400 * DAY),
      fc.integer({ min: -2 * DAY, max: 2 * DAY }),
    )
    const [memory, sqlite, redisBackend] = backends as [Named, Named, Named]
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...ALGORITHMS),
        fc.integer({ min: 0, max: 3 }),
        fc.array(fc.tuple(stepArb, fc.integer({ min: 1, max: 10 })), { minLength: 1, maxLength: 25 }),
        async (algorithm, shape, ops) => {
          const all = shapes(algorithm)
          const b = all[shape % all.length] as Rule
          const key = `walk:${runs++}`
          let now = T
          const latest = new Map<string, number>()
          for (const [dt, c] of ops) {
            now = Math.max(0, now + dt)
            const cost = Math.min(c, capacity(b) + 1)
            const results = new Map<string, BackendResult>()
            for (const n of [memory, sqlite, redisBackend]) {
              n.clock.set(now)
              const r = await n.backend.checkAndIncrement(key, b, cost)
              if (r.allowed) latest.set(n.name, Math.max(latest.get(n.name) ?? now, now))
              checkResult(
                `walk ${n.name}`,
                b,
                cost,
                r,
                now,
                latest.get(n.name) ?? now,
                stat('all backends: fast-check clock walks'),
              )
              results.set(n.name, r)
            }
            // The store that keeps state until swept and the one that runs the Lua port decide alike.
            // (The memory backend is compared in the BUG test below: it forgets state on a read.)
            expect(results.get('redis')).toEqual(results.get('sqlite'))
            steps++
          }
        },
      ),
      { numRuns: 60 },
    )
    recorder.details.walks = { runs, steps }
  })

  it('RateLimit and Retry-After headers stay non-negative whole seconds within the rule after backward jumps', async () => {
    const clock = fakeClock(T)
    const limiter = new FastLimit({ backend: new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }) })
    let cases = 0
    for (const algorithm of ALGORITHMS) {
      for (const b of shapes(algorithm)) {
        const set = limiter.rules(b)
        const headers = new RateLimitHeaders(set, 'draft-6', true)
        for (const back of BACK) {
          const id = `${algorithm}:${b.id}:${back}`
          clock.set(T)
          for (let i = 0; i <= capacity(b); i++) await limiter.check(id, set)
          clock.set(T - back)
          const d = await limiter.check(id, set)
          const raw = headers.toObject(d, clock.now())
          const h = Object.fromEntries(Object.entries(raw).map(([k, v]) => [k.toLowerCase(), v]))
          cases++
          const reset = Number(h['ratelimit-reset'])
          expect(Number.isSafeInteger(reset) && reset >= 0, JSON.stringify(h)).toBe(true)
          if (!d.allowed) expect(reset).toBeLessThanOrEqual(Math.ceil(retryBound(b, 1) / 1000))
          expect(Number(h['x-ratelimit-reset'])).toBeGreaterThanOrEqual(Math.floor((T - back) / 1000))
        }
      }
    }
    await limiter.close()
    recorder.add({
      class: 'headers after backward jumps (draft-6 + legacy)',
      cases,
      result: 'reset ≥ 0 whole seconds; ≤ the rule bound when denied',
    })
  })
})

describe('known problems with clocks that step backwards', () => {
  it('MemoryBackend keeps a full window when a denied call at its end is followed by a 1 ms step back, as SQLite and Redis do', async () => {
    // fixed-window 3/s: 3 admitted at T+100; a call at T+1000 that charges nothing (cost above capacity) makes
    // MemoryBackend empty the expired slot in place; the clock steps back 1 ms, into the full window again.
    const admittedAfterStepBack = new Map<string, number>()
    for (const n of backends) {
      const b = parseRule({ algorithm: 'fixed-window', limit: 3, window: 1000 })
      const key = 'bug:memory-wipe'
      n.clock.set(T + 100)
      for (let i = 0; i < 3; i++) expect((await n.backend.checkAndIncrement(key, b, 1)).allowed).toBe(true)
      n.clock.set(T + 1000)
      expect((await n.backend.checkAndIncrement(key, b, 4)).retryAfterMs).toBe(Number.POSITIVE_INFINITY)
      n.clock.set(T + 999)
      let admitted = 0
      for (let i = 0; i < 3; i++) if ((await n.backend.checkAndIncrement(key, b, 1)).allowed) admitted++
      admittedAfterStepBack.set(n.name, admitted)
    }
    recorder.details.memoryWipe = Object.fromEntries(admittedAfterStepBack)
    // The window [T, T+1000) is full: nothing more may be admitted in it, on any backend.
    expect(Object.fromEntries(admittedAfterStepBack)).toEqual({ memory: 0, sqlite: 0, redis: 0 })
  })

  it('after the clock steps back 1 day, a client that waits each retryAfterMs is admitted in time', async () => {
    // A full key whose state was written before the step: the first denial moves the state back to now
    // (counts kept), so each denial's retryAfterMs holds and the client is admitted within the rule's bound.
    const retriesUntilAdmitted: Record<string, number> = {}
    for (const n of backends) {
      for (const algorithm of ALGORITHMS) {
        const b = parseRule({ algorithm, limit: 3, window: '1s' })
        const key = `bug:lockout:${algorithm}`
        n.clock.set(T)
        expect(await fill(n, key, b, 3, T, 'lockout')).toBe(3)
        let now = T - DAY
        let retries = 0
        for (; retries < 50; retries++) {
          n.clock.set(now)
          const r = await n.backend.checkAndIncrement(key, b, 1)
          if (r.allowed) break
          now += r.retryAfterMs
        }
        retriesUntilAdmitted[`${n.name}/${algorithm}`] = retries
      }
    }
    recorder.details.lockoutRetries = retriesUntilAdmitted
    // "A retry at exactly now + retryAfterMs passes" (README): at most a couple of retries for a 1 s rule.
    for (const [k, v] of Object.entries(retriesUntilAdmitted)) expect(v, k).toBeLessThanOrEqual(3)
  })
})

describe('backend timeouts when the wall clock steps back', () => {
  const hung: Backend = {
    checkAndIncrement: () => new Promise(() => undefined),
    checkAndIncrementAll: () => new Promise(() => undefined),
    peek: () => new Promise(() => undefined),
    reset: async () => undefined,
    clear: async () => undefined,
    close: async () => undefined,
  }

  it('control: a hung backend gets the policy within timeoutMs while the clock is steady', async () => {
    const limiter = new FastLimit({ backend: hung, onBackendError: 'fail-open', timeoutMs: 200 })
    const t = performance.now()
    const ds = await Promise.all([limiter.check('a', '1/s'), limiter.check('b', '1/s')])
    expect(ds.map((d) => d.reason)).toEqual(['fail-open', 'fail-open'])
    expect(performance.now() - t).toBeLessThan(200 + 800)
    await limiter.close()
  })

  it('an NTP step back of 1 h while a backend call hangs does not stop timeouts (deadlines are monotonic)', async () => {
    const limiter = new FastLimit({ backend: hung, onBackendError: 'fail-open', timeoutMs: 200 })
    const realNow = Date.now.bind(Date)
    // A call pending when the wall clock steps back, and one that starts after the step.
    const first = limiter.check('pending-at-the-step', '1/s')
    const spy = vi.spyOn(Date, 'now').mockImplementation(() => realNow() - 3_600_000)
    try {
      const second = limiter.check('after-the-step', '1/s')
      const outcome = await Promise.race([
        Promise.all([first, second]).then(() => 'both decided by the policy'),
        new Promise((resolve) => setTimeout(() => resolve('still pending 2 s later'), 2000)),
      ])
      recorder.details.ntpStepBackTimeouts = outcome
      expect(outcome).toBe('both decided by the policy')
    } finally {
      spy.mockRestore()
      await limiter.close()
    }
  })
})
