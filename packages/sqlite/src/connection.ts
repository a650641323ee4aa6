// One open database, ready for decisions: its statements prepared and its transactions built once.
import {
  type AcquireResult,
  adjustAll,
  algorithms,
  type BackendResult,
  type BucketConfig,
  bucketId,
  type Charge,
  decodeState,
  encodeState,
  type SlotConfig,
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

/** The write calls without their transaction, for {@link Connection.group}: each reads, steps and writes. */
export interface Bodies {
  check(key: string, bucket: BucketConfig, cost: number, deadline: number | undefined): BackendResult
  checkAll(
    key: string,
    buckets: readonly BucketConfig[],
    cost: number,
    deadline: number | undefined,
  ): BackendResult[]
  adjust(
    key: string,
    buckets: readonly BucketConfig[],
    delta: number,
    charges: readonly Charge[] | undefined,
    deadline: number | undefined,
  ): BackendResult[]
  reset(key: string, deadline: number | undefined): void
  acquire(key: string, slots: SlotConfig, token: string, deadline: number | undefined): AcquireResult
  release(key: string, token: string, deadline: number | undefined): boolean
}

/** One call in a group: what it runs, and (filled in by {@link Connection.group}) how it ended. */
export interface GroupMember {
  /** The call's body, on the bodies of the connection the group runs on. */
  readonly run: (bodies: Bodies) => unknown
  /**
   * Whether the body may write more than one statement: it then runs in a savepoint, so that a failure half
   * way leaves nothing of it. A body of one write needs none (SQLite undoes a failed statement by itself).
   */
  readonly multi: boolean
  /** Set when the body threw: the group went on without it, and `error` says why. */
  failed: boolean
  /** The body's return value, or what it threw. */
  outcome: unknown
}

/**
 * The calls SQLiteBackend makes on one connection. `check`, `checkAll`, `adjust` and `reset` are the
 * {@link Bodies} calls, each in a `BEGIN IMMEDIATE` transaction of its own, refused (nothing charged)
 * once `deadline` has passed.
 */
export interface Connection extends Omit<Bodies, 'acquire' | 'release'> {
  readonly db: Database.Database
  /** A read, no transaction and no write lock. */
  peek(key: string, bucket: BucketConfig): BackendResult
  /** Deletes every row of the table, in one statement. */
  clear(): void
  /** Deletes up to `SWEEP_BATCH` expired rows; returns how many. */
  sweepBatch(): number
  /** Concurrency leases, in `<table>_leases`. */
  readonly leases: LeaseStatements
  /** Runs `run` with the connection's busy timeout at 0 (a retry off the event loop must never block it). */
  noWait<T>(run: () => T): T
  /** The write calls without their transaction. */
  readonly bodies: Bodies
  /** Runs one call's body in its own `BEGIN IMMEDIATE` transaction (a savepoint inside an open one). */
  one<T>(run: (bodies: Bodies) => T): T
  /**
   * Runs every member, in order, in one `BEGIN IMMEDIATE` transaction (group commit), each seeing the
   * writes of those before it. A member that throws is marked failed and leaves nothing behind; the others
   * go on. Throws, with nothing applied, when the transaction cannot begin (busy: another connection holds
   * the lock), when a failure ended it (SQLite rolls back on a full disk or an I/O error), or when it
   * cannot commit. Inside a transaction the Database's owner opened, it is a savepoint of that one.
   */
  group(members: readonly GroupMember[]): void
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

  // The decisions: read, step, write. Each runs in a BEGIN IMMEDIATE transaction of its own (built once) or
  // in a group's. The deadline is compared once the lock is held, so that a call the limiter gave up on is
  // never applied.
  const checkBody = (
    key: string,
    bucket: BucketConfig,
    cost: number,
    deadline: number | undefined,
  ): BackendResult => {
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
  }
  /** Each bucket's id, row and decoded state of `key`, as read at `t`. */
  const readAll = (key: string, buckets: readonly BucketConfig[], t: number) => {
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
    return { ids, rows, states }
  }
  const checkAllBody = (
    key: string,
    buckets: readonly BucketConfig[],
    cost: number,
    deadline: number | undefined,
  ): BackendResult[] => {
    if (deadline !== undefined && Date.now() >= deadline) throw expired()
    const t = now()
    const { ids, rows, states } = readAll(key, buckets, t)
    const all = stepAll(states, t, buckets, cost)
    for (let i = 0; i < buckets.length; i++) {
      const out = all.outputs[i] as StepOutput
      if (all.allowed || out.rebased) {
        write(key, ids[i] as string, rows[i], t, out, (buckets[i] as BucketConfig).windowMs)
      }
    }
    const results = all.results
    if (all.allowed) for (const r of results) (r as { atMs?: number }).atMs = t
    return results
  }
  const adjustBody = (
    key: string,
    buckets: readonly BucketConfig[],
    delta: number,
    charges: readonly Charge[] | undefined,
    deadline: number | undefined,
  ): BackendResult[] => {
    if (deadline !== undefined && Date.now() >= deadline) throw expired()
    const t = now()
    const { ids, rows, states } = readAll(key, buckets, t)
    const outs = adjustAll(states, t, buckets, delta, charges)
    const n = buckets.length
    const results: BackendResult[] = new Array(n)
    for (let i = 0; i < n; i++) {
      const out = outs[i] as (typeof outs)[number]
      if (out.changed || out.rebased) {
        write(key, ids[i] as string, rows[i], t, out, (buckets[i] as BucketConfig).windowMs)
      }
      results[i] = out.result
    }
    return results
  }
  const resetBody = (key: string, deadline: number | undefined): void => {
    if (deadline !== undefined && Date.now() >= deadline) throw expired()
    reset.run(key)
  }
  const check = db.transaction(checkBody).immediate
  const checkAll = db.transaction(checkAllBody).immediate
  const adjust = db.transaction(adjustBody).immediate
  const resetTx = db.transaction(resetBody).immediate
  const bodies: Bodies = {
    check: checkBody,
    checkAll: checkAllBody,
    adjust: adjustBody,
    reset: resetBody,
    acquire: leases.acquireBody,
    release: leases.releaseBody,
  }
  const one = db.transaction((run: (b: Bodies) => unknown) => run(bodies)).immediate

  // Group commit: one transaction, a savepoint for each member that writes more than once.
  const begin = db.prepare('BEGIN IMMEDIATE')
  const commit = db.prepare('COMMIT')
  const rollback = db.prepare('ROLLBACK')
  const outer = db.prepare('SAVEPOINT fastlimit_group')
  const outerRelease = db.prepare('RELEASE fastlimit_group')
  const outerUndo = db.prepare('ROLLBACK TO fastlimit_group')
  const save = db.prepare('SAVEPOINT fastlimit_member')
  const saveRelease = db.prepare('RELEASE fastlimit_member')
  const saveUndo = db.prepare('ROLLBACK TO fastlimit_member')
  const group = (members: readonly GroupMember[]): void => {
    // A Database whose owner has a transaction open: the group is a savepoint of it, as a single call is.
    const nested = db.inTransaction
    if (nested) outer.run()
    else begin.run()
    try {
      for (const m of members) {
        if (m.multi) save.run()
        try {
          m.outcome = m.run(bodies)
          m.failed = false
          if (m.multi) saveRelease.run()
        } catch (err) {
          // SQLite ended the whole transaction (a full disk, an I/O error): nothing of the group stands.
          if (!db.inTransaction) throw err
          if (m.multi) {
            saveUndo.run()
            saveRelease.run()
          }
          m.failed = true
          m.outcome = err
        }
      }
      if (nested) outerRelease.run()
      else commit.run()
    } catch (err) {
      if (db.inTransaction) {
        if (nested) {
          outerUndo.run()
          outerRelease.run()
        } else rollback.run()
      }
      throw err
    }
  }

  return {
    db,
    check,
    checkAll,
    adjust,
    bodies,
    one: one as <T>(run: (b: Bodies) => T) => T,
    group,
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
