// MemoryBackend: the default store, a bounded map of algorithm states; when full, the state that expires soonest goes.
//
// Layout: one Map from the full key to a slot; each slot's expiry and first bucket's state live in typed
// arrays, further buckets of a key in a second arena of the same shape, so a million keys cost the GC
// almost nothing. A binary min-heap orders the slots by expiry for eviction and the sweep; its keys are
// refreshed lazily (an expiry only grows, so a stale heap key is a lower bound that the eviction fixes).

import { adjustAll, algorithms, stepAll } from './algorithms'
import { fixedWindowTo } from './algorithms/fixed-window'
import { gcraTo } from './algorithms/gcra'
import { result as makeResult } from './algorithms/math'
import { sink } from './algorithms/sink'
import { slidingLog, slidingLogInPlace } from './algorithms/sliding-log'
import type { StepOutput } from './algorithms/types'
import {
  type AcquireResult,
  type BackendResult,
  type BucketConfig,
  bucketId,
  type CallOptions,
  type Charge,
  type ResultSink,
  type SlotConfig,
  type SyncBackend,
} from './backend'
import {
  ConfigError,
  checkAdjustArguments,
  checkPositiveCost,
  checkTimerMs,
  FastlimitError,
  show,
} from './errors'
import { checkLeaseArguments, LeaseTable } from './leases'

/** Options of {@link MemoryBackend}. */
export interface MemoryBackendOptions {
  /**
   * The most keys (identities) kept. When full, the key whose state expires soonest is dropped: an
   * expired one first (its state means the same as none), else the live one closest to expiring,
   * so memory stays bounded however many distinct identities arrive (see the README for bytes per key).
   * @default 1_000_000
   */
  maxKeys?: number
  /**
   * How often an `unref`ed timer sweeps out expired keys, in milliseconds; `0` disables the sweep
   * (expired keys are then reused when touched and dropped first when the store is full). The timer
   * starts at the first write, never at construction, and not at all where timers are unavailable.
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
/** Matches the empty start of a string: `key.replace(START, '')` is the key as one flat string. */
const START = /^/
/** Numbers of state stored in a lane's row of `data0`/`xData` (every algorithm but two keeps two). */
const STRIDE = 2
/**
 * Numbers of state stored inline per lane: the third (`'sliding-window'`) in a column made only once a
 * state of three numbers is stored, so the other algorithms pay 16 bytes per lane, not 24. Longer
 * states (and every sliding-log) go to `longs`.
 */
const INLINE = 3
/** The length marking a lane whose state is an array in `longs`. */
const LONG = 255
const NONE = -1
const INITIAL_CAPACITY = 1024
/** Stale heap keys an eviction refreshes one by one; beyond that it rebuilds the heap in one linear pass. */
const FIX_BUDGET = 256
/** Heap positions whose keys a write keeps current (the top 12 levels); deeper keys are refreshed lazily. */
const FRESH_TOP = 4095

/**
 * The in-memory backend, the default of `FastLimit`. Each process has its own counts: use it for one
 * process, or as the fallback of a shared backend.
 *
 * - Bounded: at most `maxKeys` keys. When full, the key whose state expires soonest goes: an expired
 *   one if there is any (dropping it changes nothing), else the live one closest to expiring, which
 *   forgets the least. A flood of new identities thus displaces other short-lived entries before a
 *   client it limits; it is still a bound: enough new keys that outlive a limited client's state evict it.
 * - No timer per key, and none at construction: one `unref`ed sweep, started by the first write.
 * - Atomic by construction: JavaScript runs each call to completion.
 * - The whole protocol, synchronously too ({@link SyncBackend}); keys are any strings. Reached only
 *   through its public methods, so a `Proxy` or a delegating wrapper works as well as the object.
 *
 * @example
 * ```ts
 * const limiter = new FastLimit({ backend: new MemoryBackend({ maxKeys: 100_000 }) })
 * ```
 */
export class MemoryBackend implements SyncBackend {
  /** The kind of store, for messages and metrics. */
  readonly kind = 'memory'

