import { describe, expect, it } from 'vitest'
import type { BackendResult, BucketConfig } from '../backend'
import { ALGORITHMS, decodeState, encodeState, step } from './index'
import type { State } from './types'

const T = 1_700_000_000_000 // aligned to 1000 ms

/** Runs (dt, cost) calls against one state; returns every result. */
function run(bucket: BucketConfig, calls: Array<[number, number]>, start = T): BackendResult[] {
  let state: State | undefined
  let now = start
  const out: BackendResult[] = []
  for (const [dt, cost] of calls) {
    now += dt
    const o = step(state, now, bucket, cost)
    if (o.result.allowed && cost > 0) state = o.state
    out.push(o.result)
  }
  return out
}

const r = (allowed: boolean, limit: number, remaining: number, resetMs: number, retryAfterMs: number) => ({
  allowed,
  limit,
  remaining,
  resetMs,
  retryAfterMs,
})

describe('fixed-window', () => {
  const b: BucketConfig = { algorithm: 'fixed-window', limit: 3, windowMs: 1000 }
  it('counts per epoch-aligned window', () => {
    expect(
      run(b, [
        [250, 1],
        [0, 1],
        [0, 1],
        [0, 1],
        [500, 2],
        [250, 2],
        [0, 2],
        [0, 1],
      ]),
    ).toEqual([
      r(true, 3, 2, T + 1000, 0),
      r(true, 3, 1, T + 1000, 0),
      r(true, 3, 0, T + 1000, 0),
      r(false, 3, 0, T + 1000, 750),
      r(false, 3, 0, T + 1000, 250),
      r(true, 3, 1, T + 2000, 0), // new window at T+1000
      r(false, 3, 1, T + 2000, 1000),
      r(true, 3, 0, T + 2000, 0),
    ])
  })
  it('peek says whether 1 would pass and charges nothing', () => {
    const fresh = step(undefined, T + 10, b, 0)
    expect(fresh.result).toEqual(r(true, 3, 3, T + 10, 0))
    const full = step([T, 3], T + 10, b, 0)
    expect(full.result).toEqual(r(false, 3, 0, T + 1000, 990))
    expect(full.state).toEqual([T, 3])
  })
})

describe('sliding-window', () => {
  const b: BucketConfig = { algorithm: 'sliding-window', limit: 10, windowMs: 1000 }
  it('weights the previous window by its overlap, rounding up', () => {
    // 10 in window [T, T+1000); at T+1300 the estimate is ceil(10 * 700/1000) = 7.
    const res = run(b, [
      [0, 10],
      [1300, 3],
      [0, 1],
    ])
    expect(res[0]).toEqual(r(true, 10, 0, T + 2000, 0))
    expect(res[1]).toEqual(r(true, 10, 0, T + 3000, 0))
    // Now 7 + 3 = 10: one more needs the weight to drop to 6: ceil(10 * (1000 - e)/1000) <= 6 at e = 400.
    expect(res[2]).toEqual(r(false, 10, 0, T + 3000, 100))
  })
  it('computes retry-after across the next window', () => {
    // 9 at the end of one window, then a cost of 10 must wait for the previous weight to reach 0.
    const res = run(b, [
      [999, 9],
      [0, 10],
      [0, 2],
    ])
    expect(res[1]).toEqual(r(false, 10, 1, T + 2000, 1 + 1000))
    // Cost 2 fits when ceil(9 * (1000 - e)/1000) <= 8: e >= 112 in the next window.
    expect(res[2]).toEqual(r(false, 10, 1, T + 2000, 1 + 112))
    const later = run(b, [
      [999, 9],
      [1 + 111, 2],
      [1, 2],
    ])
    expect(later[1]?.allowed).toBe(false)
    expect(later[2]?.allowed).toBe(true)
  })
})

