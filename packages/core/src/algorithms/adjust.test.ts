// The adjustment steps by example: refunds take back only what the charge still holds, extra charges saturate.
import { describe, expect, it } from 'vitest'
import type { Algorithm, BackendResult, BucketConfig, Charge } from '../backend'
import { ALGORITHMS, adjustAll, adjustStep, SLIDING_LOG_SLOTS, step } from './index'
import type { State } from './types'

const T = 1_700_000_000_000 // aligned to 1000 ms
const METERS: readonly Algorithm[] = ['gcra', 'token-bucket', 'leaky-bucket']

/** What a reservation keeps of an admitting result. */
const chargeOf = (r: BackendResult, cost: number, at: number): Charge => ({
  cost,
  resetMs: r.resetMs,
  atMs: at,
})

/** The peek of a state: what a caller sees. */
const peek = (state: State | undefined, now: number, b: BucketConfig, skewMs = 0) =>
  step(state, now, b, 0, skewMs).result

describe.each(ALGORITHMS)('%s', (algorithm) => {
  const b: BucketConfig = { algorithm, limit: 10, windowMs: 1000 }

  it('cancels a charge made in the same millisecond exactly', () => {
    const before = step(undefined, T + 100, b, 3)
    const s0 = before.state
    const reserved = step(s0, T + 100, b, 5)
    expect(reserved.result.allowed).toBe(true)
    const out = adjustStep(reserved.state, T + 100, b, -5, chargeOf(reserved.result, 5, T + 100))
    expect(out.changed).toBe(true)
    expect(out.result).toEqual(peek(s0, T + 100, b))
  })

  it('settles lower as if the lower cost had been charged', () => {
    const s0 = step(undefined, T + 100, b, 2).state
    const reserved = step(s0, T + 120, b, 6)
    const settled = adjustStep(reserved.state, T + 120, b, -4, chargeOf(reserved.result, 6, T + 120))
    const direct = step(s0, T + 120, b, 2)
    expect(settled.result).toEqual(peek(direct.state, T + 120, b))
    // And keeps agreeing later.
    expect(peek(settled.state, T + 700, b)).toEqual(peek(direct.state, T + 700, b))
  })

  it('never lifts a bucket above its capacity, and refunds nothing on an empty state', () => {
    const out = adjustStep(undefined, T, b, -5, undefined)
    expect(out.changed).toBe(false)
    expect(out.result.remaining).toBe(10)
    const one = step(undefined, T, b, 1)
    const back = adjustStep(one.state, T, b, -50, undefined)
    expect(back.result.remaining).toBe(10)
  })

  it('refunds at most the charged cost', () => {
    const s0 = step(undefined, T, b, 4).state
    const reserved = step(s0, T, b, 2)
    const out = adjustStep(reserved.state, T, b, -6, chargeOf(reserved.result, 2, T))
    expect(out.result.remaining).toBe(6)
  })

  it('charges more up to a full bucket, never denied, the excess forgiven', () => {
    const s0 = step(undefined, T, b, 4).state
    const out = adjustStep(s0, T, b, 100, undefined)
    expect(out.changed).toBe(true)
    expect(out.result.remaining).toBe(0)
    expect(out.result.allowed).toBe(false)
    // A full bucket, and no more: the wait is that of a full bucket.
    const full = step(undefined, T, b, 10)
    expect(out.result.retryAfterMs).toBe(peek(full.state, T, b).retryAfterMs)
    expect(adjustStep(out.state, T, b, 5, undefined).changed).toBe(false)
  })

  it('gives back nothing once the charge has left the bucket', () => {
    const reserved = step(undefined, T + 10, b, 5)
    const charge = chargeOf(reserved.result, 5, T + 10)
    // Two windows later (and the meters fully drained), someone else is charged.
    const later = step(reserved.state, T + 2500, b, 4)
    const out = adjustStep(later.state, T + 2500, b, -5, charge)
    expect(out.changed).toBe(false)
    expect(out.result.remaining).toBe(6)
  })

  it('adjusts several buckets of a key at once', () => {
    const buckets: BucketConfig[] = [b, { algorithm, limit: 100, windowMs: 60_000 }]
    const states = buckets.map((x) => step(undefined, T, x, 7))
    const outs = adjustAll(
      states.map((s) => s.state),
      T,
      buckets,
      -7,
      states.map((s) => chargeOf(s.result, 7, T)),
    )
    expect(outs.map((o) => o.result.remaining)).toEqual([10, 100])
  })
})

