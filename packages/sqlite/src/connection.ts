// One open database, ready for decisions: its statements prepared and its transactions built once.
import {
  adjustAll,
  algorithms,
  type BackendResult,
  type BucketConfig,
  bucketId,
  type Charge,
  decodeState,
  encodeState,
  type StepOutput,
  stepAll,
} from '@fastlimit/core'
import type Database from 'better-sqlite3'
import { expired } from './errors'
import { type LeaseStatements, leaseStatements } from './leases'
import { MAX_SLACK_MS, statements } from './schema'

/**
 * SQLite's busy timeout on SQLiteBackend's connections, in milliseconds: how long one statement may block
 * the event loop waiting for another connection's write lock (SQLite sleeps 1 ms, then gives up). Longer
 * waits happen off the event loop ({@link LockQueue}). Decisions by other processes hold the lock for
 * microseconds, so most collisions end within this wait.
 */
export const LOCK_SPIN_MS = 2

/** A row as the select statement returns it (raw mode): `[state, expires_at]`. */
type Row = [state: string, expiresAt: number]

/** The calls SQLiteBackend makes on one connection. */
export interface Connection {
  readonly db: Database.Database
  /** One decision in a `BEGIN IMMEDIATE` transaction; refused (nothing charged) once `deadline` has passed. */
  check(key: string, bucket: BucketConfig, cost: number, deadline: number | undefined): BackendResult
  /** Several buckets all-or-nothing in one `BEGIN IMMEDIATE` transaction. */
  checkAll(
    key: string,
    buckets: readonly BucketConfig[],
    cost: number,
    deadline: number | undefined,
  ): BackendResult[]
  /** Adjusts several buckets of one key (a refund or an extra charge) in one `BEGIN IMMEDIATE` transaction. */
  adjust(
    key: string,
    buckets: readonly BucketConfig[],
    delta: number,
    charges: readonly Charge[] | undefined,
    deadline: number | undefined,
  ): BackendResult[]
  /** A read, no transaction and no write lock. */
  peek(key: string, bucket: BucketConfig): BackendResult
  /** Deletes every row of `key`, unless `deadline` has passed. */
  reset(key: string, deadline: number | undefined): void
  /** Deletes every row of the table, in one statement. */
  clear(): void
  /** Deletes up to `SWEEP_BATCH` expired rows; returns how many. */
  sweepBatch(): number
  /** Concurrency leases, in `<table>_leases`. */
  readonly leases: LeaseStatements
  /** Runs `run` with the connection's busy timeout at 0 (a retry off the event loop must never block it). */
  noWait<T>(run: () => T): T
}

/**
 * Prepares `db` (whose schema is in place) for decisions on `table`, with the clock `now`.
 * Sets its busy timeout to {@link LOCK_SPIN_MS}.
 */
export function connect(db: Database.Database, table: string, now: () => number): Connection {
  db.pragma(`busy_timeout = ${LOCK_SPIN_MS}`)
  const sql = statements(table)
  // Numbers as numbers even on a Database whose owner turned defaultSafeIntegers on.
  const select = db.prepare(sql.select).raw().safeIntegers(false)
  const update = db.prepare(sql.update)
  const upsert = db.prepare(sql.upsert)
  const reset = db.prepare(sql.reset)
  const clear = db.prepare(sql.clear)
  const sweep = db.prepare(sql.sweep)
  const leases = leaseStatements(db, table, now)

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

  // The two decisions: read, step, write, in one BEGIN IMMEDIATE transaction each, built once. The deadline
  // is compared once the lock is held, so that a call the limiter gave up on is never applied.
  const check = db.transaction(
    (key: string, bucket: BucketConfig, cost: number, deadline: number | undefined): BackendResult => {
      if (deadline !== undefined && Date.now() >= deadline) throw expired()
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
      const result = out.result
      if (result.allowed || out.rebased) write(key, id, row, t, out, bucket.windowMs)
      // The clock of the charge, for a reservation's refund (Backend.adjust).
      if (result.allowed) (result as { atMs?: number }).atMs = t
      return result
    },
  ).immediate
  const checkAll = db.transaction(
    (
      key: string,
      buckets: readonly BucketConfig[],
      cost: number,
      deadline: number | undefined,
    ): BackendResult[] => {
      if (deadline !== undefined && Date.now() >= deadline) throw expired()
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
      const results = all.results
      if (all.allowed) for (const r of results) (r as { atMs?: number }).atMs = t
      return results
    },
  ).immediate
  const adjust = db.transaction(
    (
      key: string,
      buckets: readonly BucketConfig[],
      delta: number,
      charges: readonly Charge[] | undefined,
      deadline: number | undefined,
    ): BackendResult[] => {
      if (deadline !== undefined && Date.now() >= deadline) throw expired()
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
      const outs = adjustAll(states, t, buckets, delta, charges)
      const results: BackendResult[] = new Array(n)
      for (let i = 0; i < n; i++) {
        const out = outs[i] as (typeof outs)[number]
        if (out.changed || out.rebased) {
          write(key, ids[i] as string, rows[i], t, out, (buckets[i] as BucketConfig).windowMs)
        }
        results[i] = out.result
      }
      return results
    },
  ).immediate
  const resetTx = db.transaction((key: string, deadline: number | undefined): void => {
    if (deadline !== undefined && Date.now() >= deadline) throw expired()
    reset.run(key)
  }).immediate

  return {
    db,
    check,
    checkAll,
    adjust,
    peek(key, bucket) {
      const t = now()
      const row = select.get(key, bucketId(bucket), t) as Row | undefined
      return algorithms[bucket.algorithm](row === undefined ? undefined : decodeState(row[0]), t, bucket, 0)
        .result
    },
    reset: resetTx,
    clear: () => {
      clear.run()
      leases.clear()
    },
    sweepBatch: () => sweep.run(now()).changes + leases.sweepBatch(),
    leases,
    noWait<T>(run: () => T): T {
      // A PRAGMA takes effect when it is prepared, so each change prepares it anew (a few µs, only on retries).
      db.pragma('busy_timeout = 0')
      try {
        return run()
      } finally {
        if (db.open) db.pragma(`busy_timeout = ${LOCK_SPIN_MS}`)
      }
    },
  }
}
