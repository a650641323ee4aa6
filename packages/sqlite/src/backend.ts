// SQLiteBackend: the core algorithms applied in BEGIN IMMEDIATE transactions (decisions made together share one), on one file shared by
// every process; waits for a lock held elsewhere happen off the event loop, and a file deleted or replaced is reopened.
import fs from 'node:fs'
import path from 'node:path'
import {
  type AcquireResult,
  type Backend,
  type BackendResult,
  type BucketConfig,
  type CallOptions,
  type Charge,
  ConfigError,
  checkAdjustArguments,
  checkLeaseArguments,
  FastlimitError,
  type SlotConfig,
  type SyncBackend,
} from '@fastlimit/core'
import Database from 'better-sqlite3'
import { type Bodies, type Connection, connect, type GroupMember, LOCK_SPIN_MS } from './connection'
import { backendError, isBusy, isFull, lockTimeout, openError, sqliteCode } from './errors'
import { isBusyError, LockQueue } from './lock'
import { ensureSchema, isTableName, SWEEP_BATCH } from './schema'

/** Options of {@link SQLiteBackend}. */
export interface SQLiteBackendOptions {
  /**
   * The table that holds the state: 1 to 60 letters, digits and underscores, not starting with a digit
   * or `sqlite_`. A second table `<tableName>_meta` holds the schema version, and an index
   * `<tableName>_expires_at` serves the sweep. Give each application sharing one file its own name.
   * @default 'fastlimit'
   */
  tableName?: string
  /**
   * How long a call waits, at most, for a write lock that another connection holds (a backup, the sqlite3
   * shell, a long transaction in another process) before it fails with `ERR_FASTLIMIT_TIMEOUT`, nothing
   * charged (`FastLimit` then applies its `onBackendError` policy), in milliseconds. A call from `FastLimit`
   * stops waiting at its deadline (`timeoutMs`) if that comes first. The wait does not block the event loop:
   * a statement waits at most 2 ms for the lock, then the call is retried on short timers. Also how long the
   * constructor waits for the lock while it prepares the table.
   * @default 1000
   */
  busyTimeoutMs?: number
  /**
   * How often an `unref`ed timer deletes expired rows, in milliseconds; `0` turns it off (call
   * {@link SQLiteBackend.sweep} yourself). Expired rows are ignored by every read either way.
   * @default 60_000
   */
  cleanupIntervalMs?: number
  /**
   * How often an `unref`ed timer checks that the database file at the path is still the one open (same
   * device and inode), in milliseconds; `0` turns it off. A file deleted or replaced (renamed over) while
   * open is noticed within this interval: SQLiteBackend then reopens the path (creating the file and its
   * table if needed), so that every process decides on the same file again. A `Database` you passed in
   * cannot be reopened by SQLiteBackend: its calls then fail with `ERR_FASTLIMIT_BACKEND` until you replace it.
   * @default 1000
   */
  fileCheckIntervalMs?: number
  /**
   * Group commit: how calls made together share one transaction (one write of the log instead of one each).
   * - `'async'`: the asynchronous writes (`checkAndIncrement`, `checkAndIncrementAll`, `adjust`, `acquire`,
   *   `release`, `reset`) made in one turn of the event loop wait for the next microtask and run there, in
   *   the order they were made, in one `BEGIN IMMEDIATE` transaction (at most 256 per transaction): each
   *   sees the writes of those before it, exactly as one after the other, and each promise settles only once
   *   that transaction has committed. A call that fails (a bad argument, a deadline passed) fails alone;
   *   when the transaction fails as a whole (a full disk), each call runs again alone, so that each ends as
   *   it would have without group commit. The synchronous methods still decide and commit before they
   *   return (a group still waiting commits first, with them).
   * - `'turn'`: the same, and the synchronous fast path takes part: after the first synchronous write of a
   *   turn, the synchronous methods answer `undefined` until the next microtask, so that `FastLimit` makes
   *   those calls asynchronously and they share one transaction. For `FastLimit` under concurrent load; a
   *   caller of the synchronous methods must then make the asynchronous call when one answers `undefined`
   *   (as it must anyway when another process holds the lock).
   * - `'off'`: one transaction per call.
   * @default 'async'
   */
  groupCommit?: 'async' | 'turn' | 'off'
  /**
   * The clock, in epoch milliseconds. Every process sharing a file must use the same time source:
   * the default is right for processes on one host. Inject one in tests.
   * @default Date.now
   */
  clock?: () => number
}

const OPTIONS = [
  'tableName',
  'busyTimeoutMs',
  'cleanupIntervalMs',
  'fileCheckIntervalMs',
  'groupCommit',
  'clock',
]
const GROUP_COMMIT = ['async', 'turn', 'off']

/**
 * The most calls one group transaction runs: a bound on how long it holds the write lock (a few
 * milliseconds) that other processes wait for. A larger group commits in several transactions, in order.
 */
const MAX_GROUP = 256

/** What a synchronous call in a group that found the lock taken ends with: it answers `undefined`. */
const BUSY = Symbol('busy')

