// Property tests of the adjustment steps: 10,000 random sequences per algorithm of reserve, settle (lower,
// equal, higher), cancel, refund, time steps and concurrent checks, against sequential models written
// independently of the steps (a meter level, counts per window, an unbounded log).
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { Algorithm, BackendResult, BucketConfig, Charge } from '../backend'
import { adjustStep, step } from './index'
import type { State } from './types'

const T0 = 1_700_000_000_000
/** Sequences per algorithm; FASTLIMIT_PROPERTY_RUNS lowers it for a quick local run. */
const RUNS = Number(process.env.FASTLIMIT_PROPERTY_RUNS ?? 10_000)

type Op =
  | { kind: 'time'; ms: number }
  | { kind: 'reserve'; cost: number }
  | { kind: 'settle'; pick: number; how: 'lower' | 'equal' | 'higher'; by: number }
  | { kind: 'cancel'; pick: number }
  | { kind: 'refund'; cost: number }
  | { kind: 'others'; calls: number; cost: number }

const opArb = (b: BucketConfig): fc.Arbitrary<Op> => {
  const cap = b.burst ?? b.limit
  return fc.oneof(
    {
      weight: 3,
      arbitrary: fc.integer({ min: 0, max: 2 * b.windowMs }).map((ms) => ({ kind: 'time' as const, ms })),
    },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: 5 }).map((ms) => ({ kind: 'time' as const, ms })) },
    {
      weight: 4,
      arbitrary: fc.integer({ min: 1, max: cap + 1 }).map((cost) => ({ kind: 'reserve' as const, cost })),
    },
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant('settle' as const),
        pick: fc.nat(),
        how: fc.constantFrom('lower' as const, 'equal' as const, 'higher' as const),
        by: fc.integer({ min: 1, max: cap + 2 }),
      }),
    },
    { weight: 1, arbitrary: fc.nat().map((pick) => ({ kind: 'cancel' as const, pick })) },
    {
      weight: 1,
      arbitrary: fc.integer({ min: 1, max: cap + 1 }).map((cost) => ({ kind: 'refund' as const, cost })),
    },
    {
      weight: 1,
      arbitrary: fc
        .record({ calls: fc.integer({ min: 1, max: 4 }), cost: fc.integer({ min: 1, max: 3 }) })
        .map(({ calls, cost }) => ({ kind: 'others' as const, calls, cost })),
    },
  )
}

function bucketArb(algorithm: Algorithm): fc.Arbitrary<BucketConfig> {
  const meter = algorithm === 'gcra' || algorithm === 'token-bucket' || algorithm === 'leaky-bucket'
  return fc
    .record({
      limit: fc.integer({ min: 1, max: algorithm === 'sliding-log' ? 64 : 30 }),
      windowMs: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 41, max: 3000 })),
      burst: meter ? fc.option(fc.integer({ min: 1, max: 40 }), { nil: undefined }) : fc.constant(undefined),
    })
    .map(({ limit, windowMs, burst }) => ({
      algorithm,
      limit,
      windowMs,
      ...(burst === undefined ? {} : { burst }),
    }))
}

const scenario = (algorithm: Algorithm) =>
  bucketArb(algorithm).chain((b) =>
    fc.tuple(
      fc.constant(b),
      fc.integer({ min: 0, max: 100_000 }),
      fc.array(opArb(b), { minLength: 1, maxLength: 40 }),
    ),
  )

/** A reservation the sequence may settle. */
interface Held {
  readonly cost: number
  readonly charge: Charge
  readonly at: number
  /** The model's own record of the charge: the meter's level right after it, or the window / log time. */
  readonly mark: number
}

/** What each model offers the sequence. */
interface Model {
  /** Admits and charges `cost` at `now` or denies; returns the model's mark of the charge. */
  check(now: number, cost: number): { allowed: boolean; mark: number }
  /** The change the model expects from an adjustment, checked against the step's new state. */
  adjust(now: number, delta: number, held: Held | undefined, stepped: State): void
  /** Asserts that the step's state stands exactly where the model does. */
  same(now: number, state: State | undefined): void
}