  private readonly keys = new Map<string, number>()
  private readonly maxKeys: number
  private readonly clock: () => number
  private readonly wallClock: boolean
  private readonly cleanupIntervalMs: number
  private count = 0
  private capacity = 0
  private top = 0
  private free: number[] = []
  /** Slots: the key, the expiry (the latest of its buckets'), the heap position, the first bucket. */
  private keyOf: Array<string | undefined> = []
  private exp = new Float64Array(0)
  private pos = new Int32Array(0)
  private id0: Array<string | undefined> = []
  private len0 = new Uint8Array(0)
  private data0 = new Float64Array(0)
  /** The third number of a slot's first state, by slot (empty until a state of three numbers is stored). */
  private third0 = new Float64Array(0)
  /** The slot's first further bucket in the `x` arena, or NONE. */
  private next0 = new Int32Array(0)
  /** The arena of further buckets (a key's second rule onwards), chained per slot. */
  private xId: Array<string | undefined> = []
  private xLen = new Uint8Array(0)
  private xData = new Float64Array(0)
  private xThird = new Float64Array(0)
  private xNext = new Int32Array(0)
  private xFree = NONE
  private xTop = 0
  private xCapacity = 0
  /** States longer than INLINE, by lane: a slot's first bucket is its slot, an arena lane `e` is `-2 - e`. */
  private readonly longs = new Map<number, number[]>()
  /** A min-heap of slots by a lower bound of their expiry (`heapKey`, refreshed lazily). */
  private heap = new Int32Array(0)
  private heapKey = new Float64Array(0)
  private readonly scratch: number[][] = [[], [0], [0, 0], [0, 0, 0]]
  /** Concurrency leases ({@link MemoryBackend.acquire}), kept apart from the buckets. */
  private readonly leases: LeaseTable
  private timer: ReturnType<typeof setInterval> | undefined
  private timerStarted = false
  private sweeping = false
  private closed = false

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
    this.maxKeys = maxKeys
    this.leases = new LeaseTable(maxKeys)
    this.clock = clock
    this.wallClock = clock === Date.now
    this.cleanupIntervalMs = cleanupIntervalMs
    // No timer and no I/O here: a MemoryBackend may be built at module scope (Cloudflare Workers).
  }

  /** How many keys are held now (expired ones not yet swept included). */
  get size(): number {
    return this.count
  }

  private now(): number {
    return this.wallClock ? Date.now() : Math.floor(this.clock())
  }

  private grow(): void {
    const capacity =
      this.capacity === 0
        ? Math.min(INITIAL_CAPACITY, this.maxKeys)
        : Math.min(this.maxKeys, this.capacity * 2)
    const f64 = (a: Float64Array, per = 1) => {
      const b = new Float64Array(capacity * per)
      b.set(a)
      return b
    }
    const i32 = (a: Int32Array) => {
      const b = new Int32Array(capacity)
      b.set(a)
      return b
    }
    this.exp = f64(this.exp)
    this.pos = i32(this.pos)
    const len0 = new Uint8Array(capacity)
    len0.set(this.len0)
    this.len0 = len0
    this.data0 = f64(this.data0, STRIDE)
    if (this.third0.length > 0) this.third0 = f64(this.third0)
    this.next0 = i32(this.next0)
    this.heap = i32(this.heap)
    this.heapKey = f64(this.heapKey)
    for (let i = this.capacity; i < capacity; i++) {
      this.keyOf.push(undefined)
      this.id0.push(undefined)
    }
    this.capacity = capacity
  }

