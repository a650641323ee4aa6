// MemoryBackend: the default store, a bounded LRU of algorithm states with lazy expiry and no timer per key.
//
// Layout: keys live in slots of typed arrays (expiry, LRU links, the first bucket's state) rather than
// in one object each, so a million keys cost the GC almost nothing and a decision touches few cache
// lines. A Map per key prefix maps the identity to its slot.

import { algorithms, stepAll } from './algorithms'
import type { StepOutput } from './algorithms/types'
import { type BackendResult, type BucketConfig, bucketId, type SyncBackend } from './backend'
import { ConfigError, checkPositiveCost, checkTimerMs, FastlimitError, show } from './errors'

/** Options of {@link MemoryBackend}. */
export interface MemoryBackendOptions {
  /**
   * The most keys (identities) kept. When full, the least recently used key is dropped, so memory
   * stays bounded however many distinct identities arrive (under 100 bytes per key; see the README).
   * @default 1_000_000
   */
  maxKeys?: number
  /**
   * How often an `unref`ed timer sweeps out expired keys, in milliseconds; `0` disables the sweep
   * (expired keys are then reused when touched and dropped when evicted).
   * @default 60_000
   */
  cleanupIntervalMs?: number
  /**
   * The clock, in epoch milliseconds. Inject one in tests.
   * @default Date.now
   */
  clock?: () => number
}

const SWEEP_BATCH = 10_000
/** The space of keys that are not shaped `prefix:{identity}` (a prefix is never empty). */
const RAW = ''
/** Numbers of state stored inline per slot; longer states (sliding-log) go to the slot's extras. */
const STRIDE = 3
const NONE = -1
const INITIAL_CAPACITY = 1024

type Space = Map<string, number>

/** Friend access for FastLimit: the slot map of a key prefix, so it can decide without building a key. */
export let spaceOf: (backend: MemoryBackend, prefix: string) => Space
/** Friend access for FastLimit: decides on (space, identity) without building the key string. */
export let checkIn: (
  backend: MemoryBackend,
  space: Space,
  name: string,
  bucket: BucketConfig,
  cost: number,
) => BackendResult
/** As {@link checkIn}, for several buckets all-or-nothing. */
export let checkAllIn: (
  backend: MemoryBackend,
  space: Space,
  name: string,
  buckets: readonly BucketConfig[],
  cost: number,
) => BackendResult[]

/**
 * The in-memory backend, the default of `FastLimit`. Each process has its own counts: use it for one
 * process, or as the fallback of a shared backend.
 *
 * - Bounded: at most `maxKeys` keys; when full, the least recently used key goes.
 * - No timer per key: expired keys are dropped by one `unref`ed sweep (and reused when written again).
 * - Atomic by construction: JavaScript runs each call to completion.
 *
 * @example
 * ```ts
 * const limiter = new FastLimit({ backend: new MemoryBackend({ maxKeys: 100_000 }) })
 * ```
 */
export class MemoryBackend implements SyncBackend {
  /** The kind of store, for messages and metrics. */
  readonly kind = 'memory'
  readonly #spaces = new Map<string, Space>()
  readonly #maxKeys: number
  readonly #clock: () => number
  readonly #wallClock: boolean
  #size = 0
  #capacity = 0
  /** Slots: the identity, its space, the first bucket's id, extra buckets, and typed columns. */
  #names: Array<string | undefined> = []
  #owners: Array<Space | undefined> = []
  #buckets: Array<string | undefined> = []
  #extras: Array<Map<string, number[]> | undefined> = []
  #expires = new Float64Array(0)
  #prev = new Int32Array(0)
  #next = new Int32Array(0)
  /** Length of the inline state of each slot (0: none). */
  #lens = new Uint8Array(0)
  #data = new Float64Array(0)
  #free: number[] = []
  #head = NONE
  #tail = NONE
  readonly #scratch: number[][] = [[], [0], [0, 0], [0, 0, 0]]
  #timer: ReturnType<typeof setInterval> | undefined
  #sweeping = false
  #closed = false

  static {
    spaceOf = (backend, prefix) => backend.#space(prefix)
    checkIn = (backend, space, name, bucket, cost) => backend.#check(space, name, bucket, cost)
    checkAllIn = (backend, space, name, buckets, cost) => backend.#checkAll(space, name, buckets, cost)
  }

