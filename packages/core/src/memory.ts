// MemoryBackend: the default store, a bounded LRU of algorithm states with lazy expiry and no timer per key.

import { algorithms, stepAll } from './algorithms'
import type { StepOutput } from './algorithms/types'
import { type Backend, type BackendResult, type BucketConfig, bucketId } from './backend'
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
  key: string
  prev: Entry | undefined
  next: Entry | undefined
  /** When every bucket of the key is equivalent to no state (epoch ms). */
  expiresAt: number
  id: string
  state: number[] | undefined
  more: Map<string, Slot> | undefined
}

const SWEEP_BATCH = 10_000

/**
 * The in-memory backend, the default of `FastLimit`. Each process has its own counts: use it for one
 * process, or as the fallback of a shared backend.
 *
 * - Bounded: at most `maxKeys` keys; the least recently used goes first.
 * - No timer per key: an expired key is dropped when touched, and by one `unref`ed sweep.
 * - Atomic by construction: JavaScript runs each call to completion.
 *
 * @example
 * ```ts
 * const limiter = new FastLimit({ backend: new MemoryBackend({ maxKeys: 100_000 }) })
 * ```
 */
export class MemoryBackend implements Backend {
  readonly #map = new Map<string, Entry>()
  readonly #maxKeys: number
  readonly #clock: () => number
  #head: Entry | undefined
  #tail: Entry | undefined
  #timer: ReturnType<typeof setInterval> | undefined
  #sweeping = false
  #closed = false

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
    return this.#map.size
  }

  #now(): number {
    return Math.floor(this.#clock())
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
    this.#map.delete(e.key)
  }

  /** The live entry of a key, marked most recently used, or undefined. */
  #get(key: string, now: number): Entry | undefined {
    const e = this.#map.get(key)
    if (e === undefined) return undefined
    if (e.expiresAt <= now) {
      this.#delete(e)
      return undefined
    }
    if (this.#head !== e) {
      this.#unlink(e)
      this.#pushFront(e)
    }
    return e
  }

  #create(key: string, id: string): Entry {
    if (this.#map.size >= this.#maxKeys && this.#tail) this.#delete(this.#tail)
    const e: Entry = {
      key,
      prev: undefined,
      next: undefined,
      expiresAt: 0,
      id,
      state: undefined,
      more: undefined,
    }
    this.#map.set(key, e)
    this.#pushFront(e)
    return e
  }

  static #read(e: Entry | undefined, id: string): number[] | undefined {
    if (e === undefined) return undefined
    if (e.id === id) return e.state
    return e.more?.get(id)?.state
  }

  #write(key: string, e: Entry | undefined, id: string, out: StepOutput, now: number): void {
    const entry = e ?? this.#create(key, id)
    if (entry.id === id) entry.state = out.state
    else {
      entry.more ??= new Map()
      const slot = entry.more.get(id)
      if (slot) slot.state = out.state
      else entry.more.set(id, { state: out.state })
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

  /** {@link Backend.checkAndIncrement}, synchronously. */
  checkAndIncrementSync(key: string, bucket: BucketConfig, cost: number): BackendResult {
    if (this.#closed) throw this.#closedError()
    const now = this.#now()
    const id = bucketId(bucket)
    const e = this.#get(key, now)
    const out = algorithms[bucket.algorithm](MemoryBackend.#read(e, id), now, bucket, cost)
    if (out.result.allowed) this.#write(key, e, id, out, now)
    return out.result
  }

  /** {@link Backend.checkAndIncrementAll}, synchronously. */
  checkAndIncrementAllSync(key: string, buckets: readonly BucketConfig[], cost: number): BackendResult[] {
    if (buckets.length === 1) return [this.checkAndIncrementSync(key, buckets[0] as BucketConfig, cost)]
    if (this.#closed) throw this.#closedError()
    const now = this.#now()
    const e = this.#get(key, now)
    const states: Array<number[] | undefined> = new Array(buckets.length)
    for (let i = 0; i < buckets.length; i++)
      states[i] = MemoryBackend.#read(e, bucketId(buckets[i] as BucketConfig))
    const all = stepAll(states, now, buckets, cost)
    if (all.allowed) {
      let entry = e
      for (let i = 0; i < buckets.length; i++) {
        this.#write(key, entry, bucketId(buckets[i] as BucketConfig), all.outputs[i] as StepOutput, now)
        entry ??= this.#map.get(key)
      }
    }
    return all.results
  }

  /** {@link Backend.peek}, synchronously. */
  peekSync(key: string, bucket: BucketConfig): BackendResult {
    if (this.#closed) throw this.#closedError()
    const now = this.#now()
    const e = this.#map.get(key)
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
    const e = this.#map.get(key)
    if (e) this.#delete(e)
  }

  async clear(): Promise<void> {
    if (this.#closed) throw this.#closedError()
    this.#map.clear()
    this.#head = undefined
    this.#tail = undefined
  }

  async close(): Promise<void> {
    this.#closed = true
    if (this.#timer) clearInterval(this.#timer)
    this.#timer = undefined
    this.#map.clear()
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
          if (e.expiresAt <= now && this.#map.get(e.key) === e) {
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