  private growArena(): void {
    const capacity = this.xCapacity === 0 ? 256 : this.xCapacity * 2
    const xLen = new Uint8Array(capacity)
    xLen.set(this.xLen)
    this.xLen = xLen
    const xData = new Float64Array(capacity * STRIDE)
    xData.set(this.xData)
    this.xData = xData
    if (this.xThird.length > 0) {
      const xThird = new Float64Array(capacity)
      xThird.set(this.xThird)
      this.xThird = xThird
    }
    const xNext = new Int32Array(capacity)
    xNext.set(this.xNext)
    this.xNext = xNext
    for (let i = this.xCapacity; i < capacity; i++) this.xId.push(undefined)
    this.xCapacity = capacity
  }

  // The heap: slots ordered by heapKey, a lower bound of their expiry; `pos` is each slot's place.

  private siftUp(i: number, s: number, k: number): void {
    const heap = this.heap
    const keys = this.heapKey
    const pos = this.pos
    while (i > 0) {
      const p = (i - 1) >> 1
      const pk = keys[p] as number
      if (pk <= k) break
      const ps = heap[p] as number
      heap[i] = ps
      keys[i] = pk
      pos[ps] = i
      i = p
    }
    heap[i] = s
    keys[i] = k
    pos[s] = i
  }

  private siftDown(i: number, s: number, k: number): void {
    const heap = this.heap
    const keys = this.heapKey
    const pos = this.pos
    const n = this.count
    for (;;) {
      let c = 2 * i + 1
      if (c >= n) break
      let ck = keys[c] as number
      const r = c + 1
      if (r < n && (keys[r] as number) < ck) {
        c = r
        ck = keys[r] as number
      }
      if (ck >= k) break
      const cs = heap[c] as number
      heap[i] = cs
      keys[i] = ck
      pos[cs] = i
      i = c
    }
    heap[i] = s
    keys[i] = k
    pos[s] = i
  }

  /** A new slot for `key`, expiring at `expires`; when full, the slot that expires soonest goes first. */
  private create(key: string, expires: number, now: number): number {
    if (this.count >= this.maxKeys) this.evict(now)
    let s: number
    if (this.free.length > 0) s = this.free.pop() as number
    else {
      if (this.top === this.capacity) this.grow()
      s = this.top++
    }
    // A key built by concatenation is a tree of string pieces in V8; keep a flat copy (about 60 bytes less).
    const flat = key.replace(START, '')
    this.keys.set(flat, s)
    this.keyOf[s] = flat
    this.exp[s] = expires
    this.next0[s] = NONE
    this.count++
    this.siftUp(this.count - 1, s, expires)
    if (!this.timerStarted) this.startSweeping()
    return s
  }

  /**
   * Drops the slot that expires soonest: an expired one if there is any, else the live one closest to
   * expiring. Heap keys are refreshed lazily, so a root whose expiry has grown is first moved to its place.
   */
  private evict(now: number): void {
    let budget = FIX_BUDGET
    for (;;) {
      const s = this.heap[0] as number
      const e = this.exp[s] as number
      if (e > now && e > (this.heapKey[0] as number)) {
        // A stale root: move it to its place (many of them at once: rebuild the heap, in linear time).
        if (budget-- > 0) this.siftDown(0, s, e)
        else this.rebuild()
        continue
      }
      this.delete(s)
      return
    }
  }

  /** Rebuilds the heap from every slot's current expiry (Floyd's heap construction, linear). */
  private rebuild(): void {
    const n = this.count
    const heap = this.heap
    const keys = this.heapKey
    for (let i = 0; i < n; i++) keys[i] = this.exp[heap[i] as number] as number
    for (let i = (n >> 1) - 1; i >= 0; i--) this.siftDown(i, heap[i] as number, keys[i] as number)
  }

  private delete(s: number): void {
    this.keys.delete(this.keyOf[s] as string)
    this.keyOf[s] = undefined
    this.clearLanes(s)
    // Out of the heap: the last entry takes its place.
    const i = this.pos[s] as number
    const last = --this.count
    if (i !== last) {
      const ls = this.heap[last] as number
      const lk = this.heapKey[last] as number
      if (i > 0 && lk < (this.heapKey[(i - 1) >> 1] as number)) this.siftUp(i, ls, lk)
      else this.siftDown(i, ls, lk)
    }
    this.pos[s] = NONE
    this.free.push(s)
  }

