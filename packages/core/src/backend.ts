// The Backend protocol: what every store (memory, SQLite, Redis, yours) implements.

/**
 * The algorithms fastlimit implements, each as a pure integer state transition in core.
 * See {@link algorithms} for their trade-offs; `'gcra'` is the default.
 */
export type Algorithm =
  | 'fixed-window'
  | 'sliding-window'
  | 'sliding-log'
  | 'token-bucket'
  | 'leaky-bucket'
  | 'gcra'

/**
 * One limit, as a backend sees it: validated integers only. Build it with {@link parseRule}, which
 * checks every field; backends may assume a `BucketConfig` they receive is valid.
 */
export interface BucketConfig {
  /** Which algorithm decides. */
  readonly algorithm: Algorithm
  /** How many units of cost are admitted per `windowMs` (a positive integer). */
  readonly limit: number
  /** The window, or for the bucket algorithms the time to refill `limit` units, in milliseconds. */
  readonly windowMs: number
  /**
   * Capacity of `'token-bucket'`, `'leaky-bucket'` and `'gcra'`: the most admitted at once.
   * @default limit
   */
  readonly burst?: number
}

/** What a backend answers for one bucket. Every field is exact, for every algorithm. */
export interface BackendResult {
  /** Whether the cost was admitted (and charged). For `peek`, whether a cost of 1 would be admitted. */
  readonly allowed: boolean
  /** The most that can be admitted at once: `limit`, or `burst` for the bucket algorithms. */
  readonly limit: number
  /** Units of cost that would still be admitted right now, after this call (0 when denied by a full bucket). */
  readonly remaining: number
  /** Epoch milliseconds at which the bucket is full again (`remaining === limit`) if nothing else is admitted. */
  readonly resetMs: number
  /**
   * Milliseconds until the same cost would be admitted, if nothing else is admitted meanwhile;
   * 0 when allowed. `Infinity` ({@link RETRY_NEVER}) when the cost exceeds what the bucket can ever hold.
   */
  readonly retryAfterMs: number
}

/**
 * `retryAfterMs` of a call whose cost is larger than the bucket's capacity (`limit`, or `burst`):
 * it can never be admitted, so there is no time to wait. Check with `Number.isFinite(result.retryAfterMs)`.
 * HTTP adapters send no `Retry-After` header for it.
 */
export const RETRY_NEVER: number = Number.POSITIVE_INFINITY

/**
 * A store of rate-limit state. Implement it to keep limits anywhere; prove it with
 * `backendConformance` from `@fastlimit/core/testing`.
 *
 * A backend stores, per `key`, one state per bucket (a bucket is identified by {@link bucketId}),
 * and applies the algorithm `step` functions from core to it. `key` is opaque: it may hold any
 * character, including braces, newlines and NUL, and must never collide with another key.
 *
 * Atomicity: `checkAndIncrement` and `checkAndIncrementAll` must be atomic with respect to every
 * other call on the same key, from any process sharing the store: read, step and write happen as
 * one unit (one JavaScript turn, one SQL transaction, one Lua script).
 */
export interface Backend {
  /**
   * Admits `cost` units against `bucket` for `key`, or denies without charging anything. Atomic.
   * @param cost a positive safe integer; a cost above the bucket's capacity is denied with
   *   `retryAfterMs: Infinity`.
   */
  checkAndIncrement(key: string, bucket: BucketConfig, cost: number): Promise<BackendResult>
  /**
   * Checks several buckets of one key all-or-nothing: either every bucket admits `cost` and all are
   * charged, or none is charged. Results come in the order of `buckets`. Atomic as a whole.
   *
   * In a denied call, each result reports the uncharged state, and its `allowed` says whether that
   * bucket alone would have admitted the cost.
   */
  checkAndIncrementAll(key: string, buckets: readonly BucketConfig[], cost: number): Promise<BackendResult[]>
  /** Reads a bucket without charging it: `allowed` says whether a cost of 1 would pass. */
  peek(key: string, bucket: BucketConfig): Promise<BackendResult>
  /** Forgets every bucket of `key`. */
  reset(key: string): Promise<void>
  /** Forgets every key this backend stores (only its own, never another application's data). */
  clear(): Promise<void>
  /** Releases what the backend opened (timers, connections it created). Idempotent. */
  close(): Promise<void>
}

/**
 * A stable identifier of a bucket's configuration within a key, used by every backend to name the
 * state of one rule (`'gcra:100:60000:100'`). Two rules with the same id share state.
 */
export function bucketId(bucket: BucketConfig): string {
  // Rules built by parseRule carry their id already.
  const id = (bucket as { readonly id?: unknown }).id
  if (typeof id === 'string') return id
  const burst = bucket.burst ?? bucket.limit
  return `${bucket.algorithm}:${bucket.limit}:${bucket.windowMs}:${burst}`
}

/**
 * Optional fast path for a backend that decides synchronously inside the process (MemoryBackend,
 * SQLiteBackend). `FastLimit` calls these directly, with no promise per call and no timer: such a
 * call cannot hang (bound it with the store's own lock timeout). Each has the meaning of its async twin.
 */
export interface SyncBackend extends Backend {
  checkAndIncrementSync(key: string, bucket: BucketConfig, cost: number): BackendResult
  checkAndIncrementAllSync(key: string, buckets: readonly BucketConfig[], cost: number): BackendResult[]
  peekSync(key: string, bucket: BucketConfig): BackendResult
}

/** Whether a backend offers the synchronous fast path of {@link SyncBackend}. */
export function isSyncBackend(backend: Backend): backend is SyncBackend {
  const b = backend as Partial<SyncBackend>
  return (
    typeof b.checkAndIncrementSync === 'function' &&
    typeof b.checkAndIncrementAllSync === 'function' &&
    typeof b.peekSync === 'function'
  )
}
