// The bounded sliding-log: identical to an unbounded exact log while its entries fit; beyond that at
// most SLIDING_LOG_SLOTS entries, never more than the limit in any window, and no unit counted longer
// than windowMs + slidingLogSlotMs(windowMs).
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { RETRY_NEVER } from '../backend'
import { result } from './math'
import { SLIDING_LOG_SLOTS, slidingLog, slidingLogInPlace, slidingLogSlotMs } from './sliding-log'
import type { State, StepFunction } from './types'

const T0 = 1_700_000_000_000

/** The unbounded exact log this algorithm was before it was bounded: one entry per admitting millisecond. */
const exactLog: StepFunction = (state, now, bucket, cost) => {
  const L = bucket.limit
  const W = bucket.windowMs
  const s = state ?? []
  const n = s.length
  let shift = 0
  if (n > 0 && (s[n - 2] as number) > now) shift = (s[n - 2] as number) - now
  const kept: number[] = []
  let used = 0
  for (let i = 0; i < n; i += 2) {
    if ((s[i] as number) - shift > now - W) {
      kept.push((s[i] as number) - shift, s[i + 1] as number)
      used += s[i + 1] as number
    }
  }
  const m = kept.length
  const newest = m > 0 ? (kept[m - 2] as number) : now
  if (cost > 0 && cost <= L && used + cost <= L) {
    if (m > 0 && newest === now) kept[m - 1] = (kept[m - 1] as number) + cost
    else kept.push(now, cost)
    return { state: kept, result: result(true, L, L - used - cost, now + W, 0), ttlMs: W, rebased: shift > 0 }
  }
  const want = cost === 0 ? 1 : cost
  let retry = 0
  if (cost > L) retry = RETRY_NEVER
  else if (used + want > L) {
    let left = used
    let i = 0
    while (left + want > L) {
      left -= kept[i + 1] as number
      i += 2
    }
    retry = (kept[i - 2] as number) + W - now
  }
  return {
    state: kept,
    result: result(cost === 0 ? used + 1 <= L : false, L, L - used, m > 0 ? newest + W : now, retry),
    ttlMs: m > 0 ? newest + W - now : W,
    rebased: shift > 0,
  }
}

const callsArb = (windowMs: number, limit: number, maxLength: number) =>
  fc.array(
    fc.tuple(
      fc.oneof(
        { weight: 3, arbitrary: fc.constant(0) },
        { weight: 6, arbitrary: fc.integer({ min: 1, max: Math.max(1, Math.floor(windowMs / 50)) }) },
        { weight: 2, arbitrary: fc.integer({ min: 0, max: Math.max(1, Math.floor(windowMs / 4)) }) },
        { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 * windowMs }) },
        { weight: 1, arbitrary: fc.integer({ min: -Math.min(windowMs, 5000), max: -1 }) },
      ),
      fc.oneof(
        { weight: 8, arbitrary: fc.constant(1) },
        { weight: 2, arbitrary: fc.integer({ min: 1, max: limit + 2 }) },
      ),
    ),
    { minLength: 1, maxLength },
  )