  // Lanes: one state of one bucket. A slot's first bucket is lane `s`; arena lane `e` is `-2 - e`.

  private clearLanes(s: number): void {
    this.id0[s] = undefined
    if (this.len0[s] === LONG) this.longs.delete(s)
    this.len0[s] = 0
    let e = this.next0[s] as number
    while (e !== NONE) {
      if (this.xLen[e] === LONG) this.longs.delete(-2 - e)
      this.xId[e] = undefined
      this.xLen[e] = 0
      const next = this.xNext[e] as number
      this.xNext[e] = this.xFree
      this.xFree = e
      e = next
    }
    this.next0[s] = NONE
  }

  /** The lane of bucket `id` in slot `s`, or NONE. */
  private lane(s: number, id: string): number {
    if (this.id0[s] === id) return s
    let e = this.next0[s] as number
    while (e !== NONE) {
      if (this.xId[e] === id) return -2 - e
      e = this.xNext[e] as number
    }
    return NONE
  }

  /** The state in a lane. Inline states come back in a reused scratch array: copy before keeping. */
  private read(lane: number): number[] | undefined {
    let len: number
    let data: Float64Array
    let third: Float64Array
    let at: number
    if (lane >= 0) {
      len = this.len0[lane] as number
      data = this.data0
      third = this.third0
      at = lane
    } else {
      at = -2 - lane
      len = this.xLen[at] as number
      data = this.xData
      third = this.xThird
    }
    if (len === 0) return undefined
    if (len === LONG) return this.longs.get(lane)
    const out = this.scratch[len] as number[]
    const base = at * STRIDE
    for (let i = 0; i < len && i < STRIDE; i++) out[i] = data[base + i] as number
    if (len === 3) out[2] = third[at] as number
    return out
  }

  /** The state of `bucket` in a key's slot (NONE: no slot), or undefined. */
  private stateOf(s: number, id: string): number[] | undefined {
    if (s === NONE) return undefined
    const lane = this.lane(s, id)
    return lane === NONE ? undefined : this.read(lane)
  }

  /**
   * The lane of bucket `id` in slot `s`, added when missing; an expired slot is cleared first (every
   * state in it is stale). `known` is the bucket's lane when the caller has looked it up (NONE: look it up).
   */
  private place(s: number, id: string, now: number, known: number): number {
    let lane = known
    if ((this.exp[s] as number) <= now) {
      // Every state of an expired slot is stale: start it afresh.
      this.clearLanes(s)
      lane = NONE
    } else if (lane === NONE) lane = this.lane(s, id)
    if (lane === NONE) {
      if (this.id0[s] === undefined) {
        this.id0[s] = id
        lane = s
      } else {
        if (this.xFree === NONE) {
          if (this.xTop === this.xCapacity) this.growArena()
          this.xFree = this.xTop
          this.xNext[this.xTop++] = NONE
        }
        const e = this.xFree
        this.xFree = this.xNext[e] as number
        this.xId[e] = id
        this.xNext[e] = this.next0[s] as number
        this.next0[s] = e
        lane = -2 - e
      }
    }
    return lane
  }

  /** The column of third numbers of first states (`first`) or of the arena, made on first use. */
  private thirdColumn(first: boolean): Float64Array {
    if (first) {
      if (this.third0.length === 0) this.third0 = new Float64Array(this.capacity)
      return this.third0
    }
    if (this.xThird.length === 0) this.xThird = new Float64Array(this.xCapacity)
    return this.xThird
  }