/** The meters: one level in scaled units, draining `limit` per ms, capacity `burst * windowMs`. */
function meterModel(b: BucketConfig): Model {
  const L = b.limit
  const W = b.windowMs
  const B = b.burst ?? L
  const cap = B * W
  let level = 0
  let last = T0
  const drainTo = (now: number) => {
    level = Math.max(0, level - (now - last) * L)
    last = now
  }
  /** The level a step's state holds at `now` (read as the step reads it, skewMs 0). */
  const levelOf = (state: State | undefined, now: number): number => {
    if (state === undefined) return 0
    const s = state as number[]
    if (b.algorithm === 'gcra')
      return (s[0] as number) >= now ? ((s[0] as number) - now) * L + (s[1] as number) : 0
    if (b.algorithm === 'token-bucket')
      return Math.max(0, cap - (s[0] as number) - (now - (s[1] as number)) * L)
    return Math.max(0, (s[0] as number) - (now - (s[1] as number)) * L)
  }
  return {
    check(now, cost) {
      drainTo(now)
      if (cost > B || level + cost * W > cap) return { allowed: false, mark: 0 }
      level += cost * W
      return { allowed: true, mark: level }
    },
    adjust(now, delta, held, stepped) {
      drainTo(now)
      const after = levelOf(stepped, now)
      if (delta > 0) {
        expect(after).toBe(Math.min(cap, level + delta * W))
        level = after
        return
      }
      const back = level - after
      expect(back).toBeGreaterThanOrEqual(0)
      let r = -delta
      let ideal = Math.min(r * W, level)
      if (held !== undefined) {
        r = Math.min(r, held.cost)
        // What the charge still holds, draining oldest first: its level right after, less the drain since.
        const holds = Math.max(0, held.mark - (now - held.at) * L)
        ideal = Math.min(r * W, holds, level)
        // Never more than the charge still holds; less only by under a millisecond's drain.
        expect(back).toBeLessThanOrEqual(ideal)
        expect(back).toBeGreaterThan(ideal - L)
        // Exact while the charge itself has not drained below the refund.
        if (r * W <= held.cost * W - (now - held.at) * L) expect(back).toBe(ideal)
      } else expect(back).toBe(ideal)
      level = after
    },
    same(now, state) {
      drainTo(now)
      expect(levelOf(state, now)).toBe(level)
    },
  }
}

/** The two windows: counts per epoch-aligned window. */
function windowModel(b: BucketConfig): Model {
  const L = b.limit
  const W = b.windowMs
  const counts = new Map<number, number>()
  const startOf = (t: number) => Math.floor(t / W) * W
  const used = (now: number): number => {
    const s = startOf(now)
    const curr = counts.get(s) ?? 0
    if (b.algorithm === 'fixed-window') return curr
    const prev = counts.get(s - W) ?? 0
    const weighted = prev === 0 ? 0 : Math.ceil((prev * (W - (now - s))) / W)
    return Math.min(L, weighted + curr)
  }
  const take = (w: number, r: number): number => {
    const c = counts.get(w) ?? 0
    const t = Math.min(c, r)
    counts.set(w, c - t)
    return r - t
  }
  return {
    check(now, cost) {
      if (cost > L || used(now) + cost > L) return { allowed: false, mark: 0 }
      const s = startOf(now)
      counts.set(s, (counts.get(s) ?? 0) + cost)
      return { allowed: true, mark: s }
    },
    adjust(now, delta, held) {
      const s = startOf(now)
      if (delta > 0) {
        const c = counts.get(s) ?? 0
        counts.set(s, c >= L ? c : Math.min(L, c + delta))
        return
      }
      let r = -delta
      const windows = b.algorithm === 'fixed-window' ? [s] : [s, s - W]
      if (held !== undefined) {
        r = Math.min(r, held.cost)
        if (windows.includes(held.mark)) take(held.mark, r)
      } else for (const w of windows) r = take(w, r)
    },
    same(now, state) {
      const s = startOf(now)
      const curr = counts.get(s) ?? 0
      const prev = counts.get(s - W) ?? 0
      const o = step(state, now, b, 0)
      if (b.algorithm === 'fixed-window') {
        expect([o.state[0], o.state[1]]).toEqual([s, curr])
      } else expect([o.state[0], o.state[1], o.state[2]]).toEqual([s, prev, curr])
      expect(o.result.remaining).toBe(L - used(now))
    },
  }
}

/** The sliding log, unbounded (limits up to 64 never merge, so the step must match it exactly). */
function logModel(b: BucketConfig): Model {
  const L = b.limit
  const W = b.windowMs
  let log: Array<[number, number]> = []
  const live = (now: number) => {
    log = log.filter(([t, c]) => t > now - W && c > 0)
  }
  const used = () => log.reduce((a, [, c]) => a + c, 0)
  const add = (now: number, c: number) => {
    const last = log[log.length - 1]
    if (last !== undefined && last[0] === now) last[1] += c
    else log.push([now, c])
  }
  return {
    check(now, cost) {
      live(now)
      if (cost > L || used() + cost > L) return { allowed: false, mark: 0 }
      add(now, cost)
      return { allowed: true, mark: now }
    },
    adjust(now, delta, held) {
      live(now)
      if (delta > 0) {
        const room = L - used()
        if (room > 0) add(now, Math.min(room, delta))
        return
      }
      let r = -delta
      if (held !== undefined) {
        const e = log.find(([t]) => t === held.mark)
        if (e !== undefined) e[1] -= Math.min(e[1], Math.min(r, held.cost))
      } else {
        for (let i = log.length - 1; i >= 0 && r > 0; i--) {
          const e = log[i] as [number, number]
          const t = Math.min(e[1], r)
          e[1] -= t
          r -= t
        }
      }
      live(now)
    },
    same(now, state) {
      live(now)
      const o = step(state, now, b, 0)
      expect(o.state).toEqual(log.flat())
      expect(o.result.remaining).toBe(L - used())
    },
  }
}

