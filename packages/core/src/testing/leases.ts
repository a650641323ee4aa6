// The conformance cases of concurrency leases (Backend.acquire / Backend.release), run by backendConformance
// when the backend implements both.

import type { AcquireResult, Backend, FastLimit, SlotConfig } from '@fastlimit/core'
import { describe, expect, it } from 'vitest'
import type { FakeClock } from './index'

/** What the lease cases need of the suite. Internal. */
export interface LeaseCaseContext {
  readonly backend: () => Backend
  readonly clock: FakeClock
  /** The key the suite uses for `key` in this test. */
  readonly k: (key: string) => string
  readonly timeout: number
  readonly concurrency: number
  readonly deadlines: boolean
}

/** Options of {@link leaseCrowd}. */
export interface LeaseCrowdOptions {
  /** Acquirers started at once. */
  n: number
  /** The concurrency limit each asks for. */
  limit: number
  /** The `leaseMs` each asks for. */
  leaseMs: number
  /** How long each holds its slot, in milliseconds. */
  holdMs: number
  /** The longest a refused acquirer sleeps before it tries again (it sleeps `retryAfterMs` if shorter). */
  pollMs: number
}

/** What {@link leaseCrowd} saw. */
export interface LeaseCrowdResult {
  /** The most holders at once, as the holders counted themselves. */
  max: number
  /** Acquirers that held a slot and released it (all of them, when it resolves). */
  done: number
  /** Refused attempts, all acquirers together. */
  refusals: number
}

/**
 * Runs `n` acquirers at once against `limiter`: each tries until it gets a slot (sleeping the
 * `retryAfterMs` it is given, at most `pollMs`), holds it for `holdMs`, then releases it. The holders
 * count themselves, so `max` is the most that really held a slot at once (at most `limit` when the
 * backend is exact).
 */
export async function leaseCrowd(
  limiter: FastLimit,
  identity: string,
  options: LeaseCrowdOptions,
): Promise<LeaseCrowdResult> {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
  let holding = 0
  let max = 0
  let done = 0
  let refusals = 0
  await Promise.all(
    Array.from({ length: options.n }, async () => {
      for (;;) {
        const lease = await limiter.acquire(identity, { limit: options.limit, leaseMs: options.leaseMs })
        if (!lease.allowed) {
          refusals++
          await sleep(Math.min(options.pollMs, lease.retryAfterMs))
          continue
        }
        holding++
        if (holding > max) max = holding
        await sleep(options.holdMs)
        holding--
        await lease.release()
        done++
        return
      }
    }),
  )
  return { max, done, refusals }
}

let serial = 0
/** Tokens unique within the run, as FastLimit makes them unique across processes. */
const token = (name: string): string => `${name}.${(++serial).toString(36)}`