  /** Moves slot `s`'s expiry forward to `expires` (never back). */
  private extend(s: number, expires: number): void {
    if (expires > (this.exp[s] as number)) {
      this.exp[s] = expires
      // Once full (evictions look at the top of the heap), heap keys near the top are kept current;
      // deeper ones, and all while there is room, lag behind and are refreshed when they surface.
      if (this.count >= this.maxKeys) {
        const p = this.pos[s] as number
        if (p < FRESH_TOP) this.siftDown(p, s, expires)
      }
    }
  }

  /**
   * Stores a step's state in slot `s` and moves the slot's expiry forward. `known` is the bucket's lane
   * in the slot when the caller has looked it up (NONE: look it up, or add one).
   */
  private write(s: number, id: string, long: boolean, out: StepOutput, now: number, known = NONE): void {
    const lane = this.place(s, id, now, known)
    const state = out.state
    const n = state.length
    let lens: Uint8Array
    let data: Float64Array
    let at: number
    if (lane >= 0) {
      lens = this.len0
      data = this.data0
      at = lane
    } else {
      lens = this.xLen
      data = this.xData
      at = -2 - lane
    }
    if (long || n > INLINE) {
      lens[at] = LONG
      this.longs.set(lane, state)
    } else {
      if (lens[at] === LONG) this.longs.delete(lane)
      lens[at] = n
      const base = at * STRIDE
      for (let i = 0; i < n && i < STRIDE; i++) data[base + i] = state[i] as number
      if (n === 3) this.thirdColumn(lane >= 0)[at] = state[2] as number
    }
    this.extend(s, now + out.ttlMs)
  }

  /**
   * A check of `'gcra'` or `'fixed-window'` (a state of two numbers), allocating nothing: the state is
   * read from the slot's numbers, the algorithm's kernel writes its answer into the kernels' `sink`, and
   * the new state goes straight back into the slot. Arguments already checked. Returns the clock.
   */
  private checkTwo(key: string, bucket: BucketConfig, cost: number, gcra: boolean): number {
    const now = this.now()
    const id = bucketId(bucket)
    const found = this.keys.get(key)
    const s = found === undefined ? NONE : found
    let lane = NONE
    let has = false
    let a = 0
    let b = 0
    if (s !== NONE) {
      lane = this.lane(s, id)
      if (lane !== NONE) {
        let len: number
        let base: number
        let data: Float64Array
        if (lane >= 0) {
          len = this.len0[lane] as number
          data = this.data0
          base = lane * STRIDE
        } else {
          len = this.xLen[-2 - lane] as number
          data = this.xData
          base = (-2 - lane) * STRIDE
        }
        if (len === 2) {
          has = true
          a = data[base] as number
          b = data[base + 1] as number
        }
      }
    }
    if (gcra) gcraTo(has, a, b, now, bucket, cost, 0)
    else fixedWindowTo(has, a, b, now, bucket, cost, 0)
    const k = sink
    if (k.allowed || k.rebased) {
      const expires = now + k.ttlMs
      const slot = s === NONE ? this.create(key, expires, now) : s
      const at = this.place(slot, id, now, lane)
      let lens: Uint8Array
      let data: Float64Array
      let i: number
      if (at >= 0) {
        lens = this.len0
        data = this.data0
        i = at
      } else {
        lens = this.xLen
        data = this.xData
        i = -2 - at
      }
      if (lens[i] === LONG) this.longs.delete(at)
      lens[i] = 2
      data[i * STRIDE] = k.s0
      data[i * STRIDE + 1] = k.s1
      this.extend(slot, expires)
    }
    return now
  }

  private closedError(): FastlimitError {
    return new FastlimitError(
      'ERR_FASTLIMIT_CLOSED',
      '[fastlimit] [memory] This MemoryBackend was closed; create a new one.',
    )
  }

