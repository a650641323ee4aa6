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
  /** The algorithms this store applies (the names of its `steps`). */
  readonly algorithms: readonly Algorithm[]
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
  const fail = (what: string): never => {
    throw new ConfigError(`[fastlimit] [memory] ${what}`)
  }
  if (typeof options !== 'object' || options === null)
    fail(`Options must be an object, got ${show(options)}.`)
  const { maxKeys = 10_000, steps = { gcra }, clock = Date.now, ...rest } = options
  for (const name of Object.keys(rest))
    fail(`Unknown option ${show(name)}: liteMemoryBackend takes maxKeys, steps and clock.`)
  if (!Number.isSafeInteger(maxKeys) || maxKeys < 1 || maxKeys > 2 ** 30)
    fail(`maxKeys must be a whole number from 1 to 1073741824, got ${show(maxKeys)}. For example 10000.`)
  if (typeof clock !== 'function')
    fail('clock must be a function returning epoch milliseconds, e.g. Date.now.')
  const algorithms = Object.keys(steps) as Algorithm[]
  if (algorithms.length === 0 || algorithms.some((a) => typeof steps[a] !== 'function'))
    fail(`steps must map algorithm names to step functions, got ${show(steps)}: e.g. { gcra }.`)
  const slots = new Map<string, Slot>()

  /** The states of `buckets` under `key` at `now` (expired ones as none), and the key's slot. */
  const read = (key: string, buckets: readonly BucketConfig[], now: number) => {
    const slot = slots.get(key)
    const states: (State | undefined)[] = []
    for (const b of buckets) {
      if (steps[b.algorithm] === undefined)
        fail(
          `This store has no '${b.algorithm}' step (it has ${algorithms.join(', ')}): pass it in steps, ` +
            `e.g. liteMemoryBackend({ steps: { gcra, ... } }), or use the full entry's MemoryBackend.`,
        )
      const e = slot?.get(bucketId(b))
      states.push(e !== undefined && e.exp > now ? e.state : undefined)
    }
    return states
  }

  /** Writes the outputs that must be kept and marks the key most recently used; evicts the oldest. */
  const write = (
    key: string,
    buckets: readonly BucketConfig[],
    outs: readonly StepOutput[],
    charged: boolean,
    now: number,
  ) => {
    let slot = slots.get(key)
    for (let i = 0; i < buckets.length; i++) {
      const out = outs[i] as StepOutput
      if (!charged && !out.rebased) continue
      if (slot === undefined) slot = new Map()
      slot.set(bucketId(buckets[i] as BucketConfig), { state: out.state, exp: now + out.ttlMs })
    }
    if (slot === undefined) return
    slots.delete(key)
    slots.set(key, slot)
    if (slots.size > maxKeys) slots.delete(slots.keys().next().value as string)
  }

  const all = (key: string, buckets: readonly BucketConfig[], cost: number): BackendResult[] => {
    const now = Math.floor(clock())
    const out = stepAllWith(steps, read(key, buckets, now), now, buckets, cost)
    write(key, buckets, out.outputs, out.allowed, now)
    return out.results
  }
  const one = (key: string, bucket: BucketConfig, cost: number): BackendResult =>
    all(key, [bucket], cost)[0] as BackendResult

  return {
    kind: 'memory',
    algorithms,
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
