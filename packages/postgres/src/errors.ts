// Turns what pg throws into FastlimitErrors that say what happened and what to do.
import { ConfigError, FastlimitError } from '@fastlimit/core'

/** The SQLSTATE of a server error (`'57014'`), or the Node error code of a socket error (`'ECONNREFUSED'`). */
export function pgCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : ''
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** The message of an error, followed by its code in parentheses when it has one. */
export function detailOf(err: unknown): string {
  const code = pgCode(err)
  return `${messageOf(err)}${code ? ` (${code})` : ''}`
}

/** SQLSTATEs of a statement that was stopped by the timeouts derived from the call's deadline. */
const TIMED_OUT = new Set([
  '57014', // query_canceled: statement_timeout
  '55P03', // lock_not_available: lock_timeout
])

/** SQLSTATEs that mean the table is missing or was changed under us: prepare the schema again. */
export const SCHEMA_GONE = new Set([
  '42P01', // undefined_table
  '42703', // undefined_column
  '3F000', // invalid_schema_name
])

/** Whether a failure left the connection unusable (a fatal server error, a closed socket). */
export function isFatal(err: unknown): boolean {
  // Ours (a deadline seen in this process): the connection is fine.
  if (err instanceof FastlimitError) return false
  const e = err as { severity?: unknown; code?: unknown } | null
  if (e?.severity === 'FATAL' || e?.severity === 'PANIC') return true
  const code = pgCode(err)
  // SQLSTATEs are five characters; anything else (ECONNRESET, undefined) is not a server's answer.
  return !/^[0-9A-Z]{5}$/.test(code) || code.startsWith('08') || code.startsWith('57P')
}

/** `ERR_FASTLIMIT_TIMEOUT`: the call's deadline passed before it could be applied; nothing was charged. */
export function timeoutError(what: string, cause?: unknown): FastlimitError {
  return new FastlimitError(
    'ERR_FASTLIMIT_TIMEOUT',
    `[fastlimit] [postgres] ${what}: the call's deadline passed, so nothing was charged; onBackendError applies.`,
    cause === undefined ? undefined : { cause },
  )
}

/**
 * An error during a call, as a FastlimitError: `ERR_FASTLIMIT_TIMEOUT` for a statement or lock wait
 * stopped by the deadline, `ERR_FASTLIMIT_STORE_FULL` for a full disk, `ERR_FASTLIMIT_BACKEND` for the
 * rest. A FastlimitError passes through unchanged. `committing`: the failure came while the commit was
 * sent, so a lost connection leaves the outcome unknown (and the message says so).
 */
export function backendError(err: unknown, committing = false): FastlimitError {
  if (err instanceof FastlimitError) return err
  const code = pgCode(err)
  const detail = detailOf(err)
  if (TIMED_OUT.has(code)) {
    return timeoutError(
      code === '55P03'
        ? `Another session held the row lock of this key past the call's deadline (${detail})`
        : `The statement ran past the call's deadline (${detail})`,
      err,
    )
  }
  let message: string
  let errorCode: 'ERR_FASTLIMIT_BACKEND' | 'ERR_FASTLIMIT_STORE_FULL' = 'ERR_FASTLIMIT_BACKEND'
  if (code === '53100') {
    errorCode = 'ERR_FASTLIMIT_STORE_FULL'
    message =
      `The database server is out of disk space: ${detail}. Limits cannot be kept until it has room; ` +
      'nothing was charged and onBackendError applies.'
  } else if (code === '25006') {
    message =
      `The database is read-only (a standby, or default_transaction_read_only): ${detail}. Point ` +
      'PostgresBackend at the primary. Nothing was charged; onBackendError applies.'
  } else if (code === '40P01') {
    message = `The decision was chosen as a deadlock victim: ${detail}. Nothing was charged; onBackendError applies.`
  } else if (SCHEMA_GONE.has(code)) {
    message =
      `The table of PostgresBackend is missing or was altered: ${detail}. It is created again at the next ` +
      'call. Nothing was charged; onBackendError applies.'
  } else if (committing && isFatal(err)) {
    message =
      `The connection was lost while the decision was being committed: ${detail}. It may or may not have ` +
      'been charged (at most once); onBackendError applies.'
  } else {
    message = `The database failed: ${detail}. Nothing was charged; onBackendError applies.`
  }
  return new FastlimitError(errorCode, `[fastlimit] [postgres] ${message}`, { cause: err })
}

/**
 * An error while preparing the schema: a ConfigError when only the user can fix it (no privilege, a
 * table that is not ours), else a backend error (the database is down: the next call tries again).
 */
export function schemaError(err: unknown, where: string): FastlimitError {
  if (err instanceof FastlimitError) return err
  const code = pgCode(err)
  if (code === '42501') {
    return new ConfigError(
      `[fastlimit] [postgres] The database user may not create or read ${where}: ${detailOf(err)}. Grant it ` +
        'CREATE on the schema (or create the tables yourself with the DDL in the README) and SELECT, INSERT, ' +
        'UPDATE, DELETE on them.',
      { cause: err },
    )
  }
  return backendError(err)
}