  /**
   * {@link Backend.checkAndIncrement}, synchronously, into `out` (see
   * {@link SyncBackend.checkAndIncrementSyncTo}). Always decides (returns true). For `'gcra'` and
   * `'fixed-window'` it allocates nothing.
   */
  checkAndIncrementSyncTo(key: string, bucket: BucketConfig, cost: number, out: ResultSink): boolean {
    const algorithm = bucket.algorithm
    if (algorithm === 'gcra' || algorithm === 'fixed-window') {
      // A cost handed to the backend directly (FastLimit checks its own).
      if (!Number.isSafeInteger(cost) || cost < 1) checkPositiveCost('memory', cost, '')
      if (this.closed) throw this.closedError()
      this.checkTwo(key, bucket, cost, algorithm === 'gcra')
      const k = sink
      out.allowed = k.allowed
      out.limit = k.limit
      out.remaining = k.remaining
      out.resetMs = k.resetMs
      out.retryAfterMs = k.retryAfterMs
      return true
    }
    const r = this.checkAndIncrementSync(key, bucket, cost)
    out.allowed = r.allowed
    out.limit = r.limit
    out.remaining = r.remaining
    out.resetMs = r.resetMs
    out.retryAfterMs = r.retryAfterMs
    return true
  }

  /** {@link Backend.checkAndIncrement}, synchronously. Never returns undefined. */
  checkAndIncrementSync(key: string, bucket: BucketConfig, cost: number): BackendResult {
    // A cost handed to the backend directly (FastLimit checks its own).
    checkPositiveCost('memory', cost, '')
    if (this.closed) throw this.closedError()
    const algorithm = bucket.algorithm
    if (algorithm === 'gcra' || algorithm === 'fixed-window') {
      const now = this.checkTwo(key, bucket, cost, algorithm === 'gcra')
      const k = sink
      // With the clock of the charge, for a reservation's refund (Backend.adjust).
      return k.allowed
        ? {
            allowed: true,
            limit: k.limit,
            remaining: k.remaining,
            resetMs: k.resetMs,
            retryAfterMs: 0,
            atMs: now,
          }
        : makeResult(false, k.limit, k.remaining, k.resetMs, k.retryAfterMs)
    }
    const now = this.now()
    const id = bucketId(bucket)
    const found = this.keys.get(key)
    const s = found === undefined ? NONE : found
    const lane = s === NONE ? NONE : this.lane(s, id)
    const state = lane === NONE ? undefined : this.read(lane)
    const long = bucket.algorithm === 'sliding-log'
    let out: StepOutput
    if (long) {
      // The log is updated in place: no copy of it per call.
      out =
        state === undefined
          ? slidingLog(undefined, now, bucket, cost)
          : slidingLogInPlace(state, now, bucket, cost)
    } else out = algorithms[bucket.algorithm](state, now, bucket, cost)
    const result = out.result
    if (result.allowed || out.rebased) {
      if (s === NONE) this.write(this.create(key, now + out.ttlMs, now), id, long, out, now)
      else this.write(s, id, long, out, now, lane)
      // The clock of the charge, for a reservation's refund (Backend.adjust).
      if (result.allowed) (result as { atMs?: number }).atMs = now
    }
    return result
  }

  /** {@link Backend.checkAndIncrementAll}, synchronously. Never returns undefined. */
  checkAndIncrementAllSync(key: string, buckets: readonly BucketConfig[], cost: number): BackendResult[] {
    if (buckets.length === 1) return [this.checkAndIncrementSync(key, buckets[0] as BucketConfig, cost)]
    checkPositiveCost('memory', cost, '')
    if (this.closed) throw this.closedError()
    const now = this.now()
    const found = this.keys.get(key)
    const s = found === undefined ? NONE : found
    const n = buckets.length
    const states: Array<number[] | undefined> = new Array(n)
    // Copies: inline states share a scratch array, and the steps here must not change a stored log.
    for (let i = 0; i < n; i++) states[i] = this.stateOf(s, bucketId(buckets[i] as BucketConfig))?.slice()
    const all = stepAll(states, now, buckets, cost)
    let slot = s
    for (let i = 0; i < n; i++) {
      const out = all.outputs[i] as StepOutput
      if (all.allowed || out.rebased) {
        const bucket = buckets[i] as BucketConfig
        if (slot === NONE) slot = this.create(key, now + out.ttlMs, now)
        this.write(slot, bucketId(bucket), bucket.algorithm === 'sliding-log', out, now)
      }
    }
    const results = all.results
    if (all.allowed) for (const r of results) (r as { atMs?: number }).atMs = now
    return results
  }

