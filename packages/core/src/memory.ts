// MemoryBackend: the default store, a bounded LRU of algorithm states with lazy expiry and no timer per key.

import { algorithms, stepAll } from './algorithms'
import type { StepOutput } from './algorithms/types'
import { type BackendResult, type BucketConfig, bucketId, type SyncBackend } from './backend'
import { ConfigError, FastlimitError, show } from './errors'

/** Options of {@link MemoryBackend}. */
export interface MemoryBackendOptions {
  /**
   * The most keys (identities) kept. When full, the least recently used key is dropped, so memory
   * stays bounded however many distinct identities arrive (about 200 bytes per key; see the README).
   * @default 1_000_000
   */
  maxKeys?: number
  /**
   * How often an `unref`ed timer sweeps out expired keys, in milliseconds; `0` disables the sweep
   * (expired keys are then dropped only when touched or evicted).
   * @default 60_000
   */
  cleanupIntervalMs?: number
  /**
   * The clock, in epoch milliseconds. Inject one in tests.
   * @default Date.now
   */
  clock?: () => number
}

/** One bucket's state inside an entry, for keys checked against more than one rule. */
interface Slot {
  state: number[]
}

/** One key: a node of the LRU list. The first bucket is stored inline; further ones in `more`. */
interface Entry {
  /** The identity part of the key (or the whole key, in the raw space). */
  name: string
  /** The map of the key's space (its prefix) that holds this entry. */
  space: Map<string, Entry>
  prev: Entry | undefined
  next: Entry | undefined
  /** When every bucket of the key is equivalent to no state (epoch ms). */
  expiresAt: number
  bucket: string
  state: number[] | undefined
  more: Map<string, Slot> | undefined
}

const SWEEP_BATCH = 10_000
/** The space of keys that are not shaped `prefix:{identity}` (a prefix can never be empty). */
const RAW = ''

/** Friend access for FastLimit: decide on (prefix, escaped identity) without building the key string. */
export let checkParts: (
  backend: MemoryBackend,
  space: string,
  name: string,
  bucket: BucketConfig,
  cost: number,
) => BackendResult
/** As {@link checkParts}, for several buckets all-or-nothing. */
export let checkAllParts: (
  backend: MemoryBackend,
  space: string,
  name: string,
  buckets: readonly BucketConfig[],
  cost: number,
) => BackendResult[]

/**
 * The in-memory backend, the default of `FastLimit`. Each process has its own counts: use it for one
 * process, or as the fallback of a shared backend.
 *
 * - Bounded: at most `maxKeys` keys; the least recently used goes first.
 * - No timer per key: an expired key is emptied in place when touched, and dropped by one `unref`ed sweep.
 * - Atomic by construction: JavaScript runs each call to completion.
 *
 * Keys shaped `prefix:{identity}` (as `FastLimit` builds them) are stored per prefix, so `FastLimit`
 * looks them up without concatenating a key string per call.
 *
 * @example
 * ```ts
 * const limiter = new FastLimit({ backend: new MemoryBackend({ maxKeys: 100_000 }) })
 * ```
 */
export class MemoryBackend implements SyncBackend {
  readonly #spaces = new Map<string, Map<string, Entry>>()
  readonly #maxKeys: number
  readonly #clock: () => number
  #size = 0
  #head: Entry | undefined
  #tail: Entry | undefined
  #timer: ReturnType<typeof setInterval> | undefined
  #sweeping = false
  #closed = false

  static {
    checkParts = (backend, space, name, bucket, cost) => backend.#check(space, name, bucket, cost)
    checkAllParts = (backend, space, name, buckets, cost) => backend.#checkAll(space, name, buckets, cost)
  }