/** A write call waiting for its group's transaction (or, synchronous, running in it now). */
class Member implements GroupMember {
  failed = false
  outcome: unknown = undefined
  constructor(
    private readonly body: (bodies: Bodies, deadline: number | undefined) => unknown,
    readonly multi: boolean,
    /** The caller's deadline, checked inside the transaction. */
    readonly deadline: number | undefined,
    /** `Date.now()` when the call was made: busyTimeoutMs counts from there. */
    readonly started: number,
    /** Undefined for a synchronous call, which reads `failed` and `outcome` itself. */
    readonly resolve: ((value: never) => void) | undefined,
    readonly reject: ((err: unknown) => void) | undefined,
  ) {}

  run(bodies: Bodies): unknown {
    return this.body(bodies, this.deadline)
  }

  settle(failed: boolean, outcome: unknown): void {
    if (this.resolve === undefined) {
      this.failed = failed
      this.outcome = outcome
    } else if (failed) (this.reject as (err: unknown) => void)(outcome)
    else this.resolve(outcome as never)
  }
}
const MAX_TIMER_MS = 2 ** 31 - 1

function isDatabase(value: unknown): value is Database.Database {
  if (typeof value !== 'object' || value === null) return false
  const db = value as Record<string, unknown>
  return (
    typeof db.prepare === 'function' &&
    typeof db.transaction === 'function' &&
    typeof db.pragma === 'function' &&
    typeof db.exec === 'function' &&
    typeof db.open === 'boolean'
  )
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value)
  if (typeof value === 'function') return 'a function'
  if (typeof value === 'object' && value !== null) return Object.prototype.toString.call(value)
  return String(value)
}

function checkMs(name: string, value: unknown, min: number, example: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > MAX_TIMER_MS) {
    throw new ConfigError(
      `[fastlimit] [sqlite] ${name} must be a whole number of milliseconds from ${min}${min === 0 ? ' (off)' : ''} ` +
        `to ${MAX_TIMER_MS}, got ${show(value)}. For example ${example}.`,
    )
  }
  return value
}

