// Turns what better-sqlite3 throws into FastlimitErrors that say what happened and what to do.
import { ConfigError, FastlimitError } from '@fastlimit/core'

/** The SQLite result code of an error (`'SQLITE_BUSY'`, `'SQLITE_READONLY_DBMOVED'`, ...), if it has one. */
export function sqliteCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : ''
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** The message of an error, followed by its SQLite result code in parentheses when it has one. */
function detailOf(err: unknown, code: string): string {
  return `${messageOf(err)}${code ? ` (${code})` : ''}`
}

/** Whether an error means the write lock could not be taken within the busy timeout. */
export function isBusy(code: string): boolean {
  return code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')
}

/**
 * An error while opening or preparing the database (at construction), as a ConfigError: the file is
 * corrupt, read-only, locked, or cannot be opened.
 */
export function openError(err: unknown, where: string, busyTimeoutMs: number): FastlimitError {
  if (err instanceof FastlimitError) return err
  const code = sqliteCode(err)
  const detail = detailOf(err, code)
  let message: string
  if (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT')) {
    message =
      `${where} is not a SQLite database or is corrupt: ${detail}. Rate-limit state is disposable: ` +
      'move the file (and its -wal and -shm files) aside, or pass another path, and a new database is created.'
  } else if (code.startsWith('SQLITE_READONLY')) {
    message =
      `${where} is read-only: ${detail}. SQLiteBackend writes on every decision: make the file and its ` +
      'directory writable by this process, or pass another path.'
  } else if (isBusy(code)) {
    message =
      `${where} stayed locked by another connection for more than busyTimeoutMs (${busyTimeoutMs} ms) ` +
      `while fastlimit prepared its table: ${detail}. Find the long transaction, or raise busyTimeoutMs.`
  } else if (code.startsWith('SQLITE_CANTOPEN')) {
    message = `${where} cannot be opened: ${detail}. Check the path and its permissions.`
  } else {
    message = `${where} could not be prepared for rate limiting: ${detail}.`
  }
  return new ConfigError(`[fastlimit] [sqlite] ${message}`, { cause: err })
}

/**
 * An error during a decision, as `ERR_FASTLIMIT_BACKEND` (FastLimit then applies its `onBackendError`
 * policy). A FastlimitError passes through unchanged.
 */
export function backendError(err: unknown, busyTimeoutMs: number): FastlimitError {
  if (err instanceof FastlimitError) return err
  const code = sqliteCode(err)
  const detail = detailOf(err, code)
  let message: string
  if (isBusy(code)) {
    message =
      `The database stayed locked for more than busyTimeoutMs (${busyTimeoutMs} ms): ${detail}. Another connection holds a long ` +
      'write transaction; find it, or raise busyTimeoutMs. Nothing was charged; onBackendError applies.'
  } else if (messageOf(err).includes('connection is not open')) {
    message =
      'The better-sqlite3 Database passed to SQLiteBackend was closed by its owner: close the ' +
      'SQLiteBackend (and FastLimit) before closing the Database.'
  } else {
    message = `The database failed: ${detail}. Nothing was charged; onBackendError applies.`
  }
  return new FastlimitError('ERR_FASTLIMIT_BACKEND', `[fastlimit] [sqlite] ${message}`, { cause: err })
}
