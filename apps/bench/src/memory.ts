// In-process: FastLimit.check on MemoryBackend beside rate-limiter-flexible's RateLimiterMemory,
// express-rate-limit's MemoryStore and a plain Map fixed-window counter (the floor).
//
// Each case runs in a process of its own (memory-child.ts), one slice per round, round-robin: a real
// app uses one limiter, and measuring six algorithms and three libraries in one process would let
// each one's code make the JIT's shared call sites slower for the others.
//
// Each case imports only its own library, when it is made: under callgrind a process then loads what its
// case runs, and nothing else.
import { ALGORITHMS } from '@fastlimit/core'

const KEYS = 10_000
export const ROTATING = 'rotating keys (10,000), allowed'
export const HOT = 'one hot key, allowed'
export const DENIED = 'one hot key, denied'

/** A case as listed in the report; `make` builds its operation (only in the child that runs it). */
export interface MemoryCase {
  id: string
  name: string
  group: string
  kind: 'fastlimit' | 'peer' | 'floor'
  make: () => Promise<(n: number) => Promise<void>>
}

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

function loop(fn: (key: string) => Promise<unknown>, group: string): (n: number) => Promise<void> {
  const keys = Array.from({ length: KEYS }, (_, i) => `user-${i}`)
  const rotating = group === ROTATING
  let i = 0
  return async (n) => {
    for (let j = 0; j < n; j++) await fn(rotating ? (keys[i++ % KEYS] as string) : 'hot')
  }
}

// Huge limits on the allowed paths so nothing is ever denied; 1 per hour on the denied path.
const ALLOW = { limit: 1_000_000_000, window: '1m' }
const DENY = { limit: 1, window: '1h' }

export function memoryCases(): MemoryCase[] {
  const cases: MemoryCase[] = []
  for (const group of [ROTATING, HOT, DENIED]) {
    for (const algorithm of ALGORITHMS) {
      cases.push({
        id: `fastlimit-${algorithm}-${group}`,
        name: `fastlimit ${algorithm}`,
        group,
        kind: 'fastlimit',
        make: async () => {
          const { FastLimit } = await import('@fastlimit/core')
          const limiter = new FastLimit({ algorithm })
          const allow = algorithm === 'sliding-log' ? { limit: 100_000, window: '1s' } : ALLOW
          const rules = limiter.rules(group === DENIED ? DENY : allow)
          return loop((k) => limiter.check(k, rules), group)
        },
      })
    }
    cases.push({
      id: `rlf-${group}`,
      name: 'rate-limiter-flexible consume',
      group,
      kind: 'peer',
      make: async () => {
        const { RateLimiterMemory } = await import('rate-limiter-flexible')
        if (group === DENIED) {
          const rlf = new RateLimiterMemory({ points: 1, duration: 3600 })
          // Its denied path rejects the promise with a RateLimiterRes (not an Error).
          return loop((k) => rlf.consume(k).catch(() => false), group)
        }
        const rlf = new RateLimiterMemory({ points: 1_000_000_000, duration: 60 })
        return loop((k) => rlf.consume(k), group)
      },
    })
    if (group !== DENIED) {
      cases.push({
        id: `erl-${group}`,
        name: 'express-rate-limit MemoryStore.increment',
        group,
        kind: 'peer',
        make: async () => {
          const { MemoryStore } = await import('express-rate-limit')
          const store = new MemoryStore()
          store.init({ windowMs: 60_000 } as never)
          return loop((k) => store.increment(k), group)
        },
      })
    }
    cases.push({
      id: `floor-${group}`,
      name: 'Map fixed-window floor',
      group,
      kind: 'floor',
      make: async () =>
        loop(group === DENIED ? mapFloor(0, 3_600_000) : mapFloor(1_000_000_000, 60_000), group),
    })
  }
  return cases
}
