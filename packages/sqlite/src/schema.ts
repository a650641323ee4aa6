// The table SQLiteBackend keeps its state in, its version, and the SQL that reads and writes it.

import { ConfigError } from '@fastlimit/core'
import type Database from 'better-sqlite3'
import { leaseSchema } from './leases'

/**
 * The version of the table layout this release reads and writes, stored in `<table>_meta`.
 * A later release that changes the layout migrates older versions forward; a file written by a
 * newer release is refused rather than misread.
 */
export const SCHEMA_VERSION = 1

/**
 * How many expired rows one sweep statement deletes: a bound on how long it holds the write lock (about
 * a millisecond: each row deleted touches a page of the table and one of the index). Each batch is its own
 * transaction, with a pause between batches as long as the batch took.
 */
export const SWEEP_BATCH = 100

/**
 * The most a row's `expires_at` is set beyond the state's own expiry. A row is written with
 * `expires_at = now + ttl + min(windowMs, MAX_SLACK_MS)`, so that the next decisions on a busy key
 * rewrite only its state and leave the expires_at index alone (moving an index entry costs about as
 * much as the rest of the transaction). A state read after its own expiry is equivalent to no state
 * (the contract of every core `step`), so the slack changes no decision; it only keeps rows a little longer.
 */
export const MAX_SLACK_MS = 60_000

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,58}$/

/** Whether `name` is a table name we accept: an SQL identifier that needs no quoting tricks. */
export function isTableName(name: unknown): name is string {
  return typeof name === 'string' && IDENTIFIER.test(name) && !/^sqlite_/i.test(name)
}

/** Every statement the backend runs, for one table name (already validated). */
export function statements(table: string) {
  const t = `"${table}"`
  return {
    select: `SELECT state, expires_at FROM ${t} WHERE key = ? AND bucket = ? AND expires_at > ?`,
    update: `UPDATE ${t} SET state = ? WHERE key = ? AND bucket = ?`,
    upsert:
      `INSERT INTO ${t} (key, bucket, state, expires_at) VALUES (?, ?, ?, ?) ` +
      'ON CONFLICT (key, bucket) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at',
    reset: `DELETE FROM ${t} WHERE key = ?`,
    // No WHERE: SQLite frees the table's and the index's pages instead of deleting rows one by one (about
    // 0.4 s per million rows on a loaded 2-core machine; deleting in batches took 100 times longer in all).
    clear: `DELETE FROM ${t}`,
    // The subquery walks the expires_at index; LIMIT bounds the time the write lock is held.
    sweep:
      `DELETE FROM ${t} WHERE (key, bucket) IN ` +
      `(SELECT key, bucket FROM ${t} WHERE expires_at <= ? LIMIT ${SWEEP_BATCH})`,
  }
}

const COLUMNS = ['key', 'bucket', 'state', 'expires_at']

/**
 * Creates the table, its index and its meta table if they are missing, checks the version, and
 * writes it. Runs in one `BEGIN IMMEDIATE` transaction, so processes starting together on a new
 * file create the schema once. The final write also proves the file is writable.
 * @throws ConfigError when the table belongs to someone else or to a newer release
 */
export function ensureSchema(db: Database.Database, table: string, where: string): void {
  const t = `"${table}"`
  const meta = `"${table}_meta"`
  const exists = db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).pluck()
  const init = db.transaction(() => {
    const hadTable = exists.get(table) !== undefined
    const hadMeta = exists.get(`${table}_meta`) !== undefined
    if (hadTable) {
      const columns = (db.pragma(`table_info(${t})`) as Array<{ name: string }>).map((c) => c.name)
      if (columns.join(',') !== COLUMNS.join(',')) {
        throw new ConfigError(
          `[fastlimit] [sqlite] ${where} already has a table ${t} with columns (${columns.join(', ')}) that ` +
            `fastlimit did not create: pass another tableName, e.g. { tableName: 'fastlimit_state' }.`,
        )
      }
    }
    db.exec(
      `CREATE TABLE IF NOT EXISTS ${t} (
        key TEXT NOT NULL,
        bucket TEXT NOT NULL,
        state TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (key, bucket)
      ) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS "${table}_expires_at" ON ${t} (expires_at);
      CREATE TABLE IF NOT EXISTS ${meta} (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
      ${leaseSchema(table)}`,
    )
    const stored = hadMeta
      ? db
          .prepare(`SELECT value FROM ${meta} WHERE name = 'schema_version'`)
          .pluck()
          .safeIntegers(false)
          .get()
      : undefined
    const version = stored === undefined ? undefined : Number(stored)
    if (version !== undefined && version > SCHEMA_VERSION) {
      throw new ConfigError(
        `[fastlimit] [sqlite] Table ${t} in ${where} has schema version ${version}, written by a newer ` +
          `@fastlimit/sqlite; this release knows version ${SCHEMA_VERSION}. Upgrade @fastlimit/sqlite in every ` +
          'process that shares the file, or pass another tableName.',
      )
    }
    if (version !== undefined && !(Number.isSafeInteger(version) && version >= 1)) {
      throw new ConfigError(
        `[fastlimit] [sqlite] Table ${meta} in ${where} holds an unreadable schema_version ${JSON.stringify(stored)}: ` +
          `it was not written by fastlimit. Drop ${t} and ${meta} (rate-limit state is disposable), or pass another tableName.`,
      )
    }
    // Migrations from older versions go here, each in this transaction, when version 2 exists.
    db.prepare(
      `INSERT INTO ${meta} (name, value) VALUES ('schema_version', ?) ` +
        'ON CONFLICT (name) DO UPDATE SET value = excluded.value',
    ).run(SCHEMA_VERSION)
  })
  init.immediate()
}