describe('sliding-log, bounded', () => {
  it('is the exact log, state for state and result for result, while a window holds at most 64 entries', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: SLIDING_LOG_SLOTS }),
        fc.integer({ min: 1, max: 100_000 }),
        fc.integer({ min: 0, max: 10_000 }),
        (limit, windowMs, offset) => {
          const bucket = { algorithm: 'sliding-log' as const, limit, windowMs }
          return fc.assert(
            fc.property(callsArb(windowMs, limit, 300), (calls) => {
              let a: State | undefined
              let b: State | undefined
              let now = T0 + offset
              for (const [dt, cost] of calls) {
                now = Math.max(0, now + dt)
                expect(slidingLog(a, now, bucket, 0)).toEqual(exactLog(b, now, bucket, 0))
                const x = slidingLog(a, now, bucket, cost)
                const y = exactLog(b, now, bucket, cost)
                expect(x).toEqual(y)
                if (x.result.allowed || x.rebased) {
                  a = x.state
                  b = y.state
                }
              }
            }),
            { numRuns: 3 },
          )
        },
      ),
      { numRuns: 100 },
    )
  })

  it('beyond 64 entries: at most 64 kept, never more than the limit in any window, no unit counted past windowMs + slot', () => {
    let mergedRuns = 0
    fc.assert(
      fc.property(
        fc.integer({ min: SLIDING_LOG_SLOTS + 1, max: 5000 }),
        fc.oneof(fc.integer({ min: 200, max: 1000 }), fc.integer({ min: 1001, max: 3_600_000 })),
        fc.integer({ min: 0, max: 10_000 }),
        fc.infiniteStream(fc.integer({ min: 0, max: 2 ** 30 })),
        (limit, windowMs, offset, randoms) => {
          const bucket = { algorithm: 'sliding-log' as const, limit, windowMs }
          const slot = slidingLogSlotMs(windowMs)
          const rand = randoms[Symbol.iterator]()
          const next = (n: number) => (rand.next().value as number) % n
          let state: State | undefined
          let now = T0 + offset
          // Admitted units at their real times; the clock only moves forward here.
          const admitted: Array<[number, number]> = []
          let merged = false
          for (let k = 0; k < 600; k++) {
            const r = next(100)
            now += r < 20 ? 0 : r < 97 ? 1 + next(Math.floor(windowMs / 150)) : next(windowMs)
            const cost = next(10) < 9 ? 1 : 1 + next(Math.min(limit, 20))
            const real = (from: number) => {
              let sum = 0
              for (const [t, c] of admitted) if (t > from) sum += c
              return sum
            }
            const peek = slidingLog(state, now, bucket, 0).result
            const used = limit - peek.remaining
            const out = slidingLog(state, now, bucket, cost)
            const where = `call ${k} at ${now} of ${JSON.stringify(bucket)}`
            // (Plain checks: this loop runs 120,000 times.)
            // Counted at least for the window, never past windowMs + slot.
            if (used < Math.min(limit, real(now - windowMs))) throw new Error(`undercount, ${where}`)
            if (used > real(now - windowMs - slot)) throw new Error(`counted too long, ${where}`)
            if (out.state.length > 2 * SLIDING_LOG_SLOTS) throw new Error(`state too long, ${where}`)
            for (let i = 2; i < out.state.length; i += 2)
              if ((out.state[i] as number) <= (out.state[i - 2] as number))
                throw new Error(`unordered, ${where}`)
            if (out.result.allowed) {
              admitted.push([now, cost])
              while ((admitted[0] as [number, number])[0] <= now - windowMs - slot) admitted.shift()
              // Never more than the limit in (now - windowMs, now], counting real times.
              if (real(now - windowMs) > limit) throw new Error(`over the limit, ${where}`)
              if (out.state.length === 2 * SLIDING_LOG_SLOTS) merged = true
              state = out.state
            } else if (cost <= limit) {
              // Never early, never late, for the state kept.
              const wait = out.result.retryAfterMs
              if (!slidingLog(state, now + wait, bucket, cost).result.allowed)
                throw new Error(`late, ${where}`)
              if (slidingLog(state, now + wait - 1, bucket, cost).result.allowed)
                throw new Error(`early, ${where}`)
            }
          }
          if (merged) mergedRuns++
        },
      ),
      { numRuns: 200 },
    )
    // The sequences do overflow the 64 entries (most runs fill them and keep admitting).
    expect(mergedRuns).toBeGreaterThan(100)
  })

  it('merges the oldest two entries of one slot when a 65th arrives; other entries keep their times', () => {
    const bucket = { algorithm: 'sliding-log' as const, limit: 1000, windowMs: 63_000 }
    // Slots of 1000 ms. 64 entries: two in the slot of T0 (at +0 and +10), then one per slot.
    const base = Math.floor(T0 / 1000) * 1000
    let state: State | undefined
    const times = [base, base + 10]
    for (let i = 1; i < 63; i++) times.push(base + i * 1000 + 500)
    for (const t of times.slice(0, 64)) state = slidingLog(state, t, bucket, 1).state
    expect(state).toHaveLength(128)
    const out = slidingLog(state, base + 62_999, bucket, 1)
    expect(out.result.allowed).toBe(true)
    expect(out.state).toHaveLength(128)
    expect(out.state.slice(0, 4)).toEqual([base + 10, 2, base + 1500, 1])
    expect(out.state.slice(-4)).toEqual([base + 62_500, 1, base + 62_999, 1])
  })

  it('brings a long state of an older release down to 64 entries at the next admission, keeping its count', () => {
    const bucket = { algorithm: 'sliding-log' as const, limit: 100_000, windowMs: 60_000 }
    const old: number[] = []
    for (let i = 0; i < 50_000; i++) old.push(T0 + i, 1)
    const out = slidingLog(old, T0 + 50_000, bucket, 1)
    expect(out.result).toMatchObject({ allowed: true, remaining: 100_000 - 50_001 })
    expect(out.state.length).toBeLessThanOrEqual(2 * SLIDING_LOG_SLOTS)
    expect(slidingLog(out.state, T0 + 50_000, bucket, 0).result.remaining).toBe(100_000 - 50_001)
  })

  it('in place: the same outputs as the pure step, with the log itself as the state', () => {
    const bucket = { algorithm: 'sliding-log' as const, limit: 500, windowMs: 1000 }
    let pure: State | undefined
    const log: number[] = []
    let now = T0
    for (let i = 0; i < 2000; i++) {
      now += i % 7 === 0 ? 0 : (i * 13) % 40
      const a = slidingLog(pure, now, bucket, 1 + (i % 3))
      const b = slidingLogInPlace(log, now, bucket, 1 + (i % 3))
      expect(b.state).toBe(log)
      expect(b.result).toEqual(a.result)
      expect(b.state).toEqual(a.state)
      pure = a.state
    }
  })
})
