// PostgresBackend: the core algorithms applied in one READ COMMITTED transaction with row locks per decision.
import {
  type AdjustOutput,
  adjustAll,
  type Backend,
  type BackendResult,
  type BucketConfig,
  bucketId,
  type CallOptions,
  type Charge,
  ConfigError,
  checkAdjustArguments,
  decodeState,
  encodeState,
  FastlimitError,
  type StepOutput,
  step,
  stepAll,
} from '@fastlimit/core'
import pg from 'pg'
import {
  checkConnectionString,
  isClient,
  isPool,
  type PostgresPool,
  type PostgresPoolClient,
  redact,
} from './connection'
import { backendError, isFatal, pgCode, SCHEMA_GONE, schemaError, timeoutError } from './errors'
import { encodeKey, keyLiteral } from './keys'
import {
  COLUMNS,
  createStatements,
  isIdentifier,
  MAX_SLACK_MS,
  type Names,
  names,
  SCHEMA_VERSION,
  SWEEP_BATCH,
  schemaLockId,
} from './schema'

/** Options of {@link PostgresBackend}. */
export interface PostgresBackendOptions {
  /**
   * The schema that holds the tables; created if missing (`CREATE SCHEMA IF NOT EXISTS`). 1 to 48
   * letters, digits and underscores, not starting with a digit or `pg_`; double-quoted, so case is kept.
   * @default 'public'
   */
  schema?: string
  /**
   * The table that holds the state (same rules as `schema`). A second table `<tableName>_meta` holds the
   * schema version, and an index `<tableName>_expires_at` serves the sweep. Give each application
   * sharing a database its own name (or its own `FastLimit` prefix).
   * @default 'fastlimit'
   */
  tableName?: string
  /**
   * The clock, in epoch milliseconds. By default the database server's clock (`clock_timestamp()`,
   * read inside each transaction once its row locks are held), so every process and host sharing the
   * database agrees on time whatever their own clocks say, as RedisBackend uses Redis's `TIME`. Inject
   * one in tests; every process sharing the table must then use the same time source.
   * @default the database's clock
   */
  clock?: () => number
  /**
   * How often an `unref`ed timer deletes expired rows, in milliseconds; `0` turns it off (call
   * {@link PostgresBackend.sweep} yourself, e.g. from a cron job). The timer starts at the first call,
   * never at construction. Expired rows are ignored by every read either way.
   * @default 60_000
   */
  cleanupIntervalMs?: number
  /**
   * Whether each decision waits for its commit to reach the disk (`synchronous_commit` as the server
   * has it, `on` by default). Off (the default), decisions commit with `synchronous_commit = off`: the
   * commit returns without waiting for the WAL flush (the server flushes within about 3 ×
   * `wal_writer_delay`, 600 ms by default), so a decision costs no fsync. A crash of the database
   * server can then lose the decisions of that last moment (it admits those requests again), never
   * corrupt anything; a crash of your app loses nothing. Set `true` to keep every committed decision
   * across a server crash, at the price of a disk flush per decision (group-committed under load).
   * @default false
   */
  durable?: boolean
  /**
   * With a connection string: the most connections the backend's own `pg.Pool` opens. Decisions beyond
   * it wait for a free connection (within their deadline). Ignored for a pool you pass in.
   * @default 10
   */
  poolSize?: number
  /**
   * With a connection string: how long opening a connection may take before the call fails, in
   * milliseconds (pg's `connectionTimeoutMillis`). Ignored for a pool you pass in.
   * @default 5000
   */
  connectTimeoutMs?: number
}

const OPTIONS = [
  'schema',
  'tableName',
  'clock',
  'cleanupIntervalMs',
  'durable',
  'poolSize',
  'connectTimeoutMs',
]
const MAX_TIMER_MS = 2 ** 31 - 1
/**
 * How long past a call's deadline a statement may stay unanswered before its connection is dropped.
 * The server stops a statement at the deadline itself (`statement_timeout`, `lock_timeout`); only a
 * server or network that does not answer at all (frozen, black-holed) reaches this.
 */
const GRACE_MS = 1000
/** How much later than `lock_timeout` a statement is stopped: a lock wait reports itself first. */
const STATEMENT_SLACK_MS = 20
/** Time-outs of the statements that prepare the schema (no deadline applies to them). */
const SCHEMA_TIMEOUT_MS = 10_000
/** How often a decision reads its rows again when a concurrent sweep or reset deleted one it had seen. */
const MAX_RELOCK = 5
/** The server's clock in whole epoch milliseconds (`extract` is exact `numeric` since PostgreSQL 14). */
const NOW_MS = 'floor(extract(epoch from clock_timestamp()) * 1000)::int8'