/** The lease cases: skipped, with a note, when the backend has no `acquire` or no `release`. */
export function leaseCases(ctx: LeaseCaseContext): void {
  const { clock, k, timeout } = ctx
  const acquire = (key: string, slots: SlotConfig, t: string, deadline?: number): Promise<AcquireResult> => {
    const b = ctx.backend()
    return (b.acquire as NonNullable<Backend['acquire']>).call(
      b,
      k(key),
      slots,
      t,
      deadline === undefined ? undefined : { deadline },
    )
  }
  const release = (key: string, t: string): Promise<boolean> => {
    const b = ctx.backend()
    return (b.release as NonNullable<Backend['release']>).call(b, k(key), t)
  }
  const needs = (skip: (note?: string) => void): void => {
    const b = ctx.backend()
    if (typeof b.acquire !== 'function' || typeof b.release !== 'function')
      skip('the backend has no acquire/release')
  }

  describe('concurrency leases', () => {
    it(
      'grants up to the limit, then refuses with the time until the earliest lease expires',
      async (t) => {
        needs(t.skip)
        const slots = { limit: 3, leaseMs: 1000 }
        const start = clock.now()
        const a = await acquire('l:seq', slots, token('a'))
        clock.advance(10)
        const b = await acquire('l:seq', slots, token('b'))
        clock.advance(10)
        const c = await acquire('l:seq', slots, token('c'))
        expect([a, b, c].map((r) => [r.acquired, r.holders, r.limit, r.retryAfterMs])).toEqual([
          [true, 1, 3, 0],
          [true, 2, 3, 0],
          [true, 3, 3, 0],
        ])
        expect(a.expiresMs).toBe(start + 1000)
        expect(c.expiresMs).toBe(start + 1020)
        clock.advance(5)
        const d = await acquire('l:seq', slots, token('d'))
        expect(d).toMatchObject({ acquired: false, holders: 3, limit: 3, retryAfterMs: 1000 - 25 })
        // A refusal records nothing: the same state a moment later.
        const e = await acquire('l:seq', slots, token('e'))
        expect(e).toMatchObject({ acquired: false, holders: 3 })
        // Another key, and another limit on the same key, count the same holders.
        expect((await acquire('l:other', slots, token('o'))).acquired).toBe(true)
        expect(await acquire('l:seq', { limit: 4, leaseMs: 1000 }, token('f'))).toMatchObject({
          acquired: true,
          holders: 4,
        })
      },
      timeout,
    )

    it(
      'a release frees one slot once; a second release of the same token is false and frees nothing',
      async (t) => {
        needs(t.skip)
        const slots = { limit: 2, leaseMs: 60_000 }
        const a = token('a')
        expect((await acquire('l:rel', slots, a)).acquired).toBe(true)
        expect((await acquire('l:rel', slots, token('b'))).acquired).toBe(true)
        expect((await acquire('l:rel', slots, token('c'))).acquired).toBe(false)
        expect(await release('l:rel', a)).toBe(true)
        expect(await release('l:rel', a)).toBe(false)
        expect(await release('l:rel', token('never'))).toBe(false)
        expect(await acquire('l:rel', slots, token('d'))).toMatchObject({ acquired: true, holders: 2 })
        expect((await acquire('l:rel', slots, token('e'))).acquired).toBe(false)
        expect(await release('l:nothing-here', a)).toBe(false)
      },
      timeout,
    )

    it(
      'a lease that is never released loses its slot exactly leaseMs after it was taken',
      async (t) => {
        needs(t.skip)
        const slots = { limit: 1, leaseMs: 500 }
        expect((await acquire('l:exp', slots, token('a'))).acquired).toBe(true)
        clock.advance(499)
        expect(await acquire('l:exp', slots, token('b'))).toMatchObject({ acquired: false, retryAfterMs: 1 })
        clock.advance(1)
        expect(await acquire('l:exp', slots, token('c'))).toMatchObject({ acquired: true, holders: 1 })
      },
      timeout,
    )

    it(
      'a late release (after expiry) never frees the slot of the holder that took it over',
      async (t) => {
        needs(t.skip)
        const slots = { limit: 1, leaseMs: 100 }
        const a = token('a')
        expect((await acquire('l:late', slots, a)).acquired).toBe(true)
        clock.advance(100)
        const b = token('b')
        expect((await acquire('l:late', slots, b)).acquired).toBe(true)
        expect(await release('l:late', a)).toBe(false)
        expect(await acquire('l:late', slots, token('c'))).toMatchObject({ acquired: false, holders: 1 })
        expect(await release('l:late', b)).toBe(true)
        expect((await acquire('l:late', slots, token('d'))).acquired).toBe(true)
      },
      timeout,
    )

    it(
      'the retry time is that of the earliest expiry, whatever the order of leaseMs',
      async (t) => {
        needs(t.skip)
        expect((await acquire('l:order', { limit: 2, leaseMs: 5000 }, token('long'))).acquired).toBe(true)
        expect((await acquire('l:order', { limit: 2, leaseMs: 300 }, token('short'))).acquired).toBe(true)
        expect(await acquire('l:order', { limit: 2, leaseMs: 1000 }, token('x'))).toMatchObject({
          acquired: false,
          retryAfterMs: 300,
        })
        clock.advance(300)
        expect(await acquire('l:order', { limit: 2, leaseMs: 1000 }, token('y'))).toMatchObject({
          acquired: true,
          holders: 2,
        })
        expect(await acquire('l:order', { limit: 2, leaseMs: 1000 }, token('z'))).toMatchObject({
          acquired: false,
          retryAfterMs: 1000,
        })
      },
      timeout,
    )

    it(
      'leases are apart from rate-limit state under the same key',
      async (t) => {
        needs(t.skip)
        const b = ctx.backend()
        const bucket = { algorithm: 'fixed-window' as const, limit: 1, windowMs: 60_000 }
        expect((await acquire('l:apart', { limit: 1, leaseMs: 60_000 }, token('a'))).acquired).toBe(true)
        expect((await b.checkAndIncrement(k('l:apart'), bucket, 1)).allowed).toBe(true)
        expect((await b.checkAndIncrement(k('l:apart'), bucket, 1)).allowed).toBe(false)
        expect((await acquire('l:apart', { limit: 2, leaseMs: 60_000 }, token('b'))).acquired).toBe(true)
      },
      timeout,
    )

    it(
      'rejects a bad token or slot configuration with ERR_FASTLIMIT_ARGUMENT',
      async (t) => {
        needs(t.skip)
        const bad = [
          { limit: 0, leaseMs: 1000 },
          { limit: 1.5, leaseMs: 1000 },
          { limit: 1, leaseMs: 0 },
          { limit: 1, leaseMs: Number.NaN },
        ]
        for (const slots of bad) {
          await expect(acquire('l:bad', slots, token('a'))).rejects.toMatchObject({
            code: 'ERR_FASTLIMIT_ARGUMENT',
          })
        }
        for (const t2 of ['', 'has space', 'x'.repeat(129), 'ü']) {
          await expect(acquire('l:bad', { limit: 1, leaseMs: 1000 }, t2)).rejects.toMatchObject({
            code: 'ERR_FASTLIMIT_ARGUMENT',
          })
        }
        expect((await acquire('l:bad', { limit: 1, leaseMs: 1000 }, token('ok'))).acquired).toBe(true)
      },
      timeout,
    )

    it(
      `grants exactly the limit under ${ctx.concurrency} concurrent acquires, and exactly the released slots again`,
      async (t) => {
        needs(t.skip)
        const n = ctx.concurrency
        const limit = Math.max(1, Math.floor(n / 10))
        const slots = { limit, leaseMs: 60_000 }
        const tokens = Array.from({ length: n }, (_, i) => token(`c${i}`))
        const results = await Promise.all(tokens.map((tk) => acquire('l:atomic', slots, tk)))
        const held = tokens.filter((_, i) => (results[i] as AcquireResult).acquired)
        expect(held).toHaveLength(limit)
        expect(new Set(results.filter((r) => r.acquired).map((r) => r.holders)).size).toBe(limit)
        // Half the holders release while everyone else tries again: exactly that many get in.
        const leaving = held.slice(0, Math.ceil(limit / 2))
        const again = tokens.filter((tk) => !held.includes(tk))
        const [released, retried] = await Promise.all([
          Promise.all(leaving.map((tk) => release('l:atomic', tk))),
          Promise.all(again.map((tk) => acquire('l:atomic', slots, tk))),
        ])
        expect(released.every((r) => r)).toBe(true)
        // Whatever the interleaving, the slots taken again are exactly the slots freed.
        let got = retried.filter((r) => r.acquired).length
        let last: AcquireResult
        for (;;) {
          last = await acquire('l:atomic', slots, token('fill'))
          if (!last.acquired) break
          got++
        }
        expect(got).toBe(leaving.length)
        expect(last.holders).toBe(limit)
      },
      timeout,
    )

    if (ctx.deadlines) {
      it(
        'refuses an acquire whose deadline has passed, and records nothing',
        async (t) => {
          needs(t.skip)
          const slots = { limit: 1, leaseMs: 60_000 }
          await expect(acquire('l:deadline', slots, token('late'), Date.now() - 1)).rejects.toMatchObject({
            code: 'ERR_FASTLIMIT_TIMEOUT',
          })
          expect(await acquire('l:deadline', slots, token('on-time'), Date.now() + 60_000)).toMatchObject({
            acquired: true,
            holders: 1,
          })
        },
        timeout,
      )
    }
  })
}
