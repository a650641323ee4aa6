// The lite entry's in-memory store: a bounded LRU map of algorithm states, lazy expiry, no timer.

import { gcra } from '../algorithms/gcra'
import { stepAllWith } from '../algorithms/step-all'
import type { State, StepFunction, StepOutput } from '../algorithms/types'
import { type Algorithm, type BackendResult, type BucketConfig, bucketId, type SyncBackend } from '../backend'
import { ConfigError, show } from '../errors'

/** Options of {@link liteMemoryBackend}. */
export interface LiteMemoryBackendOptions {
  /**
   * The most keys (identities) kept. When full, the least recently charged key goes: memory stays
   * bounded however many distinct identities arrive.
   * @default 10_000
   */
  maxKeys?: number
  /**
   * The step functions the store applies, by algorithm name: only these are bundled. A rule of another
   * algorithm fails with a `ConfigError` naming it.
   * @default { gcra }
   * @example
   * ```ts
   * import { gcra, slidingWindow } from '@fastlimit/core/lite'
   * liteMemoryBackend({ steps: { gcra, 'sliding-window': slidingWindow } })
   * ```
   */
  steps?: Readonly<Partial<Record<Algorithm, StepFunction>>>
  /**
   * The clock, in epoch milliseconds. Inject one in tests.
   * @default Date.now
   */
  clock?: () => number
}

/** What {@link liteMemoryBackend} returns: a backend with the synchronous fast path, and its size. */
export interface LiteMemoryBackend extends SyncBackend {
  /** How many keys are held now (expired ones not yet dropped included). */
  readonly size: number
  /** Decides at once: never `undefined`. */
  checkAndIncrementSync(key: string, bucket: BucketConfig, cost: number): BackendResult
  /** Decides at once: never `undefined`. */
  checkAndIncrementAllSync(key: string, buckets: readonly BucketConfig[], cost: number): BackendResult[]
}

/** One key's buckets: per bucket id, its state and the epoch ms at which it means the same as none. */
type Slot = Map<string, { state: State; exp: number }>

/**
 * A small in-memory backend for edge bundles (`@fastlimit/hono/lite`): per process, bounded to
 * `maxKeys` keys (least recently charged out first), expired states ignored (and overwritten),
 * no timer at all (nothing runs at construction, so it may be built at module scope on Workers).
 * `checkAndIncrement` and `checkAndIncrementAll` (and their synchronous twins), `reset` and `clear`;
 * only the algorithms of `steps` (gcra by default). For the full protocol, use `MemoryBackend`.
 *
 * @example
 * ```ts
 * const backend = liteMemoryBackend({ maxKeys: 50_000 })
 * ```
 */
export function liteMemoryBackend(options: LiteMemoryBackendOptions = {}): LiteMemoryBackend {
  const { maxKeys = 10_000, steps = { gcra }, clock = Date.now } = options
  const names = Object.keys(steps) as Algorithm[]
  if (
    !(Number.isSafeInteger(maxKeys) && maxKeys > 0 && maxKeys <= 2 ** 30) ||
    typeof clock !== 'function' ||
    names.length === 0 ||
    names.some((a) => typeof steps[a] !== 'function')
  )
    throw new ConfigError(
      `[fastlimit] [memory] liteMemoryBackend takes maxKeys (1 to 2^30), steps ({ gcra, ... }) and clock (() => epoch ms), got ${show(options)}.`,
    )
  const slots = new Map<string, Slot>()

  /**
   * Steps every bucket of `key` at once (expired states read as none), writes the outputs that must be
   * kept, marks the key most recently used and evicts the least recently used one past `maxKeys`.
   */
  const all = (key: string, buckets: readonly BucketConfig[], cost: number): BackendResult[] => {
    const now = Math.floor(clock())
    let slot = slots.get(key)
    const states: (State | undefined)[] = []
    for (const b of buckets) {
      if (steps[b.algorithm] === undefined)
        throw new ConfigError(
          `[fastlimit] [memory] This store has no '${b.algorithm}' step: add it to liteMemoryBackend's steps, or use MemoryBackend.`,
        )
      const e = slot?.get(bucketId(b))
      states.push(e !== undefined && e.exp > now ? e.state : undefined)
    }
    const { allowed, outputs, results } = stepAllWith(steps, states, now, buckets, cost)
    for (let i = 0; i < buckets.length; i++) {
      const out = outputs[i] as StepOutput
      if (!allowed && !out.rebased) continue
      if (slot === undefined) slot = new Map()
      slot.set(bucketId(buckets[i] as BucketConfig), { state: out.state, exp: now + out.ttlMs })
    }
    if (slot !== undefined) {
      slots.delete(key)
      slots.set(key, slot)
      if (slots.size > maxKeys) slots.delete(slots.keys().next().value as string)
    }
    return results
  }
  const one = (key: string, bucket: BucketConfig, cost: number): BackendResult =>
    all(key, [bucket], cost)[0] as BackendResult

  return {
    kind: 'memory',
    get size() {
      return slots.size
    },
    checkAndIncrementSync: one,
    checkAndIncrementAllSync: all,
    checkAndIncrement: (key, bucket, cost) => new Promise((resolve) => resolve(one(key, bucket, cost))),
    checkAndIncrementAll: (key, buckets, cost) => new Promise((resolve) => resolve(all(key, buckets, cost))),
    reset: (key) => {
      slots.delete(key)
      return Promise.resolve()
    },
    clear: () => {
      slots.clear()
      return Promise.resolve()
    },
    close: () => Promise.resolve(),
  }
}