describe('sliding-log', () => {
  const b: BucketConfig = { algorithm: 'sliding-log', limit: 3, windowMs: 1000 }
  it('is exact over (now - window, now]', () => {
    const res = run(b, [
      [0, 1],
      [100, 2],
      [100, 1],
      [800, 1],
      [99, 1],
      [1, 1],
    ])
    expect(res).toEqual([
      r(true, 3, 2, T + 1000, 0),
      r(true, 3, 0, T + 1100, 0),
      r(false, 3, 0, T + 1100, 800), // the entry at T leaves the window at T+1000
      r(true, 3, 0, T + 2000, 0),
      r(false, 3, 0, T + 2000, 1), // the two at T+100 leave at T+1100
      r(true, 3, 1, T + 2100, 0),
    ])
  })
  it('merges calls of the same millisecond into one entry', () => {
    const o1 = step(undefined, T, b, 1)
    const o2 = step(o1.state, T, b, 1)
    expect(o2.state).toEqual([T, 2])
    const o3 = step(o2.state, T + 5, b, 1)
    expect(o3.state).toEqual([T, 2, T + 5, 1])
    expect(step(o3.state, T + 1000, b, 1).state).toEqual([T + 5, 1, T + 1000, 1])
  })
})

describe('the bucket algorithms', () => {
  it('gcra admits a burst, then one per emission interval, with exact fractional intervals', () => {
    // 7 per second: 1000/7 = 142.857 ms per unit.
    const b: BucketConfig = { algorithm: 'gcra', limit: 7, windowMs: 1000 }
    const burst = run(
      b,
      Array.from({ length: 8 }, () => [0, 1] as [number, number]),
    )
    expect(burst.filter((x) => x.allowed)).toHaveLength(7)
    expect(burst[7]).toEqual(r(false, 7, 0, T + 1000, 143))
    // After exactly 1000 ms, 7 more; after 999, only 6.
    let state: State | undefined
    for (let i = 0; i < 7; i++) state = step(state, T, b, 1).state
    let s999 = state
    let admitted = 0
    for (let i = 0; i < 7; i++) {
      const o = step(s999, T + 999, b, 1)
      if (o.result.allowed) {
        admitted++
        s999 = o.state
      }
    }
    expect(admitted).toBe(6)
  })

  it('token-bucket and leaky-bucket report capacity as the limit, and burst above limit', () => {
    for (const algorithm of ['token-bucket', 'leaky-bucket', 'gcra'] as const) {
      const b: BucketConfig = { algorithm, limit: 2, windowMs: 1000, burst: 5 }
      const res = run(b, [
        [0, 5],
        [0, 1],
        [500, 1],
        [0, 1],
      ])
      expect(res).toEqual([
        r(true, 5, 0, T + 2500, 0),
        r(false, 5, 0, T + 2500, 500),
        r(true, 5, 0, T + 3000, 0),
        r(false, 5, 0, T + 3000, 500),
      ])
    }
  })

  it('the three meters make identical decisions on any sequence', () => {
    let seed = 42
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed / 2147483648
    }
    for (let round = 0; round < 50; round++) {
      const limit = 1 + Math.floor(rand() * 20)
      const windowMs = 1 + Math.floor(rand() * 5000)
      const burst = rand() < 0.5 ? undefined : 1 + Math.floor(rand() * 30)
      const calls: Array<[number, number]> = Array.from({ length: 200 }, () => [
        Math.floor(rand() * windowMs * 0.3),
        rand() < 0.1 ? 0 : 1 + Math.floor(rand() * 3),
      ])
      const base = { limit, windowMs, ...(burst ? { burst } : {}) }
      const g = run({ algorithm: 'gcra', ...base }, calls)
      expect(run({ algorithm: 'token-bucket', ...base }, calls)).toEqual(g)
      expect(run({ algorithm: 'leaky-bucket', ...base }, calls)).toEqual(g)
    }
  })
})

