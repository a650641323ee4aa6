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

/** Whether an error code means the lock could not be taken without waiting (longer). */
export function isBusy(code: string): boolean {
  return code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')
}

/**
 * Whether an error code means the file system has no room left. SQLite's unix VFS turns a write that
 * fails with ENOSPC into `SQLITE_FULL` (the -wal file or the database cannot grow; any other errno is
 * `SQLITE_IOERR_WRITE`), and reports `SQLITE_IOERR_SHMSIZE` when the -shm file cannot be created or grown,
 * as when a database is opened on a full disk (both seen on a full tmpfs).
 */
export function isFull(code: string): boolean {
  return code === 'SQLITE_FULL' || code === 'SQLITE_IOERR_SHMSIZE'
}

/** Why a file cannot be used: full disk first, then the usual suspects. */
function openDetail(err: unknown, where: string, busyTimeoutMs: number): string {
  const code = sqliteCode(err)
  const detail = detailOf(err, code)
  if (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT')) {
    return (
      `${where} is not a SQLite database or is corrupt: ${detail}. Rate-limit state is disposable: ` +
      'move the file (and its -wal and -shm files) aside, or pass another path, and a new database is created.'
    )
  }
  if (isFull(code)) {
    return (
      `${where} cannot be written: the file system holding it is full: ${detail}. Free some space there ` +
      '(or pass a path on a file system with room).'
    )
  }
  if (code.startsWith('SQLITE_READONLY')) {
    return (
      `${where} is read-only: ${detail}. SQLiteBackend writes on every decision: make the file and its ` +
      'directory writable by this process, or pass another path.'
    )
  }
  if (isBusy(code)) {
    return (
      `${where} stayed locked by another connection for more than busyTimeoutMs (${busyTimeoutMs} ms) ` +
      `while fastlimit prepared its table: ${detail}. Find the long transaction, or raise busyTimeoutMs.`
    )
  }
  if (code.startsWith('SQLITE_CANTOPEN'))
    return `${where} cannot be opened: ${detail}. Check the path and its permissions.`
  return `${where} could not be prepared for rate limiting: ${detail}.`
}

/**
 * An error while opening or preparing the database (at construction), as a ConfigError: the file is
 * corrupt, read-only, locked, on a full disk, or cannot be opened.
 */
export function openError(err: unknown, where: string, busyTimeoutMs: number): FastlimitError {
  if (err instanceof FastlimitError) return err
  return new ConfigError(`[fastlimit] [sqlite] ${openDetail(err, where, busyTimeoutMs)}`, { cause: err })
}

/** The message of a full disk during a call: what it means for limits, and what to do. */
function fullMessage(detail: string): string {
  return (
    `[fastlimit] [sqlite] The file system holding the database is full: ${detail}. No decision can be ` +
    'recorded until it has room: nothing was charged and onBackendError applies. Free space on that file ' +
    'system (the -wal file needs room to grow), or move the database to one with room.'
  )
}

/**
 * An error during a call: `ERR_FASTLIMIT_STORE_FULL` for a full disk, else `ERR_FASTLIMIT_BACKEND`
 * (FastLimit then applies its `onBackendError` policy). A FastlimitError passes through unchanged.
 */
export function backendError(err: unknown): FastlimitError {
  if (err instanceof FastlimitError) return err
  const code = sqliteCode(err)
  const detail = detailOf(err, code)
  if (isFull(code)) return new FastlimitError('ERR_FASTLIMIT_STORE_FULL', fullMessage(detail), { cause: err })
  let message: string
  if (isBusy(code)) {
    // Waits for the lock are retried by SQLiteBackend; a busy error here came from somewhere unexpected.
    message = `The database was locked: ${detail}. Nothing was charged; onBackendError applies.`
  } else if (messageOf(err).includes('connection is not open')) {
    message =
      'The better-sqlite3 Database passed to SQLiteBackend was closed by its owner: close the ' +
      'SQLiteBackend (and FastLimit) before closing the Database.'
  } else {
    message = `The database failed: ${detail}. Nothing was charged; onBackendError applies.`
  }
  return new FastlimitError('ERR_FASTLIMIT_BACKEND', `[fastlimit] [sqlite] ${message}`, { cause: err })
}

/**
 * A call that waited for another connection's write lock until it had to give up: nothing was charged.
 * @param waitedMs how long it waited
 * @param byDeadline whether the caller's deadline ended the wait (else busyTimeoutMs did)
 * @param busyTimeoutMs the backend's busyTimeoutMs, for the message
 * @param cause the last `SQLITE_BUSY` error, if any
 */
export function lockTimeout(
  waitedMs: number,
  byDeadline: boolean,
  busyTimeoutMs: number,
  cause: unknown,
): FastlimitError {
  const until = byDeadline
    ? "until the call's deadline (FastLimit's timeoutMs)"
    : `for busyTimeoutMs (${busyTimeoutMs} ms)`
  return new FastlimitError(
    'ERR_FASTLIMIT_TIMEOUT',
    `[fastlimit] [sqlite] Another connection held the database's write lock ${until}; waited ${Math.round(waitedMs)} ms ` +
      'without blocking the event loop. Nothing was charged; onBackendError applies. A long write transaction ' +
      'holds the lock (a backup tool, the sqlite3 shell, a migration, a stuck process): find it.',
    cause === undefined ? undefined : { cause },
  )
}

/** A call whose deadline had passed by the time it held the lock: refused, nothing charged. */
export function expired(): FastlimitError {
  return new FastlimitError(
    'ERR_FASTLIMIT_TIMEOUT',
    "[fastlimit] [sqlite] The call's deadline passed before it could be applied: nothing was charged; onBackendError applies.",
  )
}