type Rows = unknown[][]
interface Result {
  readonly rows: Rows
  readonly rowCount: number | null
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
      `[fastlimit] [postgres] ${name} must be a whole number of milliseconds from ${min}${min === 0 ? ' (off)' : ''} ` +
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
      `[fastlimit] [postgres] cost must be a positive whole number up to 2^53 - 1, got ${show(cost)}.`,
    )
  }
}

function closedError(): FastlimitError {
  return new FastlimitError(
    'ERR_FASTLIMIT_CLOSED',
    '[fastlimit] [postgres] This PostgresBackend was closed; create a new one.',
  )
}

/** The results of one simple query: pg answers one result for a single statement, an array for several. */
function results(answer: unknown): Result[] {
  return Array.isArray(answer) ? (answer as Result[]) : [answer as Result]
}

/**
 * A client checked out of the pool for one call. Listens for its `'error'` events while checked out
 * (pg's pool listens only while a client is idle; an unheard error would crash the process), and is
 * released exactly once: normally, or destroyed (the pool closes the connection).
 */
class Lease {
  done = false
  readonly #onError = (): void => {
    // The query in flight (if any) fails with this error too; that is where it is handled.
  }
  constructor(
    readonly client: PostgresPoolClient,
    readonly leases: Set<Lease>,
  ) {
    client.on('error', this.#onError)
    leases.add(this)
  }

  query(text: string, timeoutMs?: number): Promise<Result[]> {
    const config =
      timeoutMs === undefined
        ? { text, rowMode: 'array' as const }
        : { text, rowMode: 'array' as const, query_timeout: timeoutMs }
    return this.client.query(config).then(results)
  }

  /** Gives the client back to the pool, or with `destroy`, makes the pool close its connection. */
  release(destroy?: Error): void {
    if (this.done) return
    this.done = true
    this.leases.delete(this)
    this.client.removeListener('error', this.#onError)
    this.client.release(destroy)
  }
}

/** Everything a PostgresBackend holds, behind one symbol so its public methods work through a Proxy. */
class Engine {
  readonly owned: boolean
  readonly names: Names
  readonly where: string
  readonly #makePool: (() => PostgresPool) | undefined
  readonly #clock: (() => number) | undefined
  readonly #cleanupIntervalMs: number
  readonly #durable: boolean
  readonly #leases = new Set<Lease>()
  #pool: PostgresPool
  #ready: Promise<void> | undefined
  #timer: ReturnType<typeof setInterval> | undefined
  #sweeping: Promise<number> | undefined
  #closed = false
  #closing: Promise<void> | undefined

  constructor(
    pool: PostgresPool,
    makePool: (() => PostgresPool) | undefined,
    n: Names,
    where: string,
    clock: (() => number) | undefined,
    cleanupIntervalMs: number,
    durable: boolean,
  ) {
    this.#durable = durable
    this.#pool = pool
    this.#makePool = makePool
    this.owned = makePool !== undefined
    this.names = n
    this.where = where
    this.#clock = clock
    this.#cleanupIntervalMs = cleanupIntervalMs
  }

  get pool(): PostgresPool {
    return this.#pool
  }

  // --- connections, deadlines and the schema ---------------------------------------------------------

  /**
   * Runs `work` on a client of the pool, within the call's deadline: it rejects with
   * `ERR_FASTLIMIT_TIMEOUT` when the deadline passes while it waits for the schema or a free client,
   * and drops the client when a statement stays unanswered {@link GRACE_MS} past it (the server stops
   * its own statements at the deadline; this is for a server that answers nothing at all).
   */
  run<T>(deadline: number | undefined, work: (lease: Lease) => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(closedError())
    if (deadline !== undefined && !(Date.now() < deadline)) {
      return Promise.reject(timeoutError('The call arrived after its deadline'))
    }
    this.#startTimer()
    return new Promise<T>((resolve, reject) => {
      let settled = false
      let lease: Lease | undefined
      let timer: ReturnType<typeof setTimeout> | undefined
      const settle = (err: unknown, value?: T) => {
        if (settled) return
        settled = true
        if (timer !== undefined) clearTimeout(timer)
        if (err === undefined) resolve(value as T)
        else reject(err)
      }
      if (deadline !== undefined) {
        const late = () => {
          if (lease === undefined) {
            settle(timeoutError('No connection of the pool was free before the deadline'))
            return
          }
          timer = setTimeout(() => {
            const error = timeoutError(
              `The database did not answer within ${GRACE_MS} ms after the deadline; the connection was dropped`,
            )
            lease?.release(error)
            settle(error)
          }, GRACE_MS)
          timer.unref?.()
        }
        timer = setTimeout(late, Math.max(0, deadline - Date.now()))
        timer.unref?.()
      }
      const start = async () => {
        if (this.#ready === undefined) this.#ready = this.#prepare()
        const ready = this.#ready
        await ready
        if (settled) return
        const client = await this.#pool.connect()
        if (settled || this.#closed) {
          client.release()
          if (this.#closed) settle(closedError())
          return
        }
        lease = new Lease(client, this.#leases)
        try {
          settle(undefined, await work(lease))
        } finally {
          lease.release()
        }
      }
      start().catch((err: unknown) => settle(backendError(err)))
    })
  }

  /**
   * Creates the schema if it is missing and checks its version, once (every call waits for it); a
   * failure other than a ConfigError is forgotten, so the next call tries again.
   */
  #prepare(): Promise<void> {
    const run = this.#ensureSchema()
    run.catch((err: unknown) => {
      if (!(err instanceof ConfigError)) this.#ready = undefined
    })
    return run
  }

  async #ensureSchema(): Promise<void> {
    const n = this.names
    const where = `${n.state} (${this.where})`
    let lease: Lease | undefined
    try {
      lease = new Lease(await this.#pool.connect(), this.#leases)
      const q = (text: string) => (lease as Lease).query(text, SCHEMA_TIMEOUT_MS)
      await q(`BEGIN; SELECT pg_advisory_xact_lock(${schemaLockId(n)})`)
      const lit = (s: string) => `'${s.replace(/'/g, "''")}'`
      const [columns, meta] = await q(
        `SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
          WHERE a.attrelid = to_regclass(${lit(n.state)}) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum;
         SELECT to_regclass(${lit(n.meta)}) IS NOT NULL`,
      )
      const found = (columns?.rows ?? []).map((r) => `${r[0]} ${r[1]}`)
      const expected = COLUMNS.map(([c, t]) => `${c} ${t}`)
      if (found.length > 0 && found.join(',') !== expected.join(',')) {
        throw new ConfigError(
          `[fastlimit] [postgres] ${where} already exists with columns (${found.join(', ')}) that fastlimit did ` +
            `not create: pass another tableName (or schema), e.g. { tableName: 'fastlimit_state' }.`,
        )
      }
      const hasMeta = meta?.rows[0]?.[0] === true || meta?.rows[0]?.[0] === 't'
      let version: number | undefined
      if (hasMeta) {
        const [stored] = await q(`SELECT value::text FROM ${n.meta} WHERE name = 'schema_version'`)
        const text = stored?.rows[0]?.[0]
        version = text === undefined ? undefined : Number(text)
        if (version !== undefined && version > SCHEMA_VERSION) {
          throw new ConfigError(
            `[fastlimit] [postgres] ${where} has schema version ${version}, written by a newer ` +
              `@fastlimit/postgres; this release knows version ${SCHEMA_VERSION}. Upgrade @fastlimit/postgres in ` +
              'every process that shares the table, or pass another tableName.',
          )
        }
        if (version !== undefined && !(Number.isSafeInteger(version) && version >= 1)) {
          throw new ConfigError(
            `[fastlimit] [postgres] ${n.meta} holds an unreadable schema_version ${JSON.stringify(text)}: it was ` +
              `not written by fastlimit. Drop ${n.state} and ${n.meta} (rate-limit state is disposable), or pass ` +
              'another tableName.',
          )
        }
      }
      // Nothing to create (the usual start): no DDL, so a user without CREATE privileges is fine.
      if (!(found.length > 0 && version === SCHEMA_VERSION)) {
        // Migrations from older versions go here, in this transaction, when version 2 exists.
        await q(
          `${createStatements(n)};
           INSERT INTO ${n.meta} (name, value) VALUES ('schema_version', ${SCHEMA_VERSION})
             ON CONFLICT (name) DO UPDATE SET value = excluded.value`,
        )
      }
      await q('COMMIT')
      lease.release()
    } catch (err) {
      if (lease !== undefined && !lease.done) {
        if (isFatal(err)) lease.release(err instanceof Error ? err : new Error(String(err)))
        else {
          await lease.query('ROLLBACK', SCHEMA_TIMEOUT_MS).catch(() => undefined)
          lease.release()
        }
      }
      throw schemaError(err, where)
    }
  }

  /**
   * The transaction's own settings, as one statement: the time left before the deadline as
   * `lock_timeout` and `statement_timeout`, and `synchronous_commit = off` unless `durable`.
   */
  #settings(deadline: number | undefined): string {
    const set: string[] = []
    if (deadline !== undefined) {
      const ms = Math.max(1, deadline - Date.now())
      // The lock wait ends first (a clearer error); the statement ends by the deadline all the same.
      set.push(
        `set_config('lock_timeout', '${ms}', true)`,
        `set_config('statement_timeout', '${ms + STATEMENT_SLACK_MS}', true)`,
      )
    }
    if (!this.#durable) set.push(`set_config('synchronous_commit', 'off', true)`)
    return set.length === 0 ? '' : `SELECT ${set.join(', ')};`
  }

  /** Ends the transaction after a failure: ROLLBACK on a connection that still works, else drops it. */
  async #abort(lease: Lease, err: unknown): Promise<void> {
    if (lease.done) return
    if (isFatal(err)) {
      lease.release(err instanceof Error ? err : new Error(String(err)))
      return
    }
    try {
      await lease.query('ROLLBACK', GRACE_MS)
    } catch (rollbackErr) {
      lease.release(rollbackErr instanceof Error ? rollbackErr : new Error(String(rollbackErr)))
    }
  }

  /** Maps a failure, and forgets the schema when the table went missing (the next call creates it again). */
  #failed(err: unknown, committing = false): FastlimitError {
    if (SCHEMA_GONE.has(pgCode(err))) this.#ready = undefined
    return backendError(err, committing)
  }

  // --- decisions -----------------------------------------------------------------------------------

  /**
   * One decision on several buckets of one key, all-or-nothing: two round trips in one transaction.
   *
   * 1. `BEGIN`, the deadline as `lock_timeout` and `statement_timeout`, an `INSERT ... ON CONFLICT DO
   *    NOTHING` of a placeholder row per bucket (so that two calls on a new key serialize on it, instead
   *    of both reading "no state"), `SELECT ... ORDER BY bucket FOR UPDATE` of the rows (the locks are taken
   *    in that order, the same in every call: no deadlock between calls), and the clock, read once the locks are held.
   * 2. The core `stepAll` in this process, then either `ROLLBACK` (nothing to write) or one `UPDATE` of
   *    every changed row and `COMMIT`. The `UPDATE` checks the deadline on the server's clock, so a
   *    call that reaches the server late charges nothing.
   */
  decide(key: string, buckets: readonly BucketConfig[], cost: number, deadline: number | undefined) {
    checkCost(cost)
    return this.#transact(key, buckets, deadline, (states, now) => {
      const all = stepAll(states, now, buckets, cost)
      const results = all.results
      // The clock of the charge, for a reservation's refund (Backend.adjust).
      if (all.allowed) for (const r of results) (r as { atMs?: number }).atMs = now
      return { results, outputs: all.outputs, write: (out) => all.allowed || out.rebased }
    })
  }

  /**
   * A refund or extra charge on several buckets of one key (see `Backend.adjust` in core): the same
   * transaction as {@link decide}, with the core `adjustAll` as its step.
   */
  adjust(
    key: string,
    buckets: readonly BucketConfig[],
    delta: number,
    charges: readonly Charge[] | undefined,
    deadline: number | undefined,
  ) {
    checkAdjustArguments('postgres', buckets, delta, charges)
    return this.#transact(key, buckets, deadline, (states, now) => {
      const outputs = adjustAll(states, now, buckets, delta, charges)
      return {
        results: outputs.map((o) => o.result),
        outputs,
        write: (out) => (out as AdjustOutput).changed || out.rebased,
      }
    })
  }

  /** Locks the rows of a key's buckets, applies `compute` at the clock read under the locks, writes back. */
  #transact(
    key: string,
    buckets: readonly BucketConfig[],
    deadline: number | undefined,
    compute: (
      states: Array<number[] | undefined>,
      now: number,
    ) => {
      results: BackendResult[]
      outputs: readonly StepOutput[]
      write: (out: StepOutput) => boolean
    },
  ): Promise<BackendResult[]> {
    if (buckets.length === 0) return this.#closed ? Promise.reject(closedError()) : Promise.resolve([])
    return this.run(deadline, async (lease) => {
      const n = buckets.length
      const t = this.names.state
      const k = keyLiteral(key)
      const ids: string[] = new Array(n)
      for (let i = 0; i < n; i++) ids[i] = encodeKey(bucketId(buckets[i] as BucketConfig)).toString('hex')
      const sorted = [...new Set(ids)].sort()
      const idLit = (hex: string) => `E'\\\\x${hex}'::bytea`
      const bucketIs =
        sorted.length === 1 ? `= ${idLit(sorted[0] as string)}` : `IN (${sorted.map(idLit).join(',')})`
      const lock =
        `INSERT INTO ${t} (key, bucket, state, expires_at) VALUES ${sorted.map((h) => `(${k},${idLit(h)},'',0)`).join(',')} ` +
        'ON CONFLICT DO NOTHING;' +
        `SELECT encode(bucket, 'hex'), state, expires_at::text FROM ${t} WHERE key = ${k} AND bucket ${bucketIs}${sorted.length === 1 ? '' : ' ORDER BY bucket'} FOR UPDATE;` +
        `SELECT ${NOW_MS}::text`
      const text = `BEGIN ISOLATION LEVEL READ COMMITTED;${this.#settings(deadline)}`
      let committing = false
      let open = true
      try {
        let answer = await lease.query(text + lock)
        let found = new Map<string, [string, number]>()
        for (let attempt = 0; ; attempt++) {
          const locked = answer[answer.length - 2] as Result
          found = new Map()
          for (const row of locked.rows) found.set(row[0] as string, [row[1] as string, Number(row[2])])
          if (found.size === sorted.length) break
          // A sweep or reset deleted a row between our INSERT and our SELECT: insert and lock again.
          if (attempt >= MAX_RELOCK) {
            throw new FastlimitError(
              'ERR_FASTLIMIT_BACKEND',
              `[fastlimit] [postgres] The rows of a key were deleted ${MAX_RELOCK} times while a decision locked ` +
                'them (a sweep or reset loop?); nothing was charged, onBackendError applies.',
            )
          }
          answer = await lease.query(lock)
        }
        const serverNow = Number((answer[answer.length - 1] as Result).rows[0]?.[0])
        const arrived = Date.now()
        if (deadline !== undefined && !(arrived < deadline)) {
          throw timeoutError('The row locks were granted after the deadline')
        }
        const now = this.#clock === undefined ? serverNow : Math.floor(this.#clock())
        const states: Array<number[] | undefined> = new Array(n)
        const rows: Array<[string, number]> = new Array(n)
        for (let i = 0; i < n; i++) {
          const row = found.get(ids[i] as string) as [string, number]
          rows[i] = row
          states[i] = row[1] > now ? decodeState(row[0]) : undefined
        }
        const all = compute(states, now)
        const writes: string[] = []
        const written = new Set<string>()
        for (let i = 0; i < n; i++) {
          const out = all.outputs[i] as StepOutput
          const id = ids[i] as string
          if (!all.write(out) || written.has(id)) continue
          written.add(id)
          const row = rows[i] as [string, number]
          const until = now + out.ttlMs
          // Keep expires_at (an indexed column) when it already covers the state: a HOT update.
          const expires =
            row[1] >= until ? row[1] : until + Math.min((buckets[i] as BucketConfig).windowMs, MAX_SLACK_MS)
          writes.push(`(${idLit(id)},'${encodeState(out.state)}',${expires}::int8)`)
        }
        if (writes.length === 0) {
          await lease.query('ROLLBACK')
          open = false
          return all.results
        }
        // The deadline on the server's clock: the server read serverNow before we got it back, so
        // serverNow + (deadline - arrived) is at or before the deadline. statement_timestamp() is when
        // the server received this message, the same for every row: all rows are written or none.
        const onTime =
          deadline === undefined
            ? ''
            : ` AND extract(epoch from statement_timestamp()) * 1000 < ${serverNow + (deadline - arrived)}`
        committing = true
        const [update] = await lease.query(
          `UPDATE ${t} AS t SET state = v.state, expires_at = v.expires_at ` +
            `FROM (VALUES ${writes.join(',')}) AS v (bucket, state, expires_at) ` +
            `WHERE t.key = ${k} AND t.bucket = v.bucket${onTime};COMMIT`,
        )
        open = false
        if ((update?.rowCount ?? 0) < writes.length) {
          throw timeoutError('The decision reached the database after its deadline')
        }
        return all.results
      } catch (err) {
        // A failed statement leaves the transaction open and aborted: ROLLBACK closes it.
        if (open) await this.#abort(lease, err)
        throw this.#failed(err, committing)
      }
    })
  }

  peek(key: string, bucket: BucketConfig, deadline: number | undefined): Promise<BackendResult> {
    return this.run(deadline, async (lease) => {
      const t = this.names.state
      try {
        const [answer] = await lease.query(
          `SELECT s.state, s.expires_at::text, ${NOW_MS}::text FROM (SELECT 1) AS one ` +
            `LEFT JOIN ${t} AS s ON s.key = ${keyLiteral(key)} AND s.bucket = ${keyLiteral(bucketId(bucket))}`,
        )
        const row = answer?.rows[0] ?? []
        const now = this.#clock === undefined ? Number(row[2]) : Math.floor(this.#clock())
        const state = row[0] != null && Number(row[1]) > now ? decodeState(row[0] as string) : undefined
        return step(state, now, bucket, 0).result
      } catch (err) {
        await this.#abort(lease, err)
        throw this.#failed(err)
      }
    })
  }

  reset(key: string, deadline: number | undefined): Promise<void> {
    return this.run(deadline, async (lease) => {
      const text = `BEGIN;${this.#settings(deadline)}`
      try {
        await lease.query(`${text}DELETE FROM ${this.names.state} WHERE key = ${keyLiteral(key)};COMMIT`)
      } catch (err) {
        await this.#abort(lease, err)
        throw this.#failed(err)
      }
    })
  }

  clear(): Promise<void> {
    return this.run(undefined, async (lease) => {
      try {
        await lease.query(`DELETE FROM ${this.names.state}`)
      } catch (err) {
        await this.#abort(lease, err)
        throw this.#failed(err)
      }
    })
  }

  // --- expiry, reconnect, close ----------------------------------------------------------------------

  /** Starts the sweep timer at the first call (never at construction), `unref`ed. */
  #startTimer(): void {
    if (this.#timer !== undefined || this.#cleanupIntervalMs === 0) return
    this.#timer = setInterval(() => {
      // A failed background sweep is retried at the next interval; decisions report real failures.
      this.sweep().catch(() => undefined)
    }, this.#cleanupIntervalMs)
    this.#timer.unref?.()
  }

  sweep(): Promise<number> {
    if (this.#closed) return Promise.reject(closedError())
    if (this.#sweeping !== undefined) return this.#sweeping
    const t = this.names.state
    const batch = async (): Promise<number> => {
      const now = this.#clock === undefined ? NOW_MS : String(Math.floor(this.#clock()))
      // SKIP LOCKED: never wait for (or delete under) a decision holding a row.
      const text =
        `DELETE FROM ${t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM ${t} WHERE expires_at <= ${now} ` +
        `LIMIT ${SWEEP_BATCH} FOR UPDATE SKIP LOCKED))`
      return this.run(undefined, async (lease) => {
        try {
          const [answer] = await lease.query(text)
          return answer?.rowCount ?? 0
        } catch (err) {
          await this.#abort(lease, err)
          throw this.#failed(err)
        }
      })
    }
    const sweeping = (async () => {
      let removed = 0
      for (;;) {
        const deleted = await batch()
        removed += deleted
        // Each batch is its own statement on a connection taken afresh: decisions get theirs between.
        if (deleted < SWEEP_BATCH || this.#closed) return removed
      }
    })()
    this.#sweeping = sweeping
    const done = () => {
      this.#sweeping = undefined
    }
    sweeping.then(done, done)
    return sweeping
  }

  reconnect(reason: Error): void {
    if (this.#closed) return
    // Every call in flight fails now: its connection is closed, so the server rolls its transaction
    // back and nothing it started is applied later (a COMMIT already on its way is still refused by
    // the deadline check of its UPDATE).
    for (const lease of [...this.#leases]) lease.release(reason)
    if (this.#makePool !== undefined) {
      // Our own pool: idle connections may be dead too (a restarted or unreachable server); start afresh.
      const old = this.#pool
      this.#pool = this.#makePool()
      old.end().catch(() => undefined)
    }
  }

  close(): Promise<void> {
    if (this.#closing !== undefined) return this.#closing
    this.#closed = true
    if (this.#timer !== undefined) clearInterval(this.#timer)
    this.#timer = undefined
    this.#closing = this.owned ? this.#pool.end().catch(() => undefined) : Promise.resolve()
    return this.#closing
  }
}

const ENGINE = Symbol('fastlimit.postgres')

/**
 * A rate-limit backend on PostgreSQL (pg): limits shared by every process and host that reaches one
 * database, surviving restarts, kept where you keep everything else.
 *
 * - Exact across processes: each decision is one `READ COMMITTED` transaction that locks its rows
 *   (`SELECT ... FOR UPDATE`), applies the core algorithm `step`, and writes them back: two round trips.
 * - One clock: the database server's by default, so hosts with skewed clocks agree.
 * - Any key: keys are stored as `bytea`, encoded injectively (NUL, lone surrogates, any length).
 * - Deadlines: a call carries `FastLimit`'s deadline into `lock_timeout`, `statement_timeout` and a
 *   check on the server's clock before commit, so a call the limiter gave up on charges nothing.
 * - Expired rows are ignored by every read and deleted by a periodic, batched {@link PostgresBackend.sweep}.
 *
 * No I/O happens at construction: options and the connection string are checked at once (a
 * `ConfigError`), and the schema is created or checked by the first call, or by {@link PostgresBackend.ready}.
 *
 * @example
 * ```ts
 * import pg from 'pg'
 * import { FastLimit } from '@fastlimit/core'
 * import { PostgresBackend } from '@fastlimit/postgres'
 *
 * const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL })
 * const backend = new PostgresBackend(pool)
 * await backend.ready()                      // optional: create or check the schema now
 * const limiter = new FastLimit({ backend })
 * const d = await limiter.check(userId, '100/min')
 * ```
 */
export class PostgresBackend implements Backend {
  /** `'postgres'`. */
  readonly kind = 'postgres'
  /** The schema holding the tables. */
  readonly schema: string
  /** The table holding the state. */
  readonly tableName: string
  declare private readonly [ENGINE]: Engine

  /**
   * @param database a `pg.Pool` you opened (never closed by PostgresBackend: close it after the
   *   backend), or a `postgres://` connection string (PostgresBackend opens its own pool and closes it
   *   in {@link PostgresBackend.close}).
   * @throws ConfigError for a bad option, a malformed connection string (the message never shows its
   *   password), or a `pg.Client` instead of a pool
   */
  constructor(database: string | PostgresPool, options: PostgresBackendOptions = {}) {
    if (typeof options !== 'object' || options === null) {
      throw new ConfigError(
        `[fastlimit] [postgres] PostgresBackend options must be an object, got ${show(options)}.`,
      )
    }
    for (const key of Object.keys(options)) {
      if (!OPTIONS.includes(key)) {
        throw new ConfigError(
          `[fastlimit] [postgres] Unknown option ${show(key)}: PostgresBackend takes ${OPTIONS.join(', ')}.`,
        )
      }
    }
    const {
      schema = 'public',
      tableName = 'fastlimit',
      clock,
      cleanupIntervalMs = 60_000,
      poolSize = 10,
      connectTimeoutMs = 5000,
      durable = false,
    } = options
    for (const [name, value, example] of [
      ['schema', schema, 'public'],
      ['tableName', tableName, 'fastlimit'],
    ] as const) {
      if (!isIdentifier(value)) {
        throw new ConfigError(
          `[fastlimit] [postgres] ${name} must be 1 to 48 letters, digits and underscores, not starting with a ` +
            `digit or "pg_", got ${show(value)}. For example '${example}'.`,
        )
      }
    }
    checkMs('cleanupIntervalMs', cleanupIntervalMs, 0, '60000')
    checkMs('connectTimeoutMs', connectTimeoutMs, 1, '5000')
    if (!Number.isSafeInteger(poolSize) || poolSize < 1 || poolSize > 10_000) {
      throw new ConfigError(
        `[fastlimit] [postgres] poolSize must be a whole number of connections from 1 to 10000, got ${show(poolSize)}. For example 10.`,
      )
    }
    if (typeof durable !== 'boolean') {
      throw new ConfigError(`[fastlimit] [postgres] durable must be true or false, got ${show(durable)}.`)
    }
    if (clock !== undefined && typeof clock !== 'function') {
      throw new ConfigError(
        "[fastlimit] [postgres] clock must be a function returning epoch milliseconds (e.g. Date.now), or left out for the database's clock.",
      )
    }

    let pool: PostgresPool
    let makePool: (() => PostgresPool) | undefined
    let where: string
    if (typeof database === 'string') {
      const url = checkConnectionString(database)
      where = redact(url)
      makePool = () => {
        const own = new pg.Pool({
          connectionString: database,
          max: poolSize,
          connectionTimeoutMillis: connectTimeoutMs,
          application_name: 'fastlimit',
        })
        // An idle connection that dies (a restart, pg_terminate_backend) is an 'error' of the pool;
        // the pool drops it, and without a listener Node would crash the process.
        own.on('error', () => undefined)
        // pg's pool stops listening to a client's errors when it hands it out, and a server message
        // that follows the handshake in the same packet (a FATAL from pg_terminate_backend) is emitted
        // before the caller gets the client: an unheard 'error' that would crash the process. Every
        // client of our pool listens for good; the failure still reaches the query that meets it.
        own.on('connect', (client) => {
          client.on('error', () => undefined)
        })
        return own
      }
      pool = makePool()
    } else if (isPool(database)) {
      pool = database
      where = 'the pg.Pool passed to PostgresBackend'
    } else if (isClient(database)) {
      throw new ConfigError(
        '[fastlimit] [postgres] PostgresBackend takes a pg.Pool, not a pg.Client: one client runs one ' +
          'transaction at a time. Pass new pg.Pool({ ... }) (or a connection string).',
      )
    } else {
      throw new ConfigError(
        `[fastlimit] [postgres] PostgresBackend takes a pg.Pool or a postgres:// connection string, got ${show(database)}.`,
      )
    }
    this.schema = schema
    this.tableName = tableName
    Object.defineProperty(this, ENGINE, {
      value: new Engine(pool, makePool, names(schema, tableName), where, clock, cleanupIntervalMs, durable),
    })
  }

  /**
   * The pool in use: yours, or the one PostgresBackend opened from the connection string (a new one
   * after {@link PostgresBackend.reconnect}).
   */
  get pool(): PostgresPool {
    return this[ENGINE].pool
  }

  /**
   * Creates the schema, tables and index if they are missing and checks the schema version. The first
   * call does it anyway; await this at startup to fail fast.
   * @throws ConfigError when the table belongs to someone else, was written by a newer release, or the
   *   user may not create it; `ERR_FASTLIMIT_BACKEND` when the database cannot be reached
   */
  ready(): Promise<void> {
    return this[ENGINE].run(undefined, async () => undefined)
  }

  /** {@link Backend.checkAndIncrement}: one transaction, two round trips. */
  checkAndIncrement(
    key: string,
    bucket: BucketConfig,
    cost: number,
    options?: CallOptions,
  ): Promise<BackendResult> {
    try {
      return this[ENGINE].decide(key, [bucket], cost, options?.deadline).then((r) => r[0] as BackendResult)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** {@link Backend.checkAndIncrementAll}: every bucket in one transaction, all-or-nothing. */
  checkAndIncrementAll(
    key: string,
    buckets: readonly BucketConfig[],
    cost: number,
    options?: CallOptions,
  ): Promise<BackendResult[]> {
    try {
      return this[ENGINE].decide(key, buckets, cost, options?.deadline)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /**
   * {@link Backend.adjust}: a refund or an extra charge on several buckets of one key, in one
   * transaction that locks their rows as a decision does (two round trips), never applied after its deadline.
   */
  adjust(
    key: string,
    buckets: readonly BucketConfig[],
    delta: number,
    charges: readonly Charge[] | undefined,
    options?: CallOptions,
  ): Promise<BackendResult[]> {
    try {
      return this[ENGINE].adjust(key, buckets, delta, charges, options?.deadline)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** {@link Backend.peek}: one read, no lock and no write. */
  peek(key: string, bucket: BucketConfig, options?: CallOptions): Promise<BackendResult> {
    return this[ENGINE].peek(key, bucket, options?.deadline)
  }

  /** Deletes every row of `key` (all its buckets). */
  reset(key: string, options?: CallOptions): Promise<void> {
    return this[ENGINE].reset(key, options?.deadline)
  }

  /** Empties this backend's table; nothing else in the database is touched. */
  clear(): Promise<void> {
    return this[ENGINE].clear()
  }

  /**
   * Deletes expired rows now, in statements of at most 500 rows (`FOR UPDATE SKIP LOCKED`: never waiting
   * for a decision), each on a connection taken afresh. Runs on its own every `cleanupIntervalMs`; a
   * call while a sweep runs joins it.
   * @returns a promise of how many rows were deleted
   */
  sweep(): Promise<number> {
    return this[ENGINE].sweep()
  }

  /**
   * Called by `FastLimit` when its circuit breaker opens: closes the connection of every call in flight
   * (the server rolls their transactions back, so none is applied later) and, for a pool
   * PostgresBackend opened itself, replaces the pool (its idle connections may be dead too). A pool you
   * passed in is not closed: only the connections this backend has checked out are dropped.
   */
  reconnect(reason: Error): void {
    this[ENGINE].reconnect(reason)
  }

  /**
   * Stops the sweep timer and closes the pool if PostgresBackend opened it (a pool you passed in stays
   * open). Idempotent; later calls reject with `ERR_FASTLIMIT_CLOSED`.
   */
  close(): Promise<void> {
    return this[ENGINE].close()
  }
}
