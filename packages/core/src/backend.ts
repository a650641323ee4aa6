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
  /**
   * The backend's clock, in epoch milliseconds, when it made this call (the `nowMs` it stepped with).
   * Optional, but a backend that implements {@link Backend.adjust} sets it on the results of
   * `checkAndIncrement` and `checkAndIncrementAll`: a reservation hands it back as
   * {@link Charge.atMs}, so that a refund knows how much of the charge the bucket still holds. The
   * step functions leave it out; a backend adds it to the result it returns.
   */
  readonly atMs?: number
}

/**
 * What one admitting call charged to one bucket, as the caller remembers it, handed back to
 * {@link Backend.adjust} so that a refund takes back only what that call charged and the bucket
 * still holds. Build it from the bucket's {@link BackendResult} of the admitting call.
 */
export interface Charge {
  /** The cost that call charged (a positive safe integer). A refund never exceeds it. */
  readonly cost: number
  /**
   * `resetMs` of the bucket's admitting result. It pins the charge down exactly, whatever the clocks:
   * the windows know from it the window (`'fixed-window'`: `resetMs - windowMs`; `'sliding-window'`:
   * `resetMs - 2 * windowMs`) or the log entry (`'sliding-log'`: `resetMs - windowMs`) that counted the
   * charge; the meters, how full the bucket was right after it.
   */
  readonly resetMs: number
  /**
   * `atMs` of the admitting result (the backend's clock at the charge), when the backend reported it.
   * The meters use it for an exact refund while the bucket still holds the charge; without it they
   * refund up to one millisecond's drain less than they could (never more).
   */
  readonly atMs?: number
}

/**
 * A concurrency limit as a backend sees it (validated by `FastLimit.acquire`): at most `limit` live
 * leases at once per key, each live for `leaseMs` after it was taken unless released earlier.
 */
export interface SlotConfig {
  /** The most leases held at once (a whole number from 1 to {@link MAX_LEASE_LIMIT}). */
  readonly limit: number
  /** How long a lease lives unless released, in milliseconds (1 to 2147483647). */
  readonly leaseMs: number
}

/** The largest `limit` of a {@link SlotConfig}: a key's live leases are kept in one small sorted list. */
export const MAX_LEASE_LIMIT = 10_000

