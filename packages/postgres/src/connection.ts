// What PostgresBackend accepts as a database: a pg.Pool (structurally) or a postgres:// connection string.
import { ConfigError } from '@fastlimit/core'

/**
 * A client checked out of a pool: the part of pg's `PoolClient` PostgresBackend uses. A `pg.Pool`'s
 * clients have it.
 */
export interface PostgresPoolClient {
  /**
   * Runs a simple query (one or several statements, no parameters) with rows as arrays; resolves to
   * one result, or an array of results for several statements, as pg does. `query_timeout` (ms, set
   * only on schema statements) fails the query when the server does not answer.
   */
  query(config: { text: string; rowMode: 'array'; query_timeout?: number }): Promise<unknown>
  /** Gives the client back to its pool; with an error, the pool closes its connection instead. */
  release(err?: Error | boolean): void
  /** Listens for the connection's errors while PostgresBackend holds the client. */
  on(event: 'error', listener: (err: Error) => void): unknown
  /** Stops listening, when PostgresBackend releases the client. */
  removeListener(event: 'error', listener: (err: Error) => void): unknown
}

/**
 * A connection pool: the part of pg's `Pool` PostgresBackend uses. Pass a `pg.Pool` (pg 8); any object
 * with the same shape works (a pool of a pg-compatible driver, a wrapper of your own).
 */
export interface PostgresPool {
  /** Checks a client out; PostgresBackend releases it when its transaction is over. */
  connect(): Promise<PostgresPoolClient>
  /** Closes the pool (PostgresBackend calls it only on a pool it created from a connection string). */
  end(): Promise<void>
  /** Clients in the pool, busy or idle (a `pg.Client` has no such count: that tells them apart). */
  readonly totalCount: number
  /** Clients waiting idle in the pool. */
  readonly idleCount: number
}

/** Whether `value` looks like a pool PostgresBackend can use. */
export function isPool(value: unknown): value is PostgresPool {
  if (typeof value !== 'object' || value === null) return false
  const v = value as Record<string, unknown>
  return (
    typeof v.connect === 'function' &&
    typeof v.end === 'function' &&
    typeof v.totalCount === 'number' &&
    typeof v.idleCount === 'number'
  )
}

/** Whether `value` looks like a single `pg.Client` (which cannot run concurrent transactions). */
export function isClient(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false
  const v = value as Record<string, unknown>
  return typeof v.connect === 'function' && typeof v.query === 'function' && !isPool(value)
}

/**
 * A connection string with its credentials left out, for messages: `postgres://db.internal:5432/app`.
 * Never shows the user, the password or the query string (which may hold `password=`).
 */
export function redact(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`
}

/**
 * Checks a connection string before pg sees it, so that a typo is a ConfigError at construction and
 * not a failed decision later. Accepts `postgres://` and `postgresql://` URLs (host, port, database,
 * user and password, and pg's query parameters such as `sslmode` or `host=/var/run/postgresql`).
 * @throws ConfigError that never echoes the password
 */
export function checkConnectionString(value: string): URL {
  const example = "'postgres://user:password@localhost:5432/app'"
  if (value.trim() === '') {
    throw new ConfigError(
      `[fastlimit] [postgres] The connection string is empty: pass one such as ${example}, or a pg.Pool.`,
    )
  }
  let url: URL
  try {
    url = new URL(value)
  } catch (err) {
    throw new ConfigError(
      `[fastlimit] [postgres] The connection string (${value.length} characters, not shown: it may hold a ` +
        `password) is not a URL: pass one such as ${example}, with special characters of the password ` +
        'percent-encoded (encodeURIComponent), or a pg.Pool.',
      { cause: err },
    )
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new ConfigError(
      `[fastlimit] [postgres] The connection string is a ${JSON.stringify(url.protocol)} URL: PostgresBackend ` +
        `takes postgres:// or postgresql:// URLs, such as ${example}.`,
    )
  }
  if (url.hostname === '' && !url.searchParams.has('host')) {
    throw new ConfigError(
      `[fastlimit] [postgres] The connection string ${redact(url)} names no host: pass one such as ${example} ` +
        "(or 'postgres:///app?host=/var/run/postgresql' for a Unix socket).",
    )
  }
  for (const part of [url.username, url.password, url.pathname]) {
    try {
      decodeURIComponent(part)
    } catch (err) {
      throw new ConfigError(
        `[fastlimit] [postgres] The connection string ${redact(url)} holds a malformed percent-escape in its ` +
          'user, password or database name: percent-encode them with encodeURIComponent.',
        { cause: err },
      )
    }
  }
  return url
}
