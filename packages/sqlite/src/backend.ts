// SQLiteBackend: the core algorithms applied in one BEGIN IMMEDIATE transaction per decision, on one file shared by every process.
import fs from 'node:fs'
import path from 'node:path'
import {
  algorithms,
  type Backend,
  type BackendResult,
  type BucketConfig,
  bucketId,
  ConfigError,
  decodeState,
  encodeState,
  FastlimitError,
  type StepOutput,
  type SyncBackend,
  stepAll,
} from '@fastlimit/core'
import Database from 'better-sqlite3'
import { backendError, openError } from './errors'
import { ensureSchema, isTableName, MAX_SLACK_MS, SWEEP_BATCH, statements } from './schema'

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
   * How long a decision waits for another process's write lock before it fails with
   * `ERR_FASTLIMIT_BACKEND` (then `FastLimit`'s `onBackendError` applies), in milliseconds. The wait
   * blocks the event loop, as every better-sqlite3 call does, so keep it short. For a `Database` you pass
   * in, the timeout is changed only when this option is given.
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
   * The clock, in epoch milliseconds. Every process sharing a file must use the same time source:
   * the default is right for processes on one host. Inject one in tests.
   * @default Date.now
   */
  clock?: () => number
}

const OPTIONS = ['tableName', 'busyTimeoutMs', 'cleanupIntervalMs', 'clock']
const MAX_TIMER_MS = 2 ** 31 - 1

type Statement = Database.Statement<unknown[], unknown>
/** A row as the select statement returns it (raw mode): `[state, expires_at]`. */
type Row = [state: string, expiresAt: number]
type CheckTx = (key: string, bucket: BucketConfig, cost: number) => BackendResult
type CheckAllTx = (key: string, buckets: readonly BucketConfig[], cost: number) => BackendResult[]

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