  constructor(options: MemoryBackendOptions = {}) {
    const { maxKeys = 1_000_000, cleanupIntervalMs = 60_000, clock = Date.now, ...rest } = options
    for (const key of Object.keys(rest)) {
      throw new ConfigError(
        `[fastlimit] [memory] Unknown option ${show(key)}: MemoryBackend takes maxKeys, cleanupIntervalMs and clock.`,
      )
    }
    if (!Number.isSafeInteger(maxKeys) || maxKeys < 1) {
      throw new ConfigError(
        `[fastlimit] [memory] maxKeys must be a positive whole number, got ${show(maxKeys)}. For example 100000.`,
      )
    }
    if (
      !Number.isSafeInteger(cleanupIntervalMs) ||
      cleanupIntervalMs < 0 ||
      cleanupIntervalMs > 2 ** 31 - 1
    ) {
      throw new ConfigError(
        `[fastlimit] [memory] cleanupIntervalMs must be a whole number of milliseconds from 0 (off) to 2147483647, ` +
          `got ${show(cleanupIntervalMs)}. For example 60000.`,
      )
    }
    if (typeof clock !== 'function') {
      throw new ConfigError(
        `[fastlimit] [memory] clock must be a function returning epoch milliseconds, e.g. Date.now.`,
      )
    }
    this.#maxKeys = maxKeys
    this.#clock = clock
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
    const clock = this.#clock
    return clock === Date.now ? Date.now() : Math.floor(clock())
  }