describe('every algorithm', () => {
  it('denies a cost above capacity with retryAfterMs Infinity and leaves the state alone', () => {
    for (const algorithm of ALGORITHMS) {
      const b: BucketConfig = { algorithm, limit: 3, windowMs: 1000 }
      const o = step(undefined, T, b, 4)
      expect(o.result).toEqual(r(false, 3, 3, T, Number.POSITIVE_INFINITY))
    }
  })

  it('keeps retryAfterMs and resetMs bounded when the clock jumps backwards by hours', () => {
    for (const algorithm of ALGORITHMS) {
      const b: BucketConfig = { algorithm, limit: 3, windowMs: 1000 }
      let state: State | undefined
      for (let i = 0; i < 3; i++) state = step(state, T, b, 1).state
      const back = step(state, T - 3_600_000, b, 1).result
      expect(back.allowed).toBe(false)
      expect(back.retryAfterMs).toBeGreaterThan(0)
      expect(back.retryAfterMs).toBeLessThanOrEqual(2000)
      expect(back.remaining).toBeGreaterThanOrEqual(0)
    }
  })

  it('moves a state left ahead of now by a clock stepping back, keeping its counts, so retry-after holds', () => {
    for (const algorithm of ALGORITHMS) {
      for (const back of [1, 999, 3_600_000, 86_400_000]) {
        const b: BucketConfig = { algorithm, limit: 3, windowMs: 1000 }
        let state: State | undefined
        for (let i = 0; i < 3; i++) state = step(state, T + 500, b, 1).state
        const now = T + 500 - back
        const denied = step(state, now, b, 1)
        expect(denied.result.allowed, `${algorithm} back ${back}`).toBe(false)
        // Window algorithms move only when the step crosses into an earlier window (T is aligned).
        const windowed = algorithm === 'fixed-window' || algorithm === 'sliding-window'
        expect(denied.rebased, `${algorithm} back ${back}`).toBe(!windowed || back > 500)
        // The backend writes the moved state; from it, the retry is exact to the millisecond.
        const moved = denied.state
        const wait = denied.result.retryAfterMs
        expect(wait).toBeLessThanOrEqual(2000)
        expect(step(moved, now + wait - 1, b, 1).result.allowed, `${algorithm} back ${back}`).toBe(false)
        expect(step(moved, now + wait, b, 1).result.allowed, `${algorithm} back ${back}`).toBe(true)
        // A state that is not ahead is never marked.
        expect(step(state, T + 500, b, 1).rebased).toBe(false)
      }
    }
  })

  it('handles gaps far beyond 24.8 days (2^31 ms) without overflow', () => {
    for (const algorithm of ALGORITHMS) {
      const b: BucketConfig = { algorithm, limit: 3, windowMs: 365 * 86_400_000 }
      let state: State | undefined
      for (let i = 0; i < 3; i++) state = step(state, T, b, 1).state
      const denied = step(state, T + 30 * 86_400_000, b, 1).result
      expect(denied.allowed).toBe(false)
      expect(Number.isSafeInteger(denied.retryAfterMs)).toBe(true)
      expect(denied.retryAfterMs).toBeGreaterThan(0)
      expect(denied.retryAfterMs).toBeLessThanOrEqual(2 * 365 * 86_400_000)
      const later = step(state, T + denied.retryAfterMs + 30 * 86_400_000, b, 1).result
      expect(later.allowed).toBe(true)
    }
  })

  it('treats malformed stored state as no state', () => {
    for (const algorithm of ALGORITHMS) {
      const b: BucketConfig = { algorithm, limit: 3, windowMs: 1000 }
      expect(step([1, 2, 3, 4, 5], T, b, 1).result.remaining).toBe(2)
    }
  })
})

describe('encodeState / decodeState', () => {
  it('round-trips integers and rejects anything else', () => {
    expect(decodeState(encodeState([T, 0, 12]))).toEqual([T, 0, 12])
    expect(decodeState('')).toBeUndefined()
    expect(decodeState(null)).toBeUndefined()
    expect(decodeState('1,x')).toBeUndefined()
    expect(decodeState('1.5')).toBeUndefined()
    for (const bad of ['1,,2', ' 5', '0x10', '1e3', '5,', ',5', '+5', '1, 2'])
      expect(decodeState(bad)).toBeUndefined()
    expect(decodeState('-3,0')).toEqual([-3, 0])
  })
})