  constructor(options: MemoryBackendOptions = {}) {
    const { maxKeys = 1_000_000, cleanupIntervalMs = 60_000, clock = Date.now, ...rest } = options
    for (const key of Object.keys(rest)) {
      throw new ConfigError(
        `[fastlimit] [memory] Unknown option ${show(key)}: MemoryBackend takes maxKeys, cleanupIntervalMs and clock.`,
      )
    }
    if (!Number.isSafeInteger(maxKeys) || maxKeys < 1 || maxKeys > 2 ** 30) {
      throw new ConfigError(
        `[fastlimit] [memory] maxKeys must be a whole number from 1 to 1073741824, got ${show(maxKeys)}. For example 100000.`,
      )
    }
    checkTimerMs('memory', 'cleanupIntervalMs', cleanupIntervalMs, true, '60000')
    if (typeof clock !== 'function') {
      throw new ConfigError(
        '[fastlimit] [memory] clock must be a function returning epoch milliseconds, e.g. Date.now.',
      )
    }
    this.#maxKeys = maxKeys
    this.#clock = clock
    this.#wallClock = clock === Date.now
    this.#grow(Math.min(INITIAL_CAPACITY, maxKeys))
    if (cleanupIntervalMs > 0) {
      this.#timer = setInterval(() => this.sweep(), cleanupIntervalMs)
      // Never keep the process alive for a sweep (absent on some edge runtimes).
      ;(this.#timer as { unref?: () => void }).unref?.()
    }
  }

  /** How many keys are held now (expired ones not yet swept included). */
  get size(): number {
    return this.#size
  }

  #now(): number {
    return this.#wallClock ? Date.now() : Math.floor(this.#clock())
  }

