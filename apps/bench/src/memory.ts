// In-process: FastLimit.check on MemoryBackend beside rate-limiter-flexible's RateLimiterMemory,
// express-rate-limit's MemoryStore and a plain Map fixed-window counter (the floor).
import { ALGORITHMS, type Algorithm, FastLimit } from '@fastlimit/core'
import { MemoryStore } from 'express-rate-limit'
import { RateLimiterMemory } from 'rate-limiter-flexible'
import type { Case } from './harness'

const KEYS = 10_000
const keys = Array.from({ length: KEYS }, (_, i) => `user-${i}`)

/** A plain Map fixed-window counter in an async function: the least any limiter can do. */
function mapFloor(limit: number, windowMs: number) {
  const map = new Map<string, { count: number; resetAt: number }>()
  return async (key: string): Promise<boolean> => {
    const now = Date.now()
    let e = map.get(key)
    if (e === undefined || e.resetAt <= now) {
      e = { count: 0, resetAt: now + windowMs }
      map.set(key, e)
    }
    e.count++
    return e.count <= limit
  }
}

function loop(fn: (key: string) => Promise<unknown>, rotating: boolean): (n: number) => Promise<void> {
  let i = 0
  return async (n) => {
    for (let j = 0; j < n; j++) {
      await fn(rotating ? (keys[i++ % KEYS] as string) : 'hot')
    }
  }
}

export function memoryCases(algorithms: readonly Algorithm[] = ALGORITHMS): Case[] {
  const cases: Case[] = []
  // Huge limits on the allowed paths so nothing is ever denied; 1/hour on the denied path.
  const allow = { limit: 1_000_000_000, window: '1m' }
  const deny = { limit: 1, window: '1h' }
  for (const algorithm of algorithms) {
    const limiter = new FastLimit({ algorithm })
    const allowRules = limiter.rules(algorithm === 'sliding-log' ? { limit: 100_000, window: '1s' } : allow)
    const denyRules = limiter.rules(deny)
    cases.push({
      name: `fastlimit ${algorithm}`,
      group: 'rotating keys (10,000), allowed',
      kind: 'fastlimit',
      run: loop((k) => limiter.check(k, allowRules), true),
    })
    cases.push({
      name: `fastlimit ${algorithm}`,
      group: 'one hot key, allowed',
      kind: 'fastlimit',
      run: loop((k) => limiter.check(k, allowRules), false),
    })
    cases.push({
      name: `fastlimit ${algorithm}`,
      group: 'one hot key, denied',
      kind: 'fastlimit',
      run: loop((k) => limiter.check(`deny-${k}`, denyRules), false),
    })
  }
  const rlf = new RateLimiterMemory({ points: 1_000_000_000, duration: 60 })
  const rlfDeny = new RateLimiterMemory({ points: 1, duration: 3600, keyPrefix: 'deny' })
  cases.push({
    name: 'rate-limiter-flexible consume',
    group: 'rotating keys (10,000), allowed',
    kind: 'peer',
    run: loop((k) => rlf.consume(k), true),
  })
  cases.push({
    name: 'rate-limiter-flexible consume',
    group: 'one hot key, allowed',
    kind: 'peer',
    run: loop((k) => rlf.consume(k), false),
  })
  cases.push({
    name: 'rate-limiter-flexible consume',
    group: 'one hot key, denied',
    kind: 'peer',
    // Its denied path rejects the promise with a RateLimiterRes (not an Error).
    run: loop((k) => rlfDeny.consume(k).catch(() => false), false),
  })
  const erl = new MemoryStore()
  erl.init({ windowMs: 60_000 } as never)
  cases.push({
    name: 'express-rate-limit MemoryStore.increment',
    group: 'rotating keys (10,000), allowed',
    kind: 'peer',
    run: loop((k) => erl.increment(k), true),
  })
  cases.push({
    name: 'express-rate-limit MemoryStore.increment',
    group: 'one hot key, allowed',
    kind: 'peer',
    run: loop((k) => erl.increment(k), false),
  })
  const floor = mapFloor(1_000_000_000, 60_000)
  const floorDeny = mapFloor(0, 3_600_000)
  cases.push({
    name: 'Map fixed-window floor',
    group: 'rotating keys (10,000), allowed',
    kind: 'floor',
    run: loop(floor, true),
  })
  cases.push({
    name: 'Map fixed-window floor',
    group: 'one hot key, allowed',
    kind: 'floor',
    run: loop(floor, false),
  })
  cases.push({
    name: 'Map fixed-window floor',
    group: 'one hot key, denied',
    kind: 'floor',
    run: loop(floorDeny, false),
  })
  return cases
}
