// Reservations on a real Redis: core's reservation properties (fast-check sequences of reserve / settle /
// cancel / refund / concurrent checks against the reference model, on the suite's fake clock) on standalone
// Redis and on a Cluster; and, on the server's own TIME, 1,000 concurrent reserve + settle per algorithm
// keeping the totals exact, through FastLimit and RedisBackend as an application runs them.
import { ALGORITHMS, FastLimit, type RuleObject } from '@fastlimit/core'
import { reservationProperties } from '@fastlimit/core/testing'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { RedisBackend } from '../src'
import { backendOn, type Topology } from './helpers'

/** The properties on `topology` (client time driven by the suite's clock), keys under their own prefix. */
function properties(topology: Topology, runs: number): void {
  reservationProperties({
    name: `RedisBackend (${topology})`,
    make: (clock) =>
      backendOn(topology, {
        keyPrefix: `reservations-${topology}:`,
        timeSource: 'client',
        clock,
        // The suite's clock jumps ahead of real time: keys must not expire (by real time) under it.
        expiryMarginMs: 3_600_000,
      }),
    destroy: async (backend) => {
      await backend.clear()
      await backend.close()
    },
    runs,
  })
}

properties('standalone', 100)
properties('cluster', 25)

/** A year: no window boundary or noticeable drain during the test, on the server's real clock. */
const YEAR_MS = 365 * 86_400_000
const CALLS = 1000

for (const topology of ['standalone', 'cluster'] as const) {
  describe(`1,000 concurrent reserve + settle on the server's TIME (${topology})`, () => {
    let backend: RedisBackend
    let limiter: FastLimit
    beforeAll(() => {
      backend = backendOn(topology, { keyPrefix: `reservations-time-${topology}:` })
      limiter = new FastLimit({ backend, onBackendError: 'throw', timeoutMs: 30_000, breaker: false })
    })
    afterAll(async () => {
      await backend.clear()
      await backend.close()
    })

    for (const algorithm of ALGORITHMS) {
      it(`${algorithm}: every settle counts once, lower, equal and higher`, async () => {
        const rules = { limit: CALLS * 10, windowMs: YEAR_MS, algorithm } as RuleObject
        const identity = `concurrent-${algorithm}`
        let kept = 0
        const outcomes = await Promise.all(
          Array.from({ length: CALLS }, async (_, i) => {
            const r = await limiter.reserve(identity, rules, { cost: 5 })
            expect(r.allowed).toBe(true)
            // Refunds (0 cancels), an equal settle, extra charges.
            const actual = i % 9
            kept += actual
            return (await r.settle(actual)).outcome
          }),
        )
        // An equal settle changes nothing (and sends nothing).
        const equal = outcomes.filter((_, i) => i % 9 === 5)
        expect(new Set(equal)).toEqual(new Set(['unchanged']))
        expect(outcomes.filter((o) => o === 'adjusted')).toHaveLength(CALLS - equal.length)
        const left = (await limiter.peek(identity, rules)).remaining
        expect(left).toBe(CALLS * 10 - kept)
        // A refund without a reservation gives back from what is held now.
        await limiter.refund(identity, rules, 100)
        expect((await limiter.peek(identity, rules)).remaining).toBe(CALLS * 10 - kept + 100)
      })
    }
  })
}
