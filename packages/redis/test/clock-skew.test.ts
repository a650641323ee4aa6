// timeSource 'client' with two app servers whose clocks are 2 minutes apart, requests going round-robin:
// each algorithm admits no more than its documented bound (the single-clock bound over the run's length
// plus the skew), where a state rebased by the clock behind once turned the skew into no limit at all.
import { ALGORITHMS, type Algorithm, FastLimit, type RuleInput } from '@fastlimit/core'
import { describe, expect, it } from 'vitest'
import { RedisBackend } from '../src'
import { urlOf } from './helpers'

const SKEW_MS = 120_000
const LIMIT = 10
const WINDOW_MS = 60_000
const REQUESTS = 200
const METERS = new Set<Algorithm>(['gcra', 'token-bucket', 'leaky-bucket'])

/**
 * The most a limit shared by clocks up to `skewMs` apart may admit over `durationMs` of real time: the
 * algorithm's single-clock bound over `durationMs + skewMs` (README, "Time").
 */
function skewBound(algorithm: Algorithm, durationMs: number, skewMs: number): number {
  const span = durationMs + skewMs
  if (METERS.has(algorithm)) return LIMIT + Math.floor((LIMIT * span) / WINDOW_MS)
  if (algorithm === 'sliding-log') return LIMIT * Math.max(1, Math.ceil(span / WINDOW_MS))
  // fixed-window and sliding-window: at most the limit in each aligned window the clocks touch.
  return LIMIT * (Math.ceil(span / WINDOW_MS) + 1)
}

async function roundRobin(
  algorithm: Algorithm,
): Promise<{ admitted: number; bound: number; perServer: number[] }> {
  const keyPrefix = `skew-${algorithm}`
  const backends = [0, SKEW_MS].map((offset) =>
    RedisBackend.fromUrl(urlOf('standalone'), {
      keyPrefix,
      timeSource: 'client',
      clock: () => Date.now() + offset,
    }),
  )
  try {
    await backends[0]?.clear()
    const limiters = backends.map(
      (backend) => new FastLimit({ backend, prefix: 'app', onBackendError: 'throw' }),
    )
    const rule: RuleInput = { limit: LIMIT, window: WINDOW_MS, algorithm }
    const perServer = [0, 0]
    const start = Date.now()
    for (let i = 0; i < REQUESTS; i++) {
      const d = await (limiters[i % 2] as FastLimit).check('user', rule)
      if (d.allowed) perServer[i % 2] = (perServer[i % 2] as number) + 1
    }
    const bound = skewBound(algorithm, Date.now() - start, SKEW_MS)
    return { admitted: (perServer[0] as number) + (perServer[1] as number), bound, perServer }
  } finally {
    for (const b of backends) {
      await b.clear()
      await b.close()
    }
  }
}

describe(`two clocks ${SKEW_MS / 60_000} minutes apart, requests round-robin, ${LIMIT} per minute`, () => {
  for (const algorithm of ALGORITHMS) {
    it(`${algorithm}: admits within the documented bound`, async () => {
      const { admitted, bound, perServer } = await roundRobin(algorithm)
      expect(
        admitted,
        `${algorithm}: ${JSON.stringify(perServer)} of ${REQUESTS}, bound ${bound}`,
      ).toBeLessThanOrEqual(bound)
      // And the limit is shared, not refused: at least the limit got through.
      expect(admitted).toBeGreaterThanOrEqual(LIMIT)
    })
  }
})
