// The table PostgresBackend keeps its state in, its version, and the SQL that creates and checks it.

/**
 * The version of the table layout this release reads and writes, stored in `<table>_meta`.
 * A later release that changes the layout migrates older versions forward; a table written by a
 * newer release is refused rather than misread.
 */
export const SCHEMA_VERSION = 1

/** How many expired rows one sweep statement deletes: a bound on how long it holds their locks. */
export const SWEEP_BATCH = 500

/**
 * The most a row's `expires_at` is set beyond the state's own expiry. A row is written with
 * `expires_at = now + ttl + min(windowMs, MAX_SLACK_MS)`, so that the next decisions on a busy key
 * leave `expires_at` (an indexed column) unchanged: Postgres then updates the row in place (a HOT
 * update), without a new entry in either index. A state read after its own expiry is equivalent to no
 * state (the contract of every core `step`), so the slack changes no decision.
 */
export const MAX_SLACK_MS = 60_000

/**
 * An identifier we accept for a schema or table: letters, digits and underscores, not starting with a
 * digit, at most 48 characters (so `<table>_expires_at` fits Postgres's 63-byte limit). It is always
 * double-quoted in SQL, so its case is kept.
 */
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,47}$/

/** Whether `name` is a schema or table name we accept. */
export function isIdentifier(name: unknown): name is string {
  return typeof name === 'string' && IDENTIFIER.test(name) && !/^pg_/i.test(name)
}

/** `"schema"."table"` and the names derived from it, for validated identifiers. */
export interface Names {
  readonly schema: string
  readonly table: string
  /** The state table, qualified and quoted. */
  readonly state: string
  /** The meta table, qualified and quoted. */
  readonly meta: string
  /** The expiry index, quoted (unqualified, as `CREATE INDEX` wants it). */
  readonly index: string
}

export function names(schema: string, table: string): Names {
  return {
    schema,
    table,
    state: `"${schema}"."${table}"`,
    meta: `"${schema}"."${table}_meta"`,
    index: `"${table}_expires_at"`,
  }
}

/** The columns of the state table, in order, with their types as `format_type` prints them. */
export const COLUMNS: ReadonlyArray<readonly [string, string]> = [
  ['key', 'bytea'],
  ['bucket', 'bytea'],
  ['state', 'text'],
  ['expires_at', 'bigint'],
]

/**
 * The DDL, idempotent. `fillfactor = 80` leaves room in each page so that rewriting a row's state can
 * stay on its page (a HOT update).
 */
export function createStatements(n: Names): string {
  return [
    `CREATE SCHEMA IF NOT EXISTS "${n.schema}"`,
    `CREATE TABLE IF NOT EXISTS ${n.state} (
      key bytea NOT NULL,
      bucket bytea NOT NULL,
      state text NOT NULL,
      expires_at bigint NOT NULL,
      PRIMARY KEY (key, bucket)
    ) WITH (fillfactor = 80)`,
    `CREATE INDEX IF NOT EXISTS ${n.index} ON ${n.state} (expires_at)`,
    `CREATE TABLE IF NOT EXISTS ${n.meta} (name text PRIMARY KEY, value bigint NOT NULL)`,
  ].join(';\n')
}

/**
 * A number for `pg_advisory_xact_lock` that serializes schema creation among processes starting
 * together on one table (CREATE ... IF NOT EXISTS alone can fail with a duplicate key when two race).
 * Held only while the schema is created or checked.
 */
export function schemaLockId(n: Names): string {
  let h = 0x811c9dc5
  for (const ch of `fastlimit:${n.schema}.${n.table}`) {
    h ^= ch.charCodeAt(0)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  // A fixed high half ('fl' in ASCII) keeps it apart from small advisory lock numbers an app may use.
  return (BigInt(0x666c) * 2n ** 32n + BigInt(h)).toString()
}