  /** {@link Backend.adjust}, synchronously. Never returns undefined. */
  adjustSync(
    key: string,
    buckets: readonly BucketConfig[],
    delta: number,
    charges: readonly Charge[] | undefined,
  ): BackendResult[] {
    checkAdjustArguments('memory', buckets, delta, charges)
    if (this.closed) throw this.closedError()
    const now = this.now()
    const found = this.keys.get(key)
    const s = found === undefined ? NONE : found
    const n = buckets.length
    const states: Array<number[] | undefined> = new Array(n)
    // Copies: inline states share a scratch array.
    for (let i = 0; i < n; i++) states[i] = this.stateOf(s, bucketId(buckets[i] as BucketConfig))?.slice()
    const outs = adjustAll(states, now, buckets, delta, charges)
    let slot = s
    const results: BackendResult[] = new Array(n)
    for (let i = 0; i < n; i++) {
      const out = outs[i] as StepOutput & { readonly changed: boolean }
      if (out.changed || out.rebased) {
        const bucket = buckets[i] as BucketConfig
        if (slot === NONE) slot = this.create(key, now + out.ttlMs, now)
        this.write(slot, bucketId(bucket), bucket.algorithm === 'sliding-log', out, now)
      }
      results[i] = out.result
    }
    return results
  }