/**
 * A rate-limit backend on SQLite (better-sqlite3): limits shared by every process on one host through
 * one file, surviving restarts, with no server to run.
 *
 * - Exact across processes: each decision is one `BEGIN IMMEDIATE` transaction that reads the state,
 *   applies the core algorithm `step`, and writes it back, so processes serialize on the write lock.
 * - Fast: WAL, `synchronous=NORMAL`, statements prepared once, and the synchronous fast path of
 *   {@link SyncBackend}, so `FastLimit` decides without a promise per backend call.
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
  /**
   * The better-sqlite3 connection. Yours if you passed it in (SQLiteBackend never closes it);
   * otherwise closed by {@link SQLiteBackend.close}.
   */
  readonly database: Database.Database
  /** The table holding the state. */
  readonly tableName: string

  readonly #owned: boolean
  /** The clock, floored to whole epoch milliseconds. */
  readonly #now: () => number
  readonly #busyTimeoutMs: number
  readonly #select: Statement
  readonly #reset: Statement
  readonly #clear: Statement
  readonly #sweep: Statement
  readonly #check: CheckTx
  readonly #checkAll: CheckAllTx
  #timer: ReturnType<typeof setInterval> | undefined
  #sweeping: Promise<number> | undefined
  #closed = false

  /**
   * Opens (creating if needed) the database and its table.
   *
   * @param database a file path (its directory must exist), `':memory:'` for a private in-memory
   *   database, or a better-sqlite3 `Database` you opened. A `Database` you pass is never closed by
   *   SQLiteBackend; it is switched to WAL (unless in memory), and its busy timeout is set only when
   *   `busyTimeoutMs` is given. Its `synchronous` setting and `PRAGMA user_version` are left alone.
   * @throws ConfigError for a bad option, a missing directory, a read-only or corrupt file, a table
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
    const { tableName = 'fastlimit', cleanupIntervalMs = 60_000, clock = Date.now } = options
    if (!isTableName(tableName)) {
      throw new ConfigError(
        `[fastlimit] [sqlite] tableName must be 1 to 60 letters, digits and underscores, not starting with a ` +
          `digit or "sqlite_", got ${show(tableName)}. For example 'fastlimit'.`,
      )
    }
    const busyTimeoutMs =
      options.busyTimeoutMs === undefined
        ? undefined
        : checkMs('busyTimeoutMs', options.busyTimeoutMs, 0, '1000')
    checkMs('cleanupIntervalMs', cleanupIntervalMs, 0, '60000')
    if (typeof clock !== 'function') {
      throw new ConfigError(
        '[fastlimit] [sqlite] clock must be a function returning epoch milliseconds, e.g. Date.now.',
      )
    }

    let db: Database.Database
    let where: string
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
      const file = memory ? database : path.resolve(database)
      where = memory ? 'The in-memory database' : `The database file ${show(file)}`
      if (!memory) checkPath(file)
      try {
        db = new Database(file, { timeout: busyTimeoutMs ?? 1000 })
      } catch (err) {
        throw openError(err, where, busyTimeoutMs ?? 1000)
      }
      this.#owned = true
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
      this.#owned = false
    } else {
      throw new ConfigError(
        `[fastlimit] [sqlite] SQLiteBackend takes a file path, ':memory:' or a better-sqlite3 Database, ` +
          `got ${show(database)}.`,
      )
    }

    const now = () => Math.floor(clock())
    let busy = busyTimeoutMs ?? 1000
    try {
      if (this.#owned || busyTimeoutMs !== undefined) db.pragma(`busy_timeout = ${busy}`)
      else busy = Number(db.pragma('busy_timeout', { simple: true }))
      if (!db.memory) {
        // Readers never wait for writers, and commits append to the log instead of rewriting pages.
        if (db.pragma('journal_mode', { simple: true }) !== 'wal') db.pragma('journal_mode = WAL')
        // Safe against a crashed process in WAL mode (only power loss can drop the last commits).
        if (this.#owned) db.pragma('synchronous = NORMAL')
      }
      ensureSchema(db, tableName, where)
      const sql = statements(tableName)
      // Numbers as numbers even on a Database whose owner turned defaultSafeIntegers on.
      const select = db.prepare(sql.select).raw().safeIntegers(false)
      const update = db.prepare(sql.update)
      const upsert = db.prepare(sql.upsert)
      this.#select = select
      this.#reset = db.prepare(sql.reset)
      this.#clear = db.prepare(sql.clear)
      this.#sweep = db.prepare(sql.sweep)
      /** Writes one bucket's new state; moves the row's expiry (and its index entry) only when it must grow. */
      const write = (
        key: string,
        id: string,
        row: Row | undefined,
        t: number,
        out: StepOutput,
        windowMs: number,
      ) => {
        const expires = t + out.ttlMs
        if (row !== undefined && row[1] >= expires) update.run(encodeState(out.state), key, id)
        else upsert.run(key, id, encodeState(out.state), expires + Math.min(windowMs, MAX_SLACK_MS))
      }

      // The two decisions: read, step, write, in one BEGIN IMMEDIATE transaction each, built once.
      this.#check = db.transaction((key: string, bucket: BucketConfig, cost: number): BackendResult => {
        const t = now()
        const id = bucketId(bucket)
        const row = select.get(key, id, t) as Row | undefined
        const out = algorithms[bucket.algorithm](
          row === undefined ? undefined : decodeState(row[0]),
          t,
          bucket,
          cost,
        )
        // Charged, or moved back to now after the clock stepped back: either way the row changes.
        if (out.result.allowed || out.rebased) write(key, id, row, t, out, bucket.windowMs)
        return out.result
      }).immediate
      this.#checkAll = db.transaction(
        (key: string, buckets: readonly BucketConfig[], cost: number): BackendResult[] => {
          const t = now()
          const n = buckets.length
          const ids: string[] = new Array(n)
          const rows: Array<Row | undefined> = new Array(n)
          const states: Array<number[] | undefined> = new Array(n)
          for (let i = 0; i < n; i++) {
            const id = bucketId(buckets[i] as BucketConfig)
            const row = select.get(key, id, t) as Row | undefined
            ids[i] = id
            rows[i] = row
            states[i] = row === undefined ? undefined : decodeState(row[0])
          }
          const all = stepAll(states, t, buckets, cost)
          for (let i = 0; i < n; i++) {
            const out = all.outputs[i] as StepOutput
            if (all.allowed || out.rebased) {
              write(key, ids[i] as string, rows[i], t, out, (buckets[i] as BucketConfig).windowMs)
            }
          }
          return all.results
        },
      ).immediate
    } catch (err) {
      if (this.#owned) db.close()
      throw openError(err, where, busy)
    }

    this.database = db
    this.tableName = tableName
    this.#busyTimeoutMs = busy
    this.#now = now
    if (cleanupIntervalMs > 0) {
      this.#timer = setInterval(() => {
        // A failed background sweep is retried at the next interval; decisions report real failures.
        this.sweep().catch(() => undefined)
      }, cleanupIntervalMs)
      this.#timer.unref()
    }
  }

  #closedError(): FastlimitError {
    return new FastlimitError(
      'ERR_FASTLIMIT_CLOSED',
      '[fastlimit] [sqlite] This SQLiteBackend was closed; create a new one.',
    )
  }

  /** {@link Backend.checkAndIncrement}, synchronously: one `BEGIN IMMEDIATE` transaction. */
  checkAndIncrementSync(key: string, bucket: BucketConfig, cost: number): BackendResult {
    if (this.#closed) throw this.#closedError()
    checkCost(cost)
    try {
      return this.#check(key, bucket, cost)
    } catch (err) {
      throw backendError(err, this.#busyTimeoutMs)
    }
  }

  /** {@link Backend.checkAndIncrementAll}, synchronously: every bucket in one `BEGIN IMMEDIATE` transaction. */
  checkAndIncrementAllSync(key: string, buckets: readonly BucketConfig[], cost: number): BackendResult[] {
    if (buckets.length === 1) return [this.checkAndIncrementSync(key, buckets[0] as BucketConfig, cost)]
    if (this.#closed) throw this.#closedError()
    checkCost(cost)
    try {
      return this.#checkAll(key, buckets, cost)
    } catch (err) {
      throw backendError(err, this.#busyTimeoutMs)
    }
  }

  /** {@link Backend.peek}, synchronously: one read, no transaction and no write lock. */
  peekSync(key: string, bucket: BucketConfig): BackendResult {
    if (this.#closed) throw this.#closedError()
    try {
      const now = this.#now()
      const row = this.#select.get(key, bucketId(bucket), now) as Row | undefined
      return algorithms[bucket.algorithm](row === undefined ? undefined : decodeState(row[0]), now, bucket, 0)
        .result
    } catch (err) {
      throw backendError(err, this.#busyTimeoutMs)
    }
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

  /** Deletes every row of `key` (all its buckets). */
  async reset(key: string): Promise<void> {
    if (this.#closed) throw this.#closedError()
    try {
      this.#reset.run(key)
    } catch (err) {
      throw backendError(err, this.#busyTimeoutMs)
    }
  }

  /** Empties this backend's table; nothing else in the database is touched. */
  async clear(): Promise<void> {
    if (this.#closed) throw this.#closedError()
    try {
      this.#clear.run()
    } catch (err) {
      throw backendError(err, this.#busyTimeoutMs)
    }
  }

  /**
   * Stops the sweep timer and closes the database if SQLiteBackend opened it (a `Database` you passed
   * in stays open). Idempotent; later calls reject with `ERR_FASTLIMIT_CLOSED`.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#timer) clearInterval(this.#timer)
    this.#timer = undefined
    if (this.#owned && this.database.open) this.database.close()
  }

  /**
   * Deletes expired rows now, in statements of at most 500 rows, yielding to the event loop between
   * them so a large sweep never holds the write lock or the loop for long. Runs on its own every
   * `cleanupIntervalMs`; a call while a sweep runs joins it.
   * @returns a promise of how many rows were deleted
   */
  sweep(): Promise<number> {
    if (this.#closed) return Promise.reject(this.#closedError())
    if (this.#sweeping !== undefined) return this.#sweeping
    const run = new Promise<number>((resolve, reject) => {
      let removed = 0
      const batch = () => {
        if (this.#closed) {
          resolve(removed)
          return
        }
        let changes: number
        try {
          changes = this.#sweep.run(this.#now()).changes
        } catch (err) {
          reject(backendError(err, this.#busyTimeoutMs))
          return
        }
        removed += changes
        if (changes < SWEEP_BATCH) resolve(removed)
        else setImmediate(batch)
      }
      batch()
    })
    const done = () => {
      this.#sweeping = undefined
    }
    this.#sweeping = run
    run.then(done, done)
    return run
  }
}