  #grow(capacity: number): void {
    const old = this.#capacity
    const copy = <T extends Float64Array | Int32Array | Uint8Array>(
      a: T,
      make: (n: number) => T,
      per = 1,
    ): T => {
      const b = make(capacity * per)
      b.set(a)
      return b
    }
    this.#expires = copy(this.#expires, (n) => new Float64Array(n))
    this.#prev = copy(this.#prev, (n) => new Int32Array(n))
    this.#next = copy(this.#next, (n) => new Int32Array(n))
    this.#lens = copy(this.#lens, (n) => new Uint8Array(n))
    this.#data = copy(this.#data, (n) => new Float64Array(n), STRIDE)
    for (let i = old; i < capacity; i++) {
      this.#names.push(undefined)
      this.#owners.push(undefined)
      this.#buckets.push(undefined)
      this.#extras.push(undefined)
    }
    // Hand out low slots first.
    for (let i = capacity - 1; i >= old; i--) this.#free.push(i)
    this.#capacity = capacity
  }

  #space(prefix: string): Space {
    let space = this.#spaces.get(prefix)
    if (space === undefined) {
      space = new Map()
      this.#spaces.set(prefix, space)
    }
    return space
  }

  /** Splits `prefix:{identity}` into its space and name; any other key lives in the raw space. */
  #split(key: string): [Space, string] {
    const open = key.indexOf('{')
    if (open > 1 && key.charCodeAt(open - 1) === 0x3a && key.charCodeAt(key.length - 1) === 0x7d) {
      const name = key.slice(open + 1, -1)
      if (name.indexOf('{') === -1 && name.indexOf('}') === -1)
        return [this.#space(key.slice(0, open - 1)), name]
    }
    return [this.#space(RAW), key]
  }

  #unlink(s: number): void {
    const prev = this.#prev
    const next = this.#next
    const p = prev[s] as number
    const n = next[s] as number
    if (p === NONE) this.#head = n
    else next[p] = n
    if (n === NONE) this.#tail = p
    else prev[n] = p
  }

  #pushFront(s: number): void {
    const h = this.#head
    this.#prev[s] = NONE
    this.#next[s] = h
    if (h === NONE) this.#tail = s
    else this.#prev[h] = s
    this.#head = s
  }

  #delete(s: number): void {
    this.#unlink(s)
    // A sweep walking the list must not follow a freed slot's stale links.
    this.#prev[s] = NONE
    this.#next[s] = NONE
    this.#owners[s]?.delete(this.#names[s] as string)
    this.#names[s] = undefined
    this.#owners[s] = undefined
    this.#buckets[s] = undefined
    this.#extras[s] = undefined
    this.#lens[s] = 0
    this.#free.push(s)
    this.#size--
  }

  /**
   * The slot of a key, marked most recently used, or NONE. An expired slot is read as it is: every
   * algorithm treats a state whose time has passed as no state, so nothing is erased by a read (a
   * clock that then steps back still finds the counts). Expired slots are reused by the next write
   * and dropped by the sweep.
   */
  #get(space: Space, name: string): number {
    const s = space.get(name)
    if (s === undefined) return NONE
    if (this.#head !== s) {
      this.#unlink(s)
      this.#pushFront(s)
    }
    return s
  }

  #create(space: Space, name: string): number {
    if (this.#size >= this.#maxKeys && this.#tail !== NONE) this.#delete(this.#tail)
    if (this.#free.length === 0) this.#grow(Math.min(this.#maxKeys, this.#capacity * 2))
    const s = this.#free.pop() as number
    space.set(name, s)
    this.#names[s] = name
    this.#owners[s] = space
    this.#buckets[s] = undefined
    this.#extras[s] = undefined
    this.#lens[s] = 0
    this.#expires[s] = 0
    this.#size++
    this.#pushFront(s)
    return s
  }

  /** The state of `bucket` in slot `s`, or undefined. Inline states come back in a reused scratch array. */
  #read(s: number, bucket: string): number[] | undefined {
    if (s === NONE) return undefined
    const len = this.#lens[s] as number
    if (len !== 0 && this.#buckets[s] === bucket) {
      const out = this.#scratch[len] as number[]
      const base = s * STRIDE
      const data = this.#data
      for (let i = 0; i < len; i++) out[i] = data[base + i] as number
      return out
    }
    return this.#extras[s]?.get(bucket)
  }

  #write(s: number, bucket: string, out: StepOutput, now: number): void {
    if ((this.#expires[s] as number) <= now) {
      // Every state of an expired slot is stale: start it afresh.
      this.#lens[s] = 0
      this.#extras[s] = undefined
    }
    const state = out.state
    const n = state.length
    const inline = this.#lens[s] === 0 || this.#buckets[s] === bucket
    if (inline && n > 0 && n <= STRIDE) {
      const base = s * STRIDE
      const data = this.#data
      for (let i = 0; i < n; i++) data[base + i] = state[i] as number
      this.#lens[s] = n
      this.#buckets[s] = bucket
      this.#extras[s]?.delete(bucket)
    } else {
      if (inline && this.#buckets[s] === bucket) this.#lens[s] = 0
      let extras = this.#extras[s]
      if (extras === undefined) {
        extras = new Map()
        this.#extras[s] = extras
      }
      extras.set(bucket, state)
    }
    const expires = now + out.ttlMs
    if (expires > (this.#expires[s] as number)) this.#expires[s] = expires
  }

  #closedError(): FastlimitError {
    return new FastlimitError(
      'ERR_FASTLIMIT_CLOSED',
      '[fastlimit] [memory] This MemoryBackend was closed; create a new one.',
    )
  }

  #check(space: Space, name: string, bucket: BucketConfig, cost: number): BackendResult {
    if (this.#closed) throw this.#closedError()
    const now = this.#now()
    const id = bucketId(bucket)
    const s = this.#get(space, name)
    const out = algorithms[bucket.algorithm](this.#read(s, id), now, bucket, cost)
    if (out.result.allowed || out.rebased)
      this.#write(s === NONE ? this.#create(space, name) : s, id, out, now)
    return out.result
  }

  #checkAll(space: Space, name: string, buckets: readonly BucketConfig[], cost: number): BackendResult[] {
    if (buckets.length === 1) return [this.#check(space, name, buckets[0] as BucketConfig, cost)]
    if (this.#closed) throw this.#closedError()
    const now = this.#now()
    const s = this.#get(space, name)
    const states: Array<number[] | undefined> = new Array(buckets.length)
    for (let i = 0; i < buckets.length; i++) {
      // Copy: the scratch array is shared between buckets.
      states[i] = this.#read(s, bucketId(buckets[i] as BucketConfig))?.slice()
    }
    const all = stepAll(states, now, buckets, cost)
    let slot = s
    for (let i = 0; i < buckets.length; i++) {
      const out = all.outputs[i] as StepOutput
      if (all.allowed || out.rebased) {
        if (slot === NONE) slot = this.#create(space, name)
        this.#write(slot, bucketId(buckets[i] as BucketConfig), out, now)
      }
    }
    return all.results
  }

  /** {@link Backend.checkAndIncrement}, synchronously. */
  checkAndIncrementSync(key: string, bucket: BucketConfig, cost: number): BackendResult {
    // A cost handed to the backend directly (FastLimit checks its own).
    checkPositiveCost('memory', cost, '')
    const [space, name] = this.#split(key)
    return this.#check(space, name, bucket, cost)
  }

  /** {@link Backend.checkAndIncrementAll}, synchronously. */
  checkAndIncrementAllSync(key: string, buckets: readonly BucketConfig[], cost: number): BackendResult[] {
    checkPositiveCost('memory', cost, '')
    const [space, name] = this.#split(key)
    return this.#checkAll(space, name, buckets, cost)
  }

  /** {@link Backend.peek}, synchronously. */
  peekSync(key: string, bucket: BucketConfig): BackendResult {
    if (this.#closed) throw this.#closedError()
    const now = this.#now()
    const [space, name] = this.#split(key)
    const s = space.get(name)
    const state =
      s !== undefined && (this.#expires[s] as number) > now ? this.#read(s, bucketId(bucket)) : undefined
    return algorithms[bucket.algorithm](state, now, bucket, 0).result
  }

  checkAndIncrement(key: string, bucket: BucketConfig, cost: number): Promise<BackendResult> {
    try {
      return Promise.resolve(this.checkAndIncrementSync(key, bucket, cost))
    } catch (err) {
      return Promise.reject(err)
    }
  }

  checkAndIncrementAll(
    key: string,
    buckets: readonly BucketConfig[],
    cost: number,
  ): Promise<BackendResult[]> {
    try {
      return Promise.resolve(this.checkAndIncrementAllSync(key, buckets, cost))
    } catch (err) {
      return Promise.reject(err)
    }
  }

  peek(key: string, bucket: BucketConfig): Promise<BackendResult> {
    try {
      return Promise.resolve(this.peekSync(key, bucket))
    } catch (err) {
      return Promise.reject(err)
    }
  }

  async reset(key: string): Promise<void> {
    if (this.#closed) throw this.#closedError()
    const [space, name] = this.#split(key)
    const s = space.get(name)
    if (s !== undefined) this.#delete(s)
  }

  async clear(): Promise<void> {
    if (this.#closed) throw this.#closedError()
    this.#empty()
  }

  async close(): Promise<void> {
    this.#closed = true
    if (this.#timer) clearInterval(this.#timer)
    this.#timer = undefined
    this.#empty()
  }

  #empty(): void {
    // Keep the space maps (FastLimit holds them) but empty them, and start over with few slots.
    for (const space of this.#spaces.values()) space.clear()
    this.#size = 0
    this.#capacity = 0
    this.#names = []
    this.#owners = []
    this.#buckets = []
    this.#extras = []
    this.#expires = new Float64Array(0)
    this.#prev = new Int32Array(0)
    this.#next = new Int32Array(0)
    this.#lens = new Uint8Array(0)
    this.#data = new Float64Array(0)
    this.#free = []
    this.#head = NONE
    this.#tail = NONE
    this.#grow(Math.min(INITIAL_CAPACITY, this.#maxKeys))
  }

  /**
   * Drops expired keys, least recently used first, in batches of 10,000 per macrotask so a large sweep
   * never holds the event loop for long. Runs on its own every `cleanupIntervalMs`; call it to sweep now.
   * @returns a promise of how many keys were dropped
   */
  sweep(): Promise<number> {
    if (this.#sweeping || this.#closed) return Promise.resolve(0)
    this.#sweeping = true
    let dropped = 0
    let cursor = this.#tail
    let generation = this.#capacity
    return new Promise<number>((resolve) => {
      const batch = () => {
        // A clear() or close() since the last batch invalidates the cursor.
        if (this.#closed || this.#capacity < generation || cursor >= this.#capacity) {
          this.#sweeping = false
          resolve(dropped)
          return
        }
        generation = this.#capacity
        const now = this.#now()
        let n = 0
        while (cursor !== NONE && n < SWEEP_BATCH) {
          const s = cursor
          cursor = this.#prev[s] as number
          if (this.#names[s] !== undefined && (this.#expires[s] as number) <= now) {
            this.#delete(s)
            dropped++
          }
          n++
        }
        if (cursor === NONE) {
          this.#sweeping = false
          resolve(dropped)
        } else setTimeout(batch, 0)
      }
      batch()
    })
  }
}