  /** Splits `prefix:{identity}` into its space and name; any other key lives in the raw space. */
  static #split(key: string): [string, string] {
    const open = key.indexOf('{')
    if (open > 1 && key.charCodeAt(open - 1) === 0x3a && key.charCodeAt(key.length - 1) === 0x7d) {
      const name = key.slice(open + 1, -1)
      if (name.indexOf('{') === -1 && name.indexOf('}') === -1) return [key.slice(0, open - 1), name]
    }
    return [RAW, key]
  }

  #unlink(e: Entry): void {
    if (e.prev) e.prev.next = e.next
    else this.#head = e.next
    if (e.next) e.next.prev = e.prev
    else this.#tail = e.prev
    e.prev = undefined
    e.next = undefined
  }

  #pushFront(e: Entry): void {
    e.next = this.#head
    if (this.#head) this.#head.prev = e
    this.#head = e
    if (!this.#tail) this.#tail = e
  }

  #delete(e: Entry): void {
    this.#unlink(e)
    e.space.delete(e.name)
    this.#size--
  }

  /**
   * The entry of a key, marked most recently used, or undefined. An expired entry is emptied in place
   * rather than deleted and re-created: same meaning, no Map churn.
   */
  #get(space: Map<string, Entry> | undefined, name: string, now: number): Entry | undefined {
    if (space === undefined) return undefined
    const e = space.get(name)
    if (e === undefined) return undefined
    if (e.expiresAt <= now) {
      e.state = undefined
      e.more = undefined
      e.expiresAt = 0
    }
    if (this.#head !== e) {
      this.#unlink(e)
      this.#pushFront(e)
    }
    return e
  }

  #create(spaceName: string, name: string, bucket: string): Entry {
    if (this.#size >= this.#maxKeys && this.#tail) this.#delete(this.#tail)
    let space = this.#spaces.get(spaceName)
    if (space === undefined) {
      space = new Map()
      this.#spaces.set(spaceName, space)
    }
    const e: Entry = {
      name,
      space,
      prev: undefined,
      next: undefined,
      expiresAt: 0,
      bucket,
      state: undefined,
      more: undefined,
    }
    space.set(name, e)
    this.#size++
    this.#pushFront(e)
    return e
  }

  static #read(e: Entry | undefined, bucket: string): number[] | undefined {
    if (e === undefined) return undefined
    if (e.bucket === bucket) return e.state
    return e.more?.get(bucket)?.state
  }

  static #write(entry: Entry, bucket: string, out: StepOutput, now: number): void {
    if (entry.bucket === bucket || (entry.state === undefined && entry.more === undefined)) {
      entry.bucket = bucket
      entry.state = out.state
    } else {
      entry.more ??= new Map()
      const slot = entry.more.get(bucket)
      if (slot) slot.state = out.state
      else entry.more.set(bucket, { state: out.state })
    }
    const expires = now + out.ttlMs
    if (expires > entry.expiresAt) entry.expiresAt = expires
  }

  #closedError(): FastlimitError {
    return new FastlimitError(
      'ERR_FASTLIMIT_CLOSED',
      '[fastlimit] [memory] This MemoryBackend was closed; create a new one.',
    )
  }

  #check(spaceName: string, name: string, bucket: BucketConfig, cost: number): BackendResult {
    if (this.#closed) throw this.#closedError()
    const now = this.#now()
    const id = bucketId(bucket)
    const e = this.#get(this.#spaces.get(spaceName), name, now)
    const out = algorithms[bucket.algorithm](MemoryBackend.#read(e, id), now, bucket, cost)
    if (out.result.allowed) MemoryBackend.#write(e ?? this.#create(spaceName, name, id), id, out, now)
    return out.result
  }

  #checkAll(
    spaceName: string,
    name: string,
    buckets: readonly BucketConfig[],
    cost: number,
  ): BackendResult[] {
    if (buckets.length === 1) return [this.#check(spaceName, name, buckets[0] as BucketConfig, cost)]
    if (this.#closed) throw this.#closedError()
    const now = this.#now()
    const e = this.#get(this.#spaces.get(spaceName), name, now)
    const states: Array<number[] | undefined> = new Array(buckets.length)
    for (let i = 0; i < buckets.length; i++)
      states[i] = MemoryBackend.#read(e, bucketId(buckets[i] as BucketConfig))
    const all = stepAll(states, now, buckets, cost)
    if (all.allowed) {
      const entry = e ?? this.#create(spaceName, name, bucketId(buckets[0] as BucketConfig))
      for (let i = 0; i < buckets.length; i++) {
        MemoryBackend.#write(entry, bucketId(buckets[i] as BucketConfig), all.outputs[i] as StepOutput, now)
      }
    }
    return all.results
  }

  /** {@link Backend.checkAndIncrement}, synchronously. */
  checkAndIncrementSync(key: string, bucket: BucketConfig, cost: number): BackendResult {
    const [space, name] = MemoryBackend.#split(key)
    return this.#check(space, name, bucket, cost)
  }

  /** {@link Backend.checkAndIncrementAll}, synchronously. */
  checkAndIncrementAllSync(key: string, buckets: readonly BucketConfig[], cost: number): BackendResult[] {
    const [space, name] = MemoryBackend.#split(key)
    return this.#checkAll(space, name, buckets, cost)
  }

  /** {@link Backend.peek}, synchronously. */
  peekSync(key: string, bucket: BucketConfig): BackendResult {
    if (this.#closed) throw this.#closedError()
    const now = this.#now()
    const [space, name] = MemoryBackend.#split(key)
    const e = this.#spaces.get(space)?.get(name)
    const state = e !== undefined && e.expiresAt > now ? MemoryBackend.#read(e, bucketId(bucket)) : undefined
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
    const [space, name] = MemoryBackend.#split(key)
    const e = this.#spaces.get(space)?.get(name)
    if (e) this.#delete(e)
  }

  async clear(): Promise<void> {
    if (this.#closed) throw this.#closedError()
    this.#spaces.clear()
    this.#size = 0
    this.#head = undefined
    this.#tail = undefined
  }

  async close(): Promise<void> {
    this.#closed = true
    if (this.#timer) clearInterval(this.#timer)
    this.#timer = undefined
    this.#spaces.clear()
    this.#size = 0
    this.#head = undefined
    this.#tail = undefined
  }

  /**
   * Drops expired keys, oldest first, in batches of 10,000 per macrotask so a large sweep never holds
   * the event loop for long. Runs on its own every `cleanupIntervalMs`; call it to sweep now.
   * @returns a promise of how many keys were dropped
   */
  sweep(): Promise<number> {
    if (this.#sweeping || this.#closed) return Promise.resolve(0)
    this.#sweeping = true
    let dropped = 0
    let cursor = this.#tail
    return new Promise<number>((resolve) => {
      const batch = () => {
        if (this.#closed) {
          this.#sweeping = false
          resolve(dropped)
          return
        }
        const now = this.#now()
        let n = 0
        while (cursor !== undefined && n < SWEEP_BATCH) {
          const e: Entry = cursor
          // An entry that moved to the front since the sweep began ends its walk early: it is fresh.
          cursor = e.prev
          if (e.expiresAt <= now && e.space.get(e.name) === e) {
            this.#delete(e)
            dropped++
          }
          n++
        }
        if (cursor === undefined) {
          this.#sweeping = false
          resolve(dropped)
        } else setTimeout(batch, 0)
      }
      batch()
    })
  }
}