/** What a backend answers to {@link Backend.acquire}. Every field is exact at the backend's clock. */
export interface AcquireResult {
  /** Whether the lease was taken (and recorded under its token). */
  readonly acquired: boolean
  /** The limit of the call. */
  readonly limit: number
  /** Live leases on the key after this call (this one included when acquired). */
  readonly holders: number
  /** When acquired, epoch milliseconds (backend clock) at which this lease expires; else 0. */
  readonly expiresMs: number
  /**
   * 0 when acquired; else milliseconds until the earliest live lease expires (a slot frees then at the
   * latest, sooner if a holder releases).
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
 * What `FastLimit` tells a backend about one call, besides its arguments.
 */
export interface CallOptions {
  /**
   * Epoch milliseconds, on this process's `Date.now()` clock, after which `FastLimit` no longer waits
   * for the answer (its `timeoutMs` after the call started) and has already applied its
   * `onBackendError` policy. A backend whose calls can be delayed (a network round trip, a lock wait)
   * must not charge anything once the deadline has passed where the call is applied: it rejects with
   * a `FastlimitError` of code `ERR_FASTLIMIT_TIMEOUT` instead, so a call the limiter gave up on never
   * charges later (RedisBackend compares it with the server's `TIME` inside its script). Absent when
   * the caller sets no deadline.
   */
  readonly deadline?: number
}

/**
 * A store of rate-limit state. Implement it to keep limits anywhere; prove it with
 * `backendConformance` from `@fastlimit/core/testing`.
 *
 * Only {@link Backend.checkAndIncrement} is required. Every other member is optional: a feature that
 * needs one the backend lacks (several rules at once, `peek`, `reset`, `clear`, `adjust`,
 * `acquire`/`release`) fails with a `ConfigError` naming the missing method, as early as it can be
 * known (at `rateLimit()` for the rules of a middleware, else at the call). The conformance suite runs the cases of what is implemented.
 *
 * A backend stores, per `key`, one state per bucket (a bucket is identified by {@link bucketId}),
 * and applies the algorithm `step` functions from core to it. `key` is opaque: it may hold any
 * UTF-16 string, including braces, newlines, NUL and lone surrogates, and must never collide with
 * another key (encode it injectively: JSON, hex, or a store that compares strings exactly).
 *
 * Time: read it from one injectable clock (an option defaulting to `Date.now`, or the store's own
 * clock), never from `Date.now()` in the middle of the code, so that the conformance suite can drive it.
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
   * @param options the call's deadline ({@link CallOptions}); may be absent.
   */
  checkAndIncrement(
    key: string,
    bucket: BucketConfig,
    cost: number,
    options?: CallOptions,
  ): Promise<BackendResult>
  /**
   * Checks several buckets of one key all-or-nothing: either every bucket admits `cost` and all are
   * charged, or none is charged. Results come in the order of `buckets`. Atomic as a whole.
   * Optional: without it, a limiter with several rules at once fails with a `ConfigError`.
   *
   * In a denied call, each result reports the uncharged state, and its `allowed` says whether that
   * bucket alone would have admitted the cost.
   */
  checkAndIncrementAll?(
    key: string,
    buckets: readonly BucketConfig[],
    cost: number,
    options?: CallOptions,
  ): Promise<BackendResult[]>
  /**
   * Changes what is charged to buckets of one key after the fact, all of them in one atomic unit
   * (a reservation's settle, cancel or refund). Optional: without it, `FastLimit.reserve` and
   * `FastLimit.refund` fail with a `ConfigError` naming `adjust`. Apply core's
   * {@link adjustStep} (or {@link adjustAll}) to each bucket's state, read at the backend's own clock,
   * and write back every output whose `changed` or `rebased` is true.
   *
   * - `delta < 0` refunds `-delta` units. A refund never lifts a bucket above its capacity and never
   *   gives back more than the charge still holds: with `charges`, each bucket refunds at most
   *   `min(-delta, charges[i].cost)`, and only out of the window, log entry or level that counted that
   *   charge (a charge whose window has passed, or that the meter has drained, refunds nothing); without
   *   `charges` (a refund from a caller that kept no record), up to `-delta` out of what the bucket
   *   holds now, newest first. A refund only ever lowers what is counted, so no `retryAfterMs` given
   *   earlier becomes too short.
   * - `delta > 0` charges `delta` more units now, unconditionally (a settle above the reserved cost),
   *   but a bucket never holds more than its capacity: it fills up to full (a window counts at most
   *   `limit`) and the excess beyond that is forgiven. Nothing is ever denied.
   * - `delta === 0` changes nothing.
   *
   * Atomic with respect to every other call on the key, and, like `checkAndIncrement`, never applied
   * once `options.deadline` has passed where it would be applied.
   *
   * @param buckets the key's buckets to adjust (one or more)
   * @param delta a safe integer: negative refunds, positive charges more
   * @param charges `undefined`, or one {@link Charge} per bucket, in the order of `buckets`: what the
   *   call being settled charged to it
   * @param options the call's deadline ({@link CallOptions}); may be absent.
   * @returns per bucket, in the order of `buckets`, its state after the adjustment as `peek` reports it
   *   (`allowed`: whether a cost of 1 would pass now)
   */
  adjust?(
    key: string,
    buckets: readonly BucketConfig[],
    delta: number,
    charges: readonly Charge[] | undefined,
    options?: CallOptions,
  ): Promise<BackendResult[]>
  /**
   * Takes a lease on `key` under the token `token` if fewer than `slots.limit` leases are live, or
   * denies without recording anything. Atomic with respect to every other `acquire` and `release` on the
   * key, from any process sharing the store. First drops the key's expired leases (a lease is live while
   * `now < expiresMs`), then counts. Leases live in a namespace of their own: `checkAndIncrement` on the
   * same key never sees them, and `reset` does not release them. Optional: without it (and `release`),
   * `FastLimit.acquire` fails with a `ConfigError` naming `acquire`.
   *
   * Never applied once `options.deadline` has passed where it would be applied (it rejects with
   * `ERR_FASTLIMIT_TIMEOUT` instead). Stored state is bounded: at most `limit` live leases per key, and
   * a key whose leases have all expired or been released holds nothing (or expires on its own).
   *
   * @param token unique per lease (1 to 128 printable ASCII characters; `FastLimit` makes them random)
   */
  acquire?(key: string, slots: SlotConfig, token: string, options?: CallOptions): Promise<AcquireResult>
  /**
   * Ends the lease `token` on `key`, if it is still live, freeing its slot; a lease that expired or was
   * released already changes nothing (and never frees another lease's slot). Atomic. Idempotent.
   * @returns whether the lease was live until this call
   */
  release?(key: string, token: string, options?: CallOptions): Promise<boolean>
  /** Reads a bucket without charging it: `allowed` says whether a cost of 1 would pass. Optional. */
  peek?(key: string, bucket: BucketConfig, options?: CallOptions): Promise<BackendResult>
  /** Forgets every bucket of `key`. Optional. */
  reset?(key: string, options?: CallOptions): Promise<void>
  /** Forgets every key this backend stores (only its own, never another application's data). Optional. */
  clear?(): Promise<void>
  /** Releases what the backend opened (timers, connections it created). Idempotent. Optional. */
  close?(): Promise<void>
  /**
   * Called by `FastLimit` when its circuit breaker opens: the limiter has given up on every call in
   * flight. Drop them, so that none is applied later (close the connection they are queued on), and be
   * ready for new calls (connect again). RedisBackend closes and reopens its connection. Optional.
   */
  reconnect?(reason: Error): void
  /**
   * A short name of the kind of store (`'memory'`, `'redis'`, `'sqlite'`), for messages and metrics.
   * Never an address or a credential. Optional.
   */
  readonly kind?: string
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
 * The synchronous fast path, an optional part of the protocol for a backend that can decide inside
 * the process without waiting (MemoryBackend, SQLiteBackend). When `checkAndIncrementSync` is present,
 * `FastLimit` calls it directly: no promise per call and no timer. Each method has the meaning of its
 * asynchronous twin, and may return `undefined` to say "this call cannot be decided without waiting
 * now" (SQLite: another process holds the write lock); `FastLimit` then makes the asynchronous call,
 * with its deadline. A synchronous method must never block for long: it is called on the event loop.
 *
 * A wrapper (a `Proxy`, a delegating class) that forwards these methods keeps the fast path.
 */
export interface SyncBackend extends Backend {
  checkAndIncrementSync(key: string, bucket: BucketConfig, cost: number): BackendResult | undefined
  checkAndIncrementAllSync?(
    key: string,
    buckets: readonly BucketConfig[],
    cost: number,
  ): BackendResult[] | undefined
  /**
   * {@link Backend.checkAndIncrement} without a result object: the answer is written into `out`, an
   * object the caller owns (every one of its five fields, before returning), and the call returns
   * `true`; `false` means "cannot decide without waiting now", as `undefined` does for
   * `checkAndIncrementSync` (`out` is then left alone). Optional: `FastLimit` prefers it for a single
   * rule when present, so that a check allocates nothing but its `Decision`. Never keep `out`.
   */
  checkAndIncrementSyncTo?(key: string, bucket: BucketConfig, cost: number, out: ResultSink): boolean
  /**
   * Whether `FastLimit` should try the synchronous methods for a charge now. Optional (absent: always).
   * A store that batches the writes made together answers `false` once this turn has written (SQLite's
   * group commit does), so that the decisions of a `Promise.all` go asynchronously and share one
   * transaction. Cheap and side-effect free: it is asked before each check and reservation.
   */
  syncNow?(): boolean
  peekSync?(key: string, bucket: BucketConfig): BackendResult | undefined
  adjustSync?(
    key: string,
    buckets: readonly BucketConfig[],
    delta: number,
    charges: readonly Charge[] | undefined,
  ): BackendResult[] | undefined
  acquireSync?(key: string, slots: SlotConfig, token: string): AcquireResult | undefined
  releaseSync?(key: string, token: string): boolean | undefined
}

/** A {@link BackendResult} to write into: what {@link SyncBackend.checkAndIncrementSyncTo} fills. */
export interface ResultSink {
  allowed: boolean
  limit: number
  remaining: number
  resetMs: number
  retryAfterMs: number
}

/** Whether a backend offers the synchronous fast path of {@link SyncBackend}. */
export function isSyncBackend(backend: Backend): backend is SyncBackend {
  return typeof (backend as Partial<SyncBackend>).checkAndIncrementSync === 'function'
}