describe.each(METERS)('%s drains oldest first', (algorithm) => {
  const b: BucketConfig = { algorithm, limit: 10, windowMs: 1000 } // one unit per 100 ms

  it('refunds a charge in full while the bucket still holds it', () => {
    const s0 = step(undefined, T, b, 5).state // drains by T + 500
    const reserved = step(s0, T, b, 3)
    const out = adjustStep(reserved.state, T + 400, b, -3, chargeOf(reserved.result, 3, T))
    // At T + 400 the bucket holds 4 units (8 - 4 drained): 3 of them are the charge's.
    expect(out.result.remaining).toBe(9)
  })

  it('refunds only what is left of a charge that has partly drained', () => {
    const reserved = step(undefined, T, b, 5)
    // 300 ms later the bucket holds 2 units: all that is left of the charge.
    const other = step(reserved.state, T + 300, b, 3) // 5 units now, 3 of them another call's
    const out = adjustStep(other.state, T + 300, b, -5, chargeOf(reserved.result, 5, T))
    expect(out.result.remaining).toBe(7)
  })

  it('is conservative by less than a millisecond of drain without atMs', () => {
    const reserved = step(undefined, T, b, 5)
    const { atMs: _at, ...noTime } = chargeOf(reserved.result, 5, T)
    const out = adjustStep(reserved.state, T + 200, b, -5, noTime)
    // Ideal: 3 units left, all refunded; without the time, a fraction of one unit may stay.
    expect(out.result.remaining).toBeGreaterThanOrEqual(9)
    const exact = adjustStep(reserved.state, T + 200, b, -5, chargeOf(reserved.result, 5, T))
    expect(exact.result.remaining).toBe(10)
  })

  it('keeps a state from a clock ahead (within skewMs) and refunds from it', () => {
    const ahead = step(undefined, T + 50, b, 6) // written by a clock 50 ms ahead
    const charge = chargeOf(ahead.result, 6, T + 50)
    const out = adjustStep(ahead.state, T, b, -6, charge, 100)
    expect(out.rebased).toBe(false)
    // All of the charge comes back; the 50 ms the state lies ahead still count, as a check sees them.
    const empty = adjustStep(ahead.state, T + 50, b, -6, charge)
    expect(peek(empty.state, T, b, 100)).toEqual(out.result)
    expect(out.result.remaining).toBe(9)
  })
})

describe('windows', () => {
  it("fixed-window refunds only in the charge's window", () => {
    const b: BucketConfig = { algorithm: 'fixed-window', limit: 10, windowMs: 1000 }
    const reserved = step(undefined, T + 900, b, 4)
    const charge = chargeOf(reserved.result, 4, T + 900)
    const next = step(reserved.state, T + 1100, b, 2) // the next window: 2 counted there
    expect(adjustStep(next.state, T + 1100, b, -4, charge).changed).toBe(false)
    // Without a charge, a refund comes out of the current window.
    expect(adjustStep(next.state, T + 1100, b, -4, undefined).result.remaining).toBe(10)
  })

  it('fixed-window finds a charge counted in a later window of a clock ahead', () => {
    const b: BucketConfig = { algorithm: 'fixed-window', limit: 10, windowMs: 1000 }
    const ahead = step(undefined, T + 1010, b, 3) // another clock is already in the next window
    const mine = step(ahead.state, T + 990, b, 2, 50) // counted in that window too
    expect(mine.state).toEqual([T + 1000, 5])
    const out = adjustStep(mine.state, T + 995, b, -2, chargeOf(mine.result, 2, T + 990), 50)
    expect(out.state).toEqual([T + 1000, 3])
  })

  it('sliding-window refunds from the previous window while it still weighs', () => {
    const b: BucketConfig = { algorithm: 'sliding-window', limit: 10, windowMs: 1000 }
    const reserved = step(undefined, T + 900, b, 8)
    const charge = chargeOf(reserved.result, 8, T + 900)
    const later = step(reserved.state, T + 1500, b, 1) // previous 8 weighs ceil(8 * 0.5) = 4
    expect(later.result.remaining).toBe(5)
    const out = adjustStep(later.state, T + 1500, b, -6, charge)
    expect(out.state).toEqual([T + 1000, 2, 1])
    expect(out.result.remaining).toBe(8)
    // Two windows on, the charge no longer weighs: nothing to refund.
    const gone = step(later.state, T + 2100, b, 1)
    expect(adjustStep(gone.state, T + 2100, b, -8, charge).changed).toBe(false)
  })

  it('sliding-log refunds the entry of the charge, and the slot it was merged into', () => {
    const b: BucketConfig = { algorithm: 'sliding-log', limit: 1000, windowMs: 63_000 } // slots of 1000 ms
    let state: State | undefined
    let charge: Charge | undefined
    for (let i = 0; i < SLIDING_LOG_SLOTS + 1; i++) {
      const now = T + 10 + i * 10 // 65 entries, 10 ms apart, within the first slot
      const o = step(state, now, b, i === 0 ? 5 : 1)
      state = o.state
      if (i === 0) charge = chargeOf(o.result, 5, now)
    }
    // The first entry was merged into the second (same slot, the later time).
    expect((state as State).slice(0, 2)).toEqual([T + 20, 6])
    const out = adjustStep(state, T + 700, b, -5, charge)
    expect(out.state.slice(0, 2)).toEqual([T + 20, 1])
    // The entry of a charge that has left the window refunds nothing.
    const late = adjustStep(state, T + 63_015, b, -5, charge)
    expect(late.changed).toBe(false)
  })

  it('sliding-log refunds newest first without a charge', () => {
    const b: BucketConfig = { algorithm: 'sliding-log', limit: 10, windowMs: 1000 }
    const a = step(undefined, T, b, 3)
    const c = step(a.state, T + 10, b, 2)
    const out = adjustStep(c.state, T + 20, b, -4, undefined)
    expect(out.state).toEqual([T, 1])
  })
})