/** The cost of a decision: a positive safe integer (FastLimit checks its own; this guards direct callers). */
function checkCost(cost: number): void {
  if (!Number.isSafeInteger(cost) || cost < 1) {
    throw new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [sqlite] cost must be a positive whole number up to 2^53 - 1, got ${show(cost)}.`,
    )
  }
}

/** Checks, before SQLite gets a say, that a database file can be created and written at `file`. */
function checkPath(file: string): void {
  const dir = path.dirname(file)
  let dirStat: fs.Stats
  try {
    dirStat = fs.statSync(dir)
  } catch (err) {
    throw new ConfigError(
      `[fastlimit] [sqlite] The directory ${show(dir)} of the database file ${show(file)} does not exist: ` +
        `create it first (mkdir -p ${dir}) or pass another path.`,
      { cause: err },
    )
  }
  if (!dirStat.isDirectory()) {
    throw new ConfigError(
      `[fastlimit] [sqlite] ${show(dir)} (in the database path ${show(file)}) is not a directory: pass another path.`,
    )
  }
  let exists = true
  try {
    if (fs.statSync(file).isDirectory()) {
      throw new ConfigError(
        `[fastlimit] [sqlite] The database path ${show(file)} is a directory: pass a file path inside it, ` +
          `e.g. ${show(path.join(file, 'ratelimit.db'))}.`,
      )
    }
  } catch (err) {
    if (err instanceof ConfigError) throw err
    exists = false
  }
  if (exists) {
    try {
      fs.accessSync(file, fs.constants.R_OK | fs.constants.W_OK)
    } catch (err) {
      throw new ConfigError(
        `[fastlimit] [sqlite] The database file ${show(file)} is read-only for this process: SQLiteBackend ` +
          'writes on every decision. Make it writable (and its directory), or pass another path.',
        { cause: err },
      )
    }
  }
  try {
    fs.accessSync(dir, fs.constants.W_OK)
  } catch (err) {
    throw new ConfigError(
      `[fastlimit] [sqlite] The directory ${show(dir)} is read-only for this process: SQLite needs to create ` +
        `the -wal and -shm files of ${show(path.basename(file))} beside it. Make it writable, or pass another path.`,
      { cause: err },
    )
  }
}

/** A file's identity: device and inode, or undefined when nothing can be found at the path. */
function identityOf(file: string): string | undefined {
  try {
    const st = fs.statSync(file, { throwIfNoEntry: false, bigint: true })
    return st === undefined ? undefined : `${st.dev}:${st.ino}`
  } catch {
    // ENOTDIR, EACCES on a directory on the way: nothing we can open there either.
    return undefined
  }
}

/** How soon to try again to open a replaced file that was locked by another connection. */
const REOPEN_RETRY_MS = 20

/**
 * Prepares an open database for SQLiteBackend: WAL, `synchronous=NORMAL` when we own it, and the schema,
 * waiting up to `waitMs` for the lock. Leaves the busy timeout at `waitMs`.
 */
function prepareDatabase(
  db: Database.Database,
  owned: boolean,
  table: string,
  where: string,
  waitMs: number,
): void {
  db.pragma(`busy_timeout = ${waitMs}`)
  if (!db.memory) {
    // Readers never wait for writers, and commits append to the log instead of rewriting pages.
    if (db.pragma('journal_mode', { simple: true }) !== 'wal') db.pragma('journal_mode = WAL')
    // Safe against a crashed process in WAL mode (only power loss can drop the last commits).
    if (owned) db.pragma('synchronous = NORMAL')
  }
  ensureSchema(db, table, where)
}

/** Resolves on the next turn of the event loop, after `ms` (0: after pending I/O). */
function pause(ms: number): Promise<void> {
  return new Promise((resolve) => (ms > 0 ? setTimeout(resolve, ms) : setImmediate(resolve)))
}

/**
 * A rate-limit backend on SQLite (better-sqlite3): limits shared by every process on one host through
 * one file, surviving restarts, with no server to run.
 *
 * - Exact across processes: each decision reads the state, applies the core algorithm `step`, and writes
 *   it back inside a `BEGIN IMMEDIATE` transaction, so processes serialize on the write lock.
 * - Group commit: writes made together (in one turn of the event loop) share one transaction, in the order
 *   they were made, each settling after the commit (see {@link SQLiteBackendOptions.groupCommit}).
 * - Fast: WAL, `synchronous=NORMAL`, statements prepared once, and the synchronous fast path of
 *   {@link SyncBackend}, so `FastLimit` decides without a promise per backend call.
 * - Never stalls the event loop on a lock held elsewhere: the synchronous methods wait at most 2 ms and then
 *   answer `undefined`; the asynchronous ones retry on short timers until the call's deadline (or
 *   `busyTimeoutMs`), then fail with `ERR_FASTLIMIT_TIMEOUT` without charging anything.
 * - A full disk is `ERR_FASTLIMIT_STORE_FULL`; a file deleted or replaced while open is noticed within
 *   `fileCheckIntervalMs` and reopened.
 * - Expired rows are ignored by reads and deleted by a periodic, batched {@link SQLiteBackend.sweep}.
 * - A missing directory, a read-only or corrupt file, or a table from a newer release fails at
 *   construction with a `ConfigError`, not at the first request.
 *
 * @example
 * ```ts
 * import { FastLimit } from '@fastlimit/core'
 * import { SQLiteBackend } from '@fastlimit/sqlite'
 *
 * const limiter = new FastLimit({ backend: new SQLiteBackend('/var/lib/myapp/ratelimit.db') })
 * const d = await limiter.check(userId, '100/min')
 * ```
 */
export class SQLiteBackend implements Backend, SyncBackend {
  /** The kind of store, for messages and metrics. */
  readonly kind = 'sqlite'
  /** The table holding the state. */
  readonly tableName: string

  // TypeScript `private`, not `#private`: a Proxy or a delegating wrapper around the backend must work.
  private conn: Connection
  private readonly owned: boolean
  /** The file whose identity is watched, or undefined (in memory, or a Database whose file is unknown). */
  private readonly file: string | undefined
  private fileId: string | undefined
  /** The identity of the -wal file beside it when it was opened (ours while we are connected). */
  private walId: string | undefined
  /** Set while the file at the path is not the one open and it could not be reopened: every call fails with it. */
  private failure: FastlimitError | undefined
  private readonly where: string
  /** The clock, floored to whole epoch milliseconds. */
  private readonly now: () => number
  private readonly busyTimeoutMs: number
  private readonly lock: LockQueue
  private sweepTimer: ReturnType<typeof setInterval> | undefined
  private fileTimer: ReturnType<typeof setInterval> | undefined
  private sweeping: Promise<number> | undefined
  private closed = false
  private readonly groupCommit: 'async' | 'turn' | 'off'
  /** The asynchronous writes of this turn, waiting for the microtask that commits them together. */
  private pending: Member[] = []
  /** A synchronous write ran in this turn (cleared at the next microtask); not with `'off'`. */
  private marked = false
  /** `'turn'`: the synchronous methods answer `undefined` after a synchronous write of this turn. */
  private readonly holdSync: boolean
  private readonly flushTask = (): void => this.flush()
  private readonly unmarkTask = (): void => {
    this.marked = false
  }

  /**
   * Opens (creating if needed) the database and its table.
   *
   * @param database a file path (its directory must exist), `':memory:'` for a private in-memory
   *   database, or a better-sqlite3 `Database` you opened. A `Database` you pass is never closed by
   *   SQLiteBackend; it is switched to WAL (unless in memory), and its busy timeout is set to 2 ms so that
   *   no call blocks the event loop on a lock (see the README). Its `synchronous` setting and
   *   `PRAGMA user_version` are left alone.
   * @throws ConfigError for a bad option, a missing directory, a read-only, full or corrupt file, a table
   *   that fastlimit did not create, or one written by a newer release
   */
  constructor(database: string | Database.Database, options: SQLiteBackendOptions = {}) {
    if (typeof options !== 'object' || options === null) {
      throw new ConfigError(
        `[fastlimit] [sqlite] SQLiteBackend options must be an object, got ${show(options)}.`,
      )
    }
    for (const key of Object.keys(options)) {
      if (!OPTIONS.includes(key)) {
        throw new ConfigError(
          `[fastlimit] [sqlite] Unknown option ${show(key)}: SQLiteBackend takes ${OPTIONS.join(', ')}.`,
        )
      }
    }
    const {
      tableName = 'fastlimit',
      busyTimeoutMs = 1000,
      cleanupIntervalMs = 60_000,
      fileCheckIntervalMs = 1000,
      groupCommit = 'async',
      clock = Date.now,
    } = options
    if (!isTableName(tableName)) {
      throw new ConfigError(
        `[fastlimit] [sqlite] tableName must be 1 to 60 letters, digits and underscores, not starting with a ` +
          `digit or "sqlite_", got ${show(tableName)}. For example 'fastlimit'.`,
      )
    }
    checkMs('busyTimeoutMs', busyTimeoutMs, 0, '1000')
    checkMs('cleanupIntervalMs', cleanupIntervalMs, 0, '60000')
    checkMs('fileCheckIntervalMs', fileCheckIntervalMs, 0, '1000')
    if (!GROUP_COMMIT.includes(groupCommit)) {
      throw new ConfigError(
        `[fastlimit] [sqlite] groupCommit must be 'async', 'turn' or 'off', got ${show(groupCommit)}.`,
      )
    }
    this.groupCommit = groupCommit
    this.holdSync = groupCommit === 'turn'
    if (typeof clock !== 'function') {
      throw new ConfigError(
        '[fastlimit] [sqlite] clock must be a function returning epoch milliseconds, e.g. Date.now.',
      )
    }

    let db: Database.Database
    let where: string
    let file: string | undefined
    if (typeof database === 'string') {
      if (database.includes('\0')) {
        throw new ConfigError(
          `[fastlimit] [sqlite] The database path ${show(database)} contains a NUL character, which would cut it ` +
            'short and open another file: pass a plain file path.',
        )
      }
      if (database === '') {
        throw new ConfigError(
          "[fastlimit] [sqlite] The database path is empty: pass a file path such as './ratelimit.db', or ':memory:'.",
        )
      }
      const memory = database === ':memory:'
      file = memory ? undefined : path.resolve(database)
      where = file === undefined ? 'The in-memory database' : `The database file ${show(file)}`
      if (file !== undefined) checkPath(file)
      try {
        db = new Database(file ?? database, { timeout: busyTimeoutMs })
      } catch (err) {
        throw openError(err, where, busyTimeoutMs)
      }
      this.owned = true
    } else if (isDatabase(database)) {
      db = database
      where = `The Database passed to SQLiteBackend (${show(db.name)})`
      if (!db.open) {
        throw new ConfigError(
          `[fastlimit] [sqlite] ${where} is closed: pass an open Database, or a file path.`,
        )
      }
      if (db.readonly) {
        throw new ConfigError(
          `[fastlimit] [sqlite] ${where} was opened read-only: SQLiteBackend writes on every decision. ` +
            'Open it without { readonly: true }, or pass a file path.',
        )
      }
      // Its file, if it is a plain path that exists (not in memory, not a temporary or URI name).
      if (!db.memory && db.name !== '' && identityOf(path.resolve(db.name)) !== undefined) {
        file = path.resolve(db.name)
      }
      this.owned = false
    } else {
      throw new ConfigError(
        `[fastlimit] [sqlite] SQLiteBackend takes a file path, ':memory:' or a better-sqlite3 Database, ` +
          `got ${show(database)}.`,
      )
    }

    const now = () => Math.floor(clock())
    try {
      prepareDatabase(db, this.owned, tableName, where, busyTimeoutMs)
      this.conn = connect(db, tableName, now)
    } catch (err) {
      if (this.owned) db.close()
      throw openError(err, where, busyTimeoutMs)
    }

    this.tableName = tableName
    this.file = file
    this.fileId = file === undefined ? undefined : identityOf(file)
    this.walId = file === undefined ? undefined : identityOf(`${file}-wal`)
    this.where = where
    this.busyTimeoutMs = busyTimeoutMs
    this.now = now
    this.lock = new LockQueue({
      failed: backendError,
      timedOut: (waitedMs, byDeadline, busy) => lockTimeout(waitedMs, byDeadline, busyTimeoutMs, busy),
      noWait: (run) => this.conn.noWait(run),
    })
    if (cleanupIntervalMs > 0) {
      this.sweepTimer = setInterval(() => {
        // A failed background sweep is retried at the next interval; decisions report real failures.
        this.sweep().catch(() => undefined)
      }, cleanupIntervalMs)
      this.sweepTimer.unref()
    }
    if (fileCheckIntervalMs > 0 && this.fileId !== undefined) {
      this.fileTimer = setInterval(() => this.checkFile(), fileCheckIntervalMs)
      this.fileTimer.unref()
    }
  }

  /**
   * The better-sqlite3 connection. Yours if you passed it in (SQLiteBackend never closes it); otherwise
   * opened by SQLiteBackend, replaced when the file was deleted or replaced, and closed by {@link close}.
   */
  get database(): Database.Database {
    return this.conn.db
  }

  /** Throws if no call can be made now: closed, or the file is gone and could not be reopened. */
  private usable(): void {
    if (this.closed) throw this.closedError()
    if (this.failure !== undefined) throw this.failure
  }

  private closedError(): FastlimitError {
    return new FastlimitError(
      'ERR_FASTLIMIT_CLOSED',
      '[fastlimit] [sqlite] This SQLiteBackend was closed; create a new one.',
    )
  }

  /**
   * Whether `FastLimit` should take the synchronous fast path now ({@link SyncBackend.syncNow}): `false`
   * once a synchronous write ran in this turn or asynchronous writes wait for this turn's group, so that
   * decisions made together (`Promise.all` of checks) go asynchronously and share one transaction. Always
   * `true` with `groupCommit: 'off'`. A direct caller of the synchronous methods is not affected.
   */
  syncNow(): boolean {
    return !this.marked && this.pending.length === 0
  }

  /**
   * {@link Backend.checkAndIncrement}, synchronously: one `BEGIN IMMEDIATE` transaction, committed before it
   * returns (with the asynchronous calls of this turn still waiting for theirs, which run first).
   * @returns the result, or `undefined` when another connection holds the write lock (after waiting at
   *   most 2 ms, or at once while other calls wait for it): nothing was charged; make the asynchronous call,
   *   which waits without blocking the event loop. With `groupCommit: 'turn'`, also `undefined` for every
   *   call after the first of a turn: the asynchronous call then shares a transaction with the others.
   */
  checkAndIncrementSync(key: string, bucket: BucketConfig, cost: number): BackendResult | undefined {
    this.usable()
    checkCost(cost)
    if (this.lock.waiting || this.pending.length > 0 || (this.marked && this.holdSync)) {
      return this.syncInGroup((b) => b.check(key, bucket, cost, undefined), false)
    }
    try {
      const result = this.conn.check(key, bucket, cost, undefined)
      if (this.groupCommit !== 'off') this.mark()
      return result
    } catch (err) {
      if (isBusyError(err)) return undefined
      throw backendError(err)
    }
  }

  /**
   * {@link Backend.checkAndIncrementAll}, synchronously: every bucket in one `BEGIN IMMEDIATE` transaction.
   * @returns the results, or `undefined` when the write lock is held elsewhere (see {@link checkAndIncrementSync}).
   */
  checkAndIncrementAllSync(
    key: string,
    buckets: readonly BucketConfig[],
    cost: number,
  ): BackendResult[] | undefined {
    if (buckets.length === 1) {
      const one = this.checkAndIncrementSync(key, buckets[0] as BucketConfig, cost)
      return one === undefined ? undefined : [one]
    }
    this.usable()
    checkCost(cost)
    if (this.lock.waiting || this.pending.length > 0 || (this.marked && this.holdSync)) {
      return this.syncInGroup((b) => b.checkAll(key, buckets, cost, undefined), true)
    }
    try {
      const results = this.conn.checkAll(key, buckets, cost, undefined)
      if (this.groupCommit !== 'off') this.mark()
      return results
    } catch (err) {
      if (isBusyError(err)) return undefined
      throw backendError(err)
    }
  }

  /**
   * {@link Backend.adjust}, synchronously: every bucket in one `BEGIN IMMEDIATE` transaction (a refund or
   * an extra charge, see `adjustStep` in core).
   * @returns the results, or `undefined` when the write lock is held elsewhere (see {@link checkAndIncrementSync}).
   */
  adjustSync(
    key: string,
    buckets: readonly BucketConfig[],
    delta: number,
    charges: readonly Charge[] | undefined,
  ): BackendResult[] | undefined {
    this.usable()
    checkAdjustArguments('sqlite', buckets, delta, charges)
    return this.syncWrite((b) => b.adjust(key, buckets, delta, charges, undefined), buckets.length > 1)
  }

  /**
   * {@link Backend.acquire}, synchronously: one `BEGIN IMMEDIATE` transaction on `<tableName>_leases`
   * (one row per live lease; expired rows of the key are deleted first).
   * @returns the result, or `undefined` when the write lock is held elsewhere (see {@link checkAndIncrementSync}).
   */
  acquireSync(key: string, slots: SlotConfig, token: string): AcquireResult | undefined {
    this.usable()
    checkLeaseArguments('sqlite', slots, token)
    return this.syncWrite((b) => b.acquire(key, slots, token, undefined), true)
  }

  /**
   * {@link Backend.release}, synchronously: one `BEGIN IMMEDIATE` transaction.
   * @returns whether the lease was live, or `undefined` when the write lock is held elsewhere.
   */
  releaseSync(key: string, token: string): boolean | undefined {
    this.usable()
    checkLeaseArguments('sqlite', undefined, token)
    return this.syncWrite((b) => b.release(key, token, undefined), false)
  }

  /**
   * {@inheritDoc Backend.acquire} One `BEGIN IMMEDIATE` transaction; waits for the lock as
   * {@link checkAndIncrement} does, and is never applied after its deadline. Leases live in the table
   * `<tableName>_leases` (one row per live lease); expired ones are deleted by the next acquire on the
   * key and by {@link sweep}.
   */
  acquire(key: string, slots: SlotConfig, token: string, options?: CallOptions): Promise<AcquireResult> {
    try {
      this.usable()
      checkLeaseArguments('sqlite', slots, token)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.write((b, deadline) => b.acquire(key, slots, token, deadline), true, options)
  }

  /** {@inheritDoc Backend.release} One `BEGIN IMMEDIATE` transaction. */
  release(key: string, token: string, options?: CallOptions): Promise<boolean> {
    try {
      this.usable()
      checkLeaseArguments('sqlite', undefined, token)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.write((b, deadline) => b.release(key, token, deadline), false, options)
  }

  /**
   * {@link Backend.peek}, synchronously: one read, no transaction and no write lock (in WAL mode readers
   * never wait for a writer).
   * @returns the result, or `undefined` in the rare case the read had to wait (e.g. a WAL recovery elsewhere)
   */
  peekSync(key: string, bucket: BucketConfig): BackendResult | undefined {
    this.usable()
    // A read made after writes of this turn sees them.
    if (this.pending.length > 0) this.flush()
    try {
      return this.conn.peek(key, bucket)
    } catch (err) {
      if (isBusyError(err)) return undefined
      throw backendError(err)
    }
  }

  /**
   * Runs `attempt` now or once the write lock is free, without blocking the event loop, waiting until the
   * earlier of the caller's deadline and `busyTimeoutMs` from now. `attempt` gets the caller's deadline
   * (checked inside the transaction: nothing is applied after it); busyTimeoutMs only bounds the wait.
   */
  private waitFor<T>(
    attempt: (deadline: number | undefined) => T,
    options: CallOptions | undefined,
  ): Promise<T> {
    // The writes of this turn made before this call go first.
    if (this.pending.length > 0) this.flush()
    const given = options?.deadline
    const deadline = typeof given === 'number' && !Number.isNaN(given) ? given : undefined
    const own = Date.now() + this.busyTimeoutMs
    const byDeadline = deadline !== undefined && deadline <= own
    return this.lock.run(
      () => {
        this.usable()
        return attempt(deadline)
      },
      byDeadline ? (deadline as number) : own,
      byDeadline,
    )
  }

  /**
   * An asynchronous write: joins this turn's group (committed at the next microtask), or, with
   * `groupCommit: 'off'` or while calls wait for a lock held elsewhere, runs in a transaction of its own
   * through {@link waitFor}.
   */
  private write<T>(
    body: (bodies: Bodies, deadline: number | undefined) => T,
    multi: boolean,
    options: CallOptions | undefined,
  ): Promise<T> {
    if (this.groupCommit === 'off' || this.lock.waiting) {
      return this.waitFor((deadline) => this.conn.one((b) => body(b, deadline)), options)
    }
    const given = options?.deadline
    const deadline = typeof given === 'number' && !Number.isNaN(given) ? given : undefined
    return new Promise<T>((resolve, reject) => {
      if (this.pending.push(new Member(body, multi, deadline, Date.now(), resolve, reject)) === 1) {
        queueMicrotask(this.flushTask)
      }
    })
  }

  /**
   * A synchronous write: in a transaction of its own, unless this turn already groups writes (see
   * {@link syncInGroup}).
   */
  private syncWrite<T>(body: (bodies: Bodies) => T, multi: boolean): T | undefined {
    if (this.lock.waiting || this.pending.length > 0 || (this.marked && this.holdSync))
      return this.syncInGroup(body, multi)
    try {
      const value = this.conn.one(body)
      if (this.groupCommit !== 'off') this.mark()
      return value
    } catch (err) {
      if (isBusyError(err)) return undefined
      throw backendError(err)
    }
  }

  /**
   * A synchronous write while calls wait for the lock (it waits its turn: `undefined`), or with `'turn'`
   * after a synchronous write of this turn or beside a group (`undefined`: the caller makes it asynchronously
   * and it joins the group), or with `'async'` beside a group: it runs last in the group's transaction, now,
   * and returns once that committed.
   */
  private syncInGroup<T>(body: (bodies: Bodies) => T, multi: boolean): T | undefined {
    if (this.lock.waiting || this.groupCommit === 'turn') return undefined
    const member = new Member(body, multi, undefined, Date.now(), undefined, undefined)
    this.pending.push(member)
    this.flush()
    if (!member.failed) return member.outcome as T
    if (member.outcome === BUSY) return undefined
    throw member.outcome
  }

  /** Marks this turn as having written synchronously, until the next microtask (see {@link syncNow}). */
  private mark(): void {
    if (this.marked) return
    this.marked = true
    queueMicrotask(this.unmarkTask)
  }

  /** Commits the writes waiting for this turn's microtask, in groups of at most {@link MAX_GROUP}. */
  private flush(): void {
    const members = this.pending
    if (members.length === 0) return
    this.pending = []
    if (members.length <= MAX_GROUP) this.commitGroup(members)
    else for (let i = 0; i < members.length; i += MAX_GROUP) this.commitGroup(members.slice(i, i + MAX_GROUP))
  }

  /**
   * Runs `members` in one transaction and settles each. When the transaction fails as a whole (a full disk
   * rolls it back, a commit fails), each member runs again alone, so that each ends exactly as it would have
   * without group commit: one that fails does not take the others with it. When another connection holds
   * the lock, they wait for it in the lock queue, in order, each in a transaction of its own (a synchronous
   * one answers `undefined`), as calls made one by one would.
   */
  private commitGroup(members: Member[]): void {
    try {
      this.usable()
    } catch (err) {
      for (const m of members) m.settle(true, err)
      return
    }
    let busy: unknown
    if (!this.lock.waiting) {
      try {
        this.conn.group(members)
        for (const m of members) m.settle(m.failed, m.failed ? backendError(m.outcome) : m.outcome)
        return
      } catch (err) {
        // Busy: nothing was tried, all of them wait. Otherwise each is tried again alone, below.
        if (isBusyError(err)) busy = err
      }
    }
    for (const m of members) {
      if (m.resolve === undefined) {
        // Synchronous: alone now, or undefined when the lock is taken (the caller makes the async call).
        if (busy !== undefined || this.lock.waiting) {
          m.settle(true, BUSY)
          continue
        }
        try {
          m.settle(
            false,
            this.conn.one((b) => m.run(b)),
          )
        } catch (err) {
          m.settle(true, isBusyError(err) ? BUSY : backendError(err))
        }
        continue
      }
      const own = m.started + this.busyTimeoutMs
      const byDeadline = m.deadline !== undefined && m.deadline <= own
      this.lock
        .run(
          () => {
            this.usable()
            return this.conn.one((b) => m.run(b))
          },
          byDeadline ? (m.deadline as number) : own,
          byDeadline,
          busy,
        )
        .then(m.resolve as (value: unknown) => void, m.reject)
    }
  }

  /**
   * Admits `cost` or denies, in one `BEGIN IMMEDIATE` transaction, shared with the other writes of this turn
   * (group commit; resolved after it committed). If another connection holds the write
   * lock, waits (off the event loop) until `options.deadline` or `busyTimeoutMs`, whichever is first, then
   * rejects with `ERR_FASTLIMIT_TIMEOUT`, nothing charged; a call is never applied after its deadline.
   */
  checkAndIncrement(
    key: string,
    bucket: BucketConfig,
    cost: number,
    options?: CallOptions,
  ): Promise<BackendResult> {
    try {
      this.usable()
      checkCost(cost)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.write((b, deadline) => b.check(key, bucket, cost, deadline), false, options)
  }

  /** {@link checkAndIncrement} for several buckets of one key, all-or-nothing. */
  checkAndIncrementAll(
    key: string,
    buckets: readonly BucketConfig[],
    cost: number,
    options?: CallOptions,
  ): Promise<BackendResult[]> {
    try {
      this.usable()
      checkCost(cost)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.write((b, deadline) => b.checkAll(key, buckets, cost, deadline), buckets.length > 1, options)
  }

  /**
   * Refunds or charges more on several buckets of one key (see `Backend.adjust` in core), all of them in
   * one `BEGIN IMMEDIATE` transaction; waits for the lock as {@link checkAndIncrement} does, and is never
   * applied after its deadline.
   */
  adjust(
    key: string,
    buckets: readonly BucketConfig[],
    delta: number,
    charges: readonly Charge[] | undefined,
    options?: CallOptions,
  ): Promise<BackendResult[]> {
    try {
      this.usable()
      checkAdjustArguments('sqlite', buckets, delta, charges)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.write(
      (b, deadline) => b.adjust(key, buckets, delta, charges, deadline),
      buckets.length > 1,
      options,
    )
  }

  /** Reads a bucket without charging it. */
  peek(key: string, bucket: BucketConfig, options?: CallOptions): Promise<BackendResult> {
    try {
      this.usable()
    } catch (err) {
      return Promise.reject(err)
    }
    return this.waitFor(() => this.conn.peek(key, bucket), options)
  }

  /** Deletes every row of `key` (all its buckets); waits for the lock as {@link checkAndIncrement} does. */
  reset(key: string, options?: CallOptions): Promise<void> {
    try {
      this.usable()
    } catch (err) {
      return Promise.reject(err)
    }
    return this.write((b, deadline) => b.reset(key, deadline), false, options)
  }

  /**
   * Empties this backend's table (nothing else in the database is touched), in one statement that frees
   * the table's pages rather than deleting rows one by one: it holds the write lock about 0.1 to 0.4 s per
   * million rows. Waits for the lock as {@link checkAndIncrement} does, up to `busyTimeoutMs`.
   */
  clear(): Promise<void> {
    try {
      this.usable()
    } catch (err) {
      return Promise.reject(err)
    }
    return this.waitFor(() => this.conn.clear(), undefined)
  }

  /**
   * Stops the timers, rejects calls still waiting for the lock, and closes the database if SQLiteBackend
   * opened it (a `Database` you passed in stays open). Idempotent; later calls reject with `ERR_FASTLIMIT_CLOSED`.
   */
  async close(): Promise<void> {
    if (this.closed) return
    // The writes of this turn were accepted: they commit first.
    this.flush()
    this.closed = true
    if (this.sweepTimer) clearInterval(this.sweepTimer)
    if (this.fileTimer) clearInterval(this.fileTimer)
    this.sweepTimer = undefined
    this.fileTimer = undefined
    this.lock.drop(this.closedError())
    if (this.owned && this.conn.db.open) this.conn.db.close()
  }

  /**
   * Called by `FastLimit` when its circuit breaker opens: the calls still waiting for the lock are dropped
   * (rejected with `ERR_FASTLIMIT_TIMEOUT`, never applied), and the file is checked at once.
   */
  reconnect(reason: Error): void {
    if (this.closed) return
    // The writes of this turn try the lock first, as each call did at once when made one by one.
    this.flush()
    this.lock.drop(
      new FastlimitError(
        'ERR_FASTLIMIT_TIMEOUT',
        '[fastlimit] [sqlite] Dropped while waiting for the write lock: the limiter gave up on the store. Nothing was charged.',
        { cause: reason },
      ),
    )
    this.checkFile()
  }

  /**
   * Deletes expired rows now, in transactions of at most 100 rows with a pause between them, so a large sweep
   * never holds the write lock or the loop for long. Runs on its own every `cleanupIntervalMs`; a call while
   * a sweep runs joins it.
   * @returns a promise of how many rows were deleted
   */
  sweep(): Promise<number> {
    if (this.closed) return Promise.reject(this.closedError())
    if (this.sweeping !== undefined) return this.sweeping
    const run = (async () => {
      let removed = 0
      for (;;) {
        if (this.closed) return removed
        const started = performance.now()
        const changes = await this.waitFor(() => this.conn.sweepBatch(), undefined)
        removed += changes
        if (changes < SWEEP_BATCH) return removed
        await pause(Math.ceil(performance.now() - started))
      }
    })()
    const done = () => {
      this.sweeping = undefined
    }
    this.sweeping = run
    run.then(done, done)
    return run
  }

  /**
   * Compares the file at the path with the one open (device and inode). If it was deleted or replaced,
   * reopens the path (ours) or fails every call with a clear error (a Database passed in).
   */
  private checkFile(): void {
    const file = this.file
    if (this.closed || file === undefined) return
    const id = identityOf(file)
    if (id === this.fileId) {
      // The same file (again): whatever failed because it was gone is over.
      if (this.failure !== undefined && !this.owned) this.failure = undefined
      return
    }
    if (!this.owned) {
      this.failure ??= new FastlimitError(
        'ERR_FASTLIMIT_BACKEND',
        `[fastlimit] [sqlite] ${this.where}: its file was deleted or replaced while open. This connection ` +
          'still writes the old file, which other processes no longer see, so their limits and ours would ' +
          'split: every call fails (onBackendError applies) until you open a new Database on the path and ' +
          'create a new SQLiteBackend with it. (Pass SQLiteBackend the path instead, and it reopens the file by itself.)',
      )
      return
    }
    this.reopen(file)
  }

  /** Opens the file at the path anew (creating it and its table if needed) in place of the one that moved. */
  private reopen(file: string): void {
    const old = this.conn
    if (this.walId !== undefined && identityOf(`${file}-wal`) === this.walId) {
      // Our -wal file is still at the path, holding pages of the old file: SQLite would read them as pages
      // of the new one (a file renamed over ours would show our old state, or be corrupt). Write them into
      // the old file, where they belong, and empty the log before the new file is opened.
      try {
        old.noWait(() => old.db.pragma('wal_checkpoint(TRUNCATE)'))
      } catch {
        // Another connection is reading the log: the new file is opened as SQLite finds it.
      }
    }
    let db: Database.Database | undefined
    try {
      db = new Database(file, { timeout: LOCK_SPIN_MS })
      // Never block the loop here: if the new file is locked, the next check tries again.
      prepareDatabase(db, true, this.tableName, this.where, LOCK_SPIN_MS)
      this.conn = connect(db, this.tableName, this.now)
    } catch (err) {
      if (db?.open) db.close()
      const code = sqliteCode(err)
      const detail = code || (err instanceof Error ? err.message : String(err))
      this.failure = new FastlimitError(
        isFull(code) ? 'ERR_FASTLIMIT_STORE_FULL' : 'ERR_FASTLIMIT_BACKEND',
        `[fastlimit] [sqlite] ${this.where} was deleted or replaced while open, and opening the path anew ` +
          `failed (${detail}); SQLiteBackend tries again every fileCheckIntervalMs. Until then every call ` +
          'fails and onBackendError applies.',
        { cause: err },
      )
      // A new file another process is creating right now is locked for a moment only.
      if (isBusy(code)) setTimeout(() => this.checkFile(), REOPEN_RETRY_MS).unref()
      return
    }
    this.fileId = identityOf(file)
    this.walId = identityOf(`${file}-wal`)
    this.failure = undefined
    // SQLite sees that this connection's file moved, and closes it without a checkpoint and without
    // deleting the -wal and -shm files at the path, which belong to the new file now.
    try {
      old.db.close()
    } catch {
      // Closed already: nothing to release.
    }
  }
}