function run(b: BucketConfig, seed: number, ops: readonly Op[], exact = true): void {
  const model =
    b.algorithm === 'sliding-log'
      ? logModel(b)
      : b.algorithm.endsWith('window')
        ? windowModel(b)
        : meterModel(b)
  let now = T0 + seed
  let state: State | undefined
  const held: Held[] = []
  const peek = (): BackendResult => step(state, now, b, 0).result
  for (const op of ops) {
    if (op.kind === 'time') {
      now += op.ms
      continue
    }
    if (op.kind === 'reserve' || op.kind === 'others') {
      const n = op.kind === 'others' ? op.calls : 1
      for (let i = 0; i < n; i++) {
        const before = state
        const o = step(state, now, b, op.cost)
        const m = exact ? model.check(now, op.cost) : { allowed: o.result.allowed, mark: now }
        expect(o.result.allowed).toBe(m.allowed)
        if (o.result.allowed) {
          state = o.state
          if (op.kind === 'reserve') {
            held.push({
              cost: op.cost,
              charge: { cost: op.cost, resetMs: o.result.resetMs, atMs: now },
              at: now,
              mark: m.mark,
            })
          }
        } else {
          // A denied reservation charges nothing.
          expect(step(o.state, now, b, 0).result).toEqual(step(before, now, b, 0).result)
        }
      }
    } else {
      let delta: number
      let h: Held | undefined
      if (op.kind === 'refund') {
        delta = -op.cost
      } else {
        if (held.length === 0) continue
        // Each reservation settles once: it leaves the list when settled.
        h = held.splice(op.pick % held.length, 1)[0] as Held
        const actual =
          op.kind === 'cancel'
            ? 0
            : op.how === 'equal'
              ? h.cost
              : op.how === 'lower'
                ? Math.max(0, h.cost - op.by)
                : h.cost + op.by
        delta = actual - h.cost
        if (delta === 0) continue
      }
      const before = peek()
      const out = adjustStep(state, now, b, delta, h?.charge)
      if (out.changed || out.rebased) state = out.state
      expect(out.rebased).toBe(false)
      if (exact) model.adjust(now, delta, h, out.state)
      const after = peek()
      expect(out.result).toEqual(after)
      // Never above the capacity; a refund never makes a wait longer, an extra charge never shorter.
      expect(after.remaining).toBeGreaterThanOrEqual(0)
      expect(after.remaining).toBeLessThanOrEqual(after.limit)
      if (delta < 0) {
        expect(after.remaining).toBeGreaterThanOrEqual(before.remaining)
        expect(after.retryAfterMs).toBeLessThanOrEqual(before.retryAfterMs)
      } else {
        expect(after.remaining).toBeLessThanOrEqual(before.remaining)
        expect(after.retryAfterMs).toBeGreaterThanOrEqual(before.retryAfterMs)
      }
    }
    if (exact) model.same(now, state)
  }
}

describe.each([
  'gcra',
  'token-bucket',
  'leaky-bucket',
  'fixed-window',
  'sliding-window',
  'sliding-log',
] as const)('%s: reserve, settle, cancel and refund against a sequential model', (algorithm) => {
  it(`holds over ${RUNS} random sequences`, () => {
    fc.assert(
      fc.property(scenario(algorithm), ([b, seed, ops]) => run(b, seed, ops)),
      { numRuns: RUNS },
    )
  }, 120_000)
})

describe('sliding-log above 64 entries (merged): the invariants, without an exact model', () => {
  it(`holds over ${Math.ceil(RUNS / 5)} random sequences`, () => {
    const arb = fc
      .record({ limit: fc.integer({ min: 65, max: 300 }), windowMs: fc.integer({ min: 63, max: 2000 }) })
      .chain(({ limit, windowMs }) => {
        const b: BucketConfig = { algorithm: 'sliding-log', limit, windowMs }
        const ops = fc.array(
          fc.oneof(
            opArb(b),
            fc.integer({ min: 1, max: 3 }).map((cost) => ({ kind: 'reserve' as const, cost })),
            fc.constant({ kind: 'time' as const, ms: 1 }),
          ),
          { minLength: 1, maxLength: 150 },
        )
        return fc.tuple(fc.constant(b), fc.integer({ min: 0, max: 100_000 }), ops)
      })
    fc.assert(
      fc.property(arb, ([b, seed, ops]) => run(b, seed, ops, false)),
      { numRuns: Math.ceil(RUNS / 5) },
    )
  }, 120_000)
})