  adjust(
    key: string,
    buckets: readonly BucketConfig[],
    delta: number,
    charges: readonly Charge[] | undefined,
    _options?: CallOptions,
  ): Promise<BackendResult[]> {
    try {
      return Promise.resolve(this.adjustSync(key, buckets, delta, charges))
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** {@link Backend.acquire}, synchronously. Never returns undefined. */
  acquireSync(key: string, slots: SlotConfig, token: string): AcquireResult {
    checkLeaseArguments('memory', slots, token)
    if (this.closed) throw this.closedError()
    if (!this.timerStarted) this.startSweeping()
    return this.leases.acquire(key, slots, token, this.now())
  }

  /** {@link Backend.release}, synchronously. Never returns undefined. */
  releaseSync(key: string, token: string): boolean {
    checkLeaseArguments('memory', undefined, token)
    if (this.closed) throw this.closedError()
    return this.leases.release(key, token, this.now())
  }

  /**
   * {@inheritDoc Backend.acquire} Leases are kept apart from the buckets: a sorted list of expiries per
   * key (at most `limit` long), at most `maxKeys` keys with live leases (a new key beyond that fails with
   * `ERR_FASTLIMIT_STORE_FULL`: dropping live leases would admit over their limit).
   */
  acquire(key: string, slots: SlotConfig, token: string, _options?: CallOptions): Promise<AcquireResult> {
    try {
      return Promise.resolve(this.acquireSync(key, slots, token))
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** {@inheritDoc Backend.release} */
  release(key: string, token: string, _options?: CallOptions): Promise<boolean> {
    try {
      return Promise.resolve(this.releaseSync(key, token))
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** Keys holding concurrency leases (live, or expired and not yet swept). */
  get leaseKeys(): number {
    return this.leases.size
  }

  /** {@link Backend.peek}, synchronously. Never returns undefined. */
  peekSync(key: string, bucket: BucketConfig): BackendResult {
    if (this.closed) throw this.closedError()
    const now = this.now()
    const s = this.keys.get(key)
    const state =
      s !== undefined && (this.exp[s] as number) > now ? this.stateOf(s, bucketId(bucket)) : undefined
    return algorithms[bucket.algorithm](state, now, bucket, 0).result
  }

  checkAndIncrement(
    key: string,
    bucket: BucketConfig,
    cost: number,
    _options?: CallOptions,
  ): Promise<BackendResult> {
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
    _options?: CallOptions,
  ): Promise<BackendResult[]> {
    try {
      return Promise.resolve(this.checkAndIncrementAllSync(key, buckets, cost))
    } catch (err) {
      return Promise.reject(err)
    }
  }

  peek(key: string, bucket: BucketConfig, _options?: CallOptions): Promise<BackendResult> {
    try {
      return Promise.resolve(this.peekSync(key, bucket))
    } catch (err) {
      return Promise.reject(err)
    }
  }

  async reset(key: string, _options?: CallOptions): Promise<void> {
    if (this.closed) throw this.closedError()
    const s = this.keys.get(key)
    if (s !== undefined) this.delete(s)
  }

  async clear(): Promise<void> {
    if (this.closed) throw this.closedError()
    this.empty()
  }

  async close(): Promise<void> {
    this.closed = true
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    this.empty()
  }

  private empty(): void {
    this.keys.clear()
    this.leases.clear()
    this.longs.clear()
    this.count = 0
    this.capacity = 0
    this.top = 0
    this.free = []
    this.keyOf = []
    this.exp = new Float64Array(0)
    this.pos = new Int32Array(0)
    this.id0 = []
    this.len0 = new Uint8Array(0)
    this.data0 = new Float64Array(0)
    this.third0 = new Float64Array(0)
    this.next0 = new Int32Array(0)
    this.heap = new Int32Array(0)
    this.heapKey = new Float64Array(0)
    this.xId = []
    this.xLen = new Uint8Array(0)
    this.xData = new Float64Array(0)
    this.xThird = new Float64Array(0)
    this.xNext = new Int32Array(0)
    this.xFree = NONE
    this.xTop = 0
    this.xCapacity = 0
  }

  /** Starts the periodic sweep, once; where timers cannot be made (a runtime that forbids them), never. */
  private startSweeping(): void {
    this.timerStarted = true
    if (this.cleanupIntervalMs === 0 || typeof setInterval !== 'function') return
    try {
      const timer = setInterval(() => {
        void this.sweep()
      }, this.cleanupIntervalMs)
      // Never keep the process alive for a sweep (absent on some edge runtimes).
      ;(timer as { unref?: () => void }).unref?.()
      this.timer = timer
    } catch {
      // No timers here: expired keys are still reused when touched and dropped first when full.
    }
  }

  /**
   * Drops expired keys, soonest-expired first, in batches of 10,000 steps per macrotask so a large sweep
   * never holds the event loop for long. Runs on its own every `cleanupIntervalMs` once something was
   * written; call it to sweep now. Keys whose concurrency leases have all expired go too (in one pass).
   * @returns a promise of how many keys were dropped
   */
  sweep(): Promise<number> {
    if (this.sweeping || this.closed) return Promise.resolve(0)
    this.sweeping = true
    let dropped = this.leases.sweep(this.now())
    return new Promise<number>((resolve) => {
      const batch = () => {
        if (this.closed) {
          this.sweeping = false
          resolve(dropped)
          return
        }
        const now = this.now()
        let steps = 0
        let done = false
        while (steps < SWEEP_BATCH) {
          if (this.count === 0) {
            done = true
            break
          }
          const s = this.heap[0] as number
          const e = this.exp[s] as number
          if (e <= now) {
            this.delete(s)
            dropped++
          } else if (e > (this.heapKey[0] as number)) this.siftDown(0, s, e)
          else {
            // The soonest expiry in the heap is still ahead: nothing else has expired.
            done = true
            break
          }
          steps++
        }
        if (done) {
          this.sweeping = false
          resolve(dropped)
        } else setTimeout(batch, 0)
      }
      batch()
    })
  }
}
