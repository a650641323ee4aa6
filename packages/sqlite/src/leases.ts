// Concurrency leases on SQLite: one row per live lease in `<table>_leases`, taken and given back in one
// BEGIN IMMEDIATE transaction each, so every process sharing the file counts the same holders.
import type { AcquireResult, SlotConfig } from '@fastlimit/core'
import type Database from 'better-sqlite3'
import { expired } from './errors'
import { SWEEP_BATCH } from './schema'

/** The SQL that creates the lease table and its index (run in ensureSchema's transaction). */
export function leaseSchema(table: string): string {
  return `CREATE TABLE IF NOT EXISTS "${table}_leases" (
    key TEXT NOT NULL,
    token TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (key, token)
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS "${table}_leases_expires_at" ON "${table}_leases" (expires_at);`
}

/** The lease calls of one connection. */
export interface LeaseStatements {
  /** Takes a lease if fewer than `limit` are live; refused (nothing written) once `deadline` has passed. */
  acquire(key: string, slots: SlotConfig, token: string, deadline: number | undefined): AcquireResult
  /** Deletes a lease; whether it was live. */
  release(key: string, token: string, deadline: number | undefined): boolean
  /** {@link acquire} without its transaction (for a group). */
  acquireBody(key: string, slots: SlotConfig, token: string, deadline: number | undefined): AcquireResult
  /** {@link release} without its transaction (for a group). */
  releaseBody(key: string, token: string, deadline: number | undefined): boolean
  /** Deletes every lease. */
  clear(): void
  /** Deletes up to `SWEEP_BATCH` expired leases; returns how many. */
  sweepBatch(): number
}

/** Prepares the lease statements of `table` on `db` (whose schema is in place). */
export function leaseStatements(db: Database.Database, table: string, now: () => number): LeaseStatements {
  const t = `"${table}_leases"`
  // Expired leases of the key go first: the count and the earliest expiry are then of live leases only.
  const purge = db.prepare(`DELETE FROM ${t} WHERE key = ? AND expires_at <= ?`)
  const count = db
    .prepare(`SELECT count(*), min(expires_at) FROM ${t} WHERE key = ?`)
    .raw()
    .safeIntegers(false)
  const insert = db.prepare(`INSERT OR REPLACE INTO ${t} (key, token, expires_at) VALUES (?, ?, ?)`)
  const remove = db
    .prepare(`DELETE FROM ${t} WHERE key = ? AND token = ? RETURNING expires_at`)
    .pluck()
    .safeIntegers(false)
  const clear = db.prepare(`DELETE FROM ${t}`)
  const sweep = db.prepare(
    `DELETE FROM ${t} WHERE (key, token) IN (SELECT key, token FROM ${t} WHERE expires_at <= ? LIMIT ${SWEEP_BATCH})`,
  )
  const acquireBody = (
    key: string,
    slots: SlotConfig,
    token: string,
    deadline: number | undefined,
  ): AcquireResult => {
    if (deadline !== undefined && Date.now() >= deadline) throw expired()
    const at = now()
    purge.run(key, at)
    const [n, first] = count.get(key) as [number, number | null]
    const limit = slots.limit
    if (n >= limit) {
      return { acquired: false, limit, holders: n, expiresMs: 0, retryAfterMs: (first as number) - at }
    }
    const expiresMs = at + slots.leaseMs
    insert.run(key, token, expiresMs)
    return { acquired: true, limit, holders: n + 1, expiresMs, retryAfterMs: 0 }
  }
  const releaseBody = (key: string, token: string, deadline: number | undefined): boolean => {
    if (deadline !== undefined && Date.now() >= deadline) throw expired()
    const at = now()
    const expiresAt = remove.get(key, token) as number | undefined
    return expiresAt !== undefined && expiresAt > at
  }
  return {
    acquire: db.transaction(acquireBody).immediate,
    release: db.transaction(releaseBody).immediate,
    acquireBody,
    releaseBody,
    clear: () => {
      clear.run()
    },
    sweepBatch: () => sweep.run(now()).changes,
  }
}
