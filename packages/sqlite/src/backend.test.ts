// SQLiteBackend beyond the conformance suite: options, construction checks, a Database handed in, locks, close, sweep.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { type BucketConfig, FastLimit, type FastlimitError, isSyncBackend } from '@fastlimit/core'
import { fakeClock } from '@fastlimit/core/testing'
import Database from 'better-sqlite3'
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'
import { killWorkers, startWorker } from '../test/helpers'
import { SQLiteBackend, type SQLiteBackendOptions } from './index'

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-sqlite-unit-'))
let n = 0
/** A fresh directory for one test. */
function tempDir(): string {
  const dir = path.join(root, String(n++))
  fs.mkdirSync(dir)
  return dir
}

const opened: Array<{ close(): unknown }> = []
/** Tracks what a test opens so it is closed even when the test fails. */
function track<T extends { close(): unknown }>(x: T): T {
  opened.push(x)
  return x
}
afterEach(async () => {
  for (const x of opened.splice(0).reverse()) await x.close()
  killWorkers()
})
afterAll(() => {
  // Undo the read-only test's modes first, so that a non-root user can delete everything too.
  const writable = (dir: string): void => {
    fs.chmodSync(dir, 0o700)
    for (const entry of fs.readdirSync(dir, { withFileTypes: true }))
      if (entry.isDirectory()) writable(path.join(dir, entry.name))
  }
  writable(root)
  fs.rmSync(root, { recursive: true, force: true })
})

const gcra: BucketConfig = { algorithm: 'gcra', limit: 3, windowMs: 60_000 }

/** The error a call throws, or fails the test. */
function thrown(call: () => unknown): FastlimitError {
  try {
    call()
  } catch (err) {
    return err as FastlimitError
  }
  throw new Error('expected the call to throw')
}

function count(db: Database.Database, table = 'fastlimit'): number {
  return db.prepare(`SELECT count(*) FROM "${table}"`).pluck().get() as number
}

describe('SQLiteBackend options', () => {
  const bad: Array<[string, unknown, RegExp]> = [
    ['an unknown option', { tableNme: 'x' }, /Unknown option "tableNme".*tableName, busyTimeoutMs/],
    ['a tableName with a dash', { tableName: 'rate-limits' }, /tableName must be .*"rate-limits"/],
    ['a tableName starting with a digit', { tableName: '1x' }, /tableName/],
    ['a tableName in the sqlite_ namespace', { tableName: 'sqlite_state' }, /tableName/],
    ['an empty tableName', { tableName: '' }, /tableName/],
    ['a tableName too long', { tableName: 'x'.repeat(61) }, /tableName/],
    ['a tableName that is not a string', { tableName: 5 }, /tableName/],
    ['an injection in tableName', { tableName: 'x"; DROP TABLE y; --' }, /tableName/],
    ['a negative busyTimeoutMs', { busyTimeoutMs: -1 }, /busyTimeoutMs must be .* got -1/],
    ['a fractional busyTimeoutMs', { busyTimeoutMs: 1.5 }, /busyTimeoutMs/],
    ['a string busyTimeoutMs', { busyTimeoutMs: '1000' }, /busyTimeoutMs .* got "1000"/],
    ['a cleanupIntervalMs above a timer', { cleanupIntervalMs: 2 ** 31 }, /cleanupIntervalMs/],
    ['a negative cleanupIntervalMs', { cleanupIntervalMs: -5 }, /cleanupIntervalMs/],
    ['a fileCheckIntervalMs that is not a number', { fileCheckIntervalMs: '1s' }, /fileCheckIntervalMs/],
    ['a clock that is not a function', { clock: 1_700_000_000_000 }, /clock must be a function/],
  ]
  for (const [what, options, message] of bad) {
    it(`rejects ${what} with a ConfigError at construction`, () => {
      const err = thrown(() => new SQLiteBackend(':memory:', options as SQLiteBackendOptions))
      expect(err.code).toBe('ERR_FASTLIMIT_CONFIG')
      expect(err.name).toBe('ConfigError')
      expect(err.message).toMatch(/^\[fastlimit\] \[sqlite\] /)
      expect(err.message).toMatch(message)
    })
  }

  it('rejects options that are not an object, and a database that is neither a path nor a Database', () => {
    expect(thrown(() => new SQLiteBackend(':memory:', null as never)).message).toMatch(/must be an object/)
    for (const database of [123, {}, null, undefined]) {
      const err = thrown(() => new SQLiteBackend(database as never))
      expect(err.code).toBe('ERR_FASTLIMIT_CONFIG')
      expect(err.message).toMatch(/takes a file path, ':memory:' or a better-sqlite3 Database/)
    }
    expect(thrown(() => new SQLiteBackend('')).message).toMatch(/path is empty/)
  })

  it('accepts every option, and uses tableName for its tables', () => {
    const clock = fakeClock()
    const backend = track(
      new SQLiteBackend(':memory:', {
        tableName: 'Rate_Limits_2',
        busyTimeoutMs: 250,
        cleanupIntervalMs: 0,
        fileCheckIntervalMs: 0,
        clock: clock.now,
      }),
    )
    expect(backend.tableName).toBe('Rate_Limits_2')
    expect(backend.kind).toBe('sqlite')
    // A statement waits at most 2 ms for the lock; busyTimeoutMs bounds the wait off the event loop.
    expect(backend.database.pragma('busy_timeout', { simple: true })).toBe(2)
    backend.checkAndIncrementSync('k', gcra, 1)
    expect(count(backend.database, 'Rate_Limits_2')).toBe(1)
    const version = backend.database.prepare(
      `SELECT value FROM "Rate_Limits_2_meta" WHERE name = 'schema_version'`,
    )
    expect(version.pluck().get()).toBe(1)
  })
})

describe('SQLiteBackend construction checks', () => {
  it('names a missing directory', () => {
    const missing = path.join(tempDir(), 'no', 'such')
    const err = thrown(() => new SQLiteBackend(path.join(missing, 'limits.db')))
    expect(err.code).toBe('ERR_FASTLIMIT_CONFIG')
    expect(err.message).toContain(`The directory "${missing}"`)
    expect(err.message).toMatch(/does not exist: create it first \(mkdir -p/)
    expect(fs.existsSync(missing)).toBe(false)
  })

  it('refuses a path that is a directory', () => {
    const dir = tempDir()
    expect(thrown(() => new SQLiteBackend(dir)).message).toMatch(/is a directory: pass a file path inside it/)
  })

  it('says a corrupt file is corrupt, and leaves it as it was', () => {
    const file = path.join(tempDir(), 'garbage.db')
    const garbage = 'this is not a database, just text. '.repeat(200)
    fs.writeFileSync(file, garbage)
    const err = thrown(() => new SQLiteBackend(file))
    expect(err.code).toBe('ERR_FASTLIMIT_CONFIG')
    expect(err.message).toContain(file)
    expect(err.message).toMatch(/is not a SQLite database or is corrupt: .*SQLITE_NOTADB.*move the file/)
    expect((err.cause as { code?: string }).code).toBe('SQLITE_NOTADB')
    expect(fs.readFileSync(file, 'utf8')).toBe(garbage)
  })

  it('says a file or directory it cannot write is read-only', async () => {
    const base = tempDir()
    fs.chmodSync(root, 0o755)
    fs.chmodSync(base, 0o755)
    const writableDir = path.join(base, 'w')
    const readOnlyDir = path.join(base, 'r')
    fs.mkdirSync(writableDir, { mode: 0o777 })
    fs.chmodSync(writableDir, 0o777)
    fs.mkdirSync(readOnlyDir)
    const readOnlyFile = path.join(writableDir, 'ro.db')
    const fileInReadOnlyDir = path.join(readOnlyDir, 'rw.db')
    for (const file of [readOnlyFile, fileInReadOnlyDir]) await new SQLiteBackend(file).close()
    fs.chmodSync(readOnlyFile, 0o444)
    fs.chmodSync(fileInReadOnlyDir, 0o666)
    fs.rmSync(`${fileInReadOnlyDir}-wal`, { force: true })
    fs.rmSync(`${fileInReadOnlyDir}-shm`, { force: true })
    fs.chmodSync(readOnlyDir, 0o555)
    const paths = [readOnlyFile, fileInReadOnlyDir, path.join(readOnlyDir, 'new.db')]

    let results: Array<{ file: string; code: string; message: string }>
    if (process.getuid?.() === 0) {
      // Root writes anything: ask an unprivileged user, as a real deployment would run.
      const worker = startWorker('open', paths, { uid: 65534, gid: 65534 })
      results = (await worker.next<{ results: typeof results }>('opened')).results
      expect((await worker.exited).code).toBe(0)
    } else {
      results = paths.map((file) => {
        const err = thrown(() => new SQLiteBackend(file, { cleanupIntervalMs: 0 }))
        return { file, code: err.code, message: err.message }
      })
    }
    expect(results.map((r) => r.code)).toEqual(paths.map(() => 'ERR_FASTLIMIT_CONFIG'))
    expect(results[0]?.message).toContain(`The database file "${readOnlyFile}" is read-only for this process`)
    expect(results[1]?.message).toContain(`The directory "${readOnlyDir}" is read-only for this process`)
    expect(results[2]?.message).toContain(`The directory "${readOnlyDir}" is read-only for this process`)
    expect(fs.existsSync(path.join(readOnlyDir, 'new.db'))).toBe(false)
  }, 60_000)

  it('refuses a Database opened read-only, or closed', () => {
    const file = path.join(tempDir(), 'ro.db')
    new Database(file).close()
    const ro = track(new Database(file, { readonly: true }))
    expect(thrown(() => new SQLiteBackend(ro)).message).toMatch(/was opened read-only: SQLiteBackend writes/)
    const closed = new Database(':memory:')
    closed.close()
    expect(thrown(() => new SQLiteBackend(closed)).message).toMatch(/is closed: pass an open Database/)
  })

  it('refuses a table of the same name that fastlimit did not create, and leaves it alone', () => {
    const db = track(new Database(':memory:'))
    db.exec(
      'CREATE TABLE fastlimit (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO fastlimit (name) VALUES (1)',
    )
    const err = thrown(() => new SQLiteBackend(db))
    expect(err.code).toBe('ERR_FASTLIMIT_CONFIG')
    expect(err.message).toMatch(
      /already has a table "fastlimit" with columns \(id, name\) that fastlimit did not/,
    )
    expect(count(db)).toBe(1)
    expect(db.prepare(`SELECT count(*) FROM sqlite_master WHERE name LIKE 'fastlimit_%'`).pluck().get()).toBe(
      0,
    )
  })

  it('refuses a table written by a newer release, and changes nothing', async () => {
    const file = path.join(tempDir(), 'newer.db')
    await new SQLiteBackend(file, { cleanupIntervalMs: 0 }).close()
    const other = track(new Database(file))
    other.exec(`UPDATE fastlimit_meta SET value = 2 WHERE name = 'schema_version'`)
    const err = thrown(() => new SQLiteBackend(file, { cleanupIntervalMs: 0 }))
    expect(err.code).toBe('ERR_FASTLIMIT_CONFIG')
    expect(err.message).toMatch(
      /schema version 2, written by a newer @fastlimit\/sqlite; this release knows version 1/,
    )
    expect(other.prepare(`SELECT value FROM fastlimit_meta`).pluck().get()).toBe(2)
    other.exec(`UPDATE fastlimit_meta SET value = 'two'`)
    expect(thrown(() => new SQLiteBackend(file, { cleanupIntervalMs: 0 })).message).toMatch(
      /fastlimit_meta" in .* holds an unreadable schema_version "two"/,
    )
  })

  it('creates the schema once and reopens it with its state, in WAL mode, without touching user_version', async () => {
    const file = path.join(tempDir(), 'reopen.db')
    const clock = fakeClock()
    const first = new SQLiteBackend(file, { clock: clock.now, cleanupIntervalMs: 0 })
    expect(first.database.pragma('journal_mode', { simple: true })).toBe('wal')
    expect(first.database.pragma('synchronous', { simple: true })).toBe(1) // NORMAL
    first.database.pragma('user_version = 7')
    first.checkAndIncrementSync('k', gcra, 2)
    await first.close()
    const second = track(new SQLiteBackend(file, { clock: clock.now, cleanupIntervalMs: 0 }))
    expect(second.peekSync('k', gcra)?.remaining).toBe(1)
    expect(second.database.pragma('user_version', { simple: true })).toBe(7)
  })

  it('says a database locked past busyTimeoutMs during construction is locked', () => {
    const file = path.join(tempDir(), 'locked.db')
    const holder = track(new Database(file))
    holder.exec('BEGIN IMMEDIATE; CREATE TABLE mine (x)')
    const err = thrown(() => new SQLiteBackend(file, { busyTimeoutMs: 10, cleanupIntervalMs: 0 }))
    expect(err.code).toBe('ERR_FASTLIMIT_CONFIG')
    expect(err.message).toMatch(/stayed locked by another connection for more than busyTimeoutMs \(10 ms\)/)
    holder.exec('COMMIT')
  })
})

describe('SQLiteBackend with a Database you pass in', () => {
  it('never closes it, switches it to WAL, and sets its busy timeout to 2 ms', async () => {
    const file = path.join(tempDir(), 'mine.db')
    const db = track(new Database(file, { timeout: 1234 }))
    db.pragma('synchronous = FULL')
    const backend = new SQLiteBackend(db, { cleanupIntervalMs: 0 })
    expect(backend.database).toBe(db)
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal')
    expect(db.pragma('busy_timeout', { simple: true })).toBe(2)
    expect(db.pragma('synchronous', { simple: true })).toBe(2) // FULL, as its owner set it
    expect(db.pragma('user_version', { simple: true })).toBe(0)
    expect((await backend.checkAndIncrement('k', gcra, 1)).remaining).toBe(2)
    await backend.close()
    await backend.close()
    expect(db.open).toBe(true)
    expect(count(db)).toBe(1)
  })

  it('works on a Database that returns integers as BigInt, and still refuses a newer schema there', async () => {
    const db = track(new Database(':memory:'))
    db.defaultSafeIntegers(true)
    const clock = fakeClock()
    const backend = track(new SQLiteBackend(db, { clock: clock.now, cleanupIntervalMs: 0 }))
    const minute: BucketConfig = { algorithm: 'sliding-log', limit: 3, windowMs: 60_000 }
    expect(backend.checkAndIncrementSync('k', minute, 2)?.remaining).toBe(1)
    clock.advance(1)
    expect(backend.checkAndIncrementSync('k', minute, 1)?.remaining).toBe(0)
    expect(backend.checkAndIncrementSync('k', minute, 1)?.allowed).toBe(false)
    db.exec(`UPDATE fastlimit_meta SET value = 9`)
    expect(thrown(() => new SQLiteBackend(db)).message).toMatch(/schema version 9/)
  })

  it('clear empties only its own table; another tableName in the same file is independent', async () => {
    const db = track(new Database(path.join(tempDir(), 'shared.db')))
    db.exec("CREATE TABLE users (name TEXT); INSERT INTO users VALUES ('ada')")
    const a = track(new SQLiteBackend(db, { cleanupIntervalMs: 0 }))
    const b = track(new SQLiteBackend(db, { tableName: 'other_app', cleanupIntervalMs: 0 }))
    await a.checkAndIncrement('same-key', gcra, 3)
    expect((await b.peek('same-key', gcra)).remaining).toBe(3)
    await b.checkAndIncrement('same-key', gcra, 1)
    await a.clear()
    expect((await a.peek('same-key', gcra)).remaining).toBe(3)
    expect((await b.peek('same-key', gcra)).remaining).toBe(2)
    expect(count(db, 'users')).toBe(1)
  })

  it('a call waiting for the lock when its owner closes the Database fails with ERR_FASTLIMIT_BACKEND, no crash', async () => {
    const file = path.join(tempDir(), 'owner-closes.db')
    const db = new Database(file)
    const backend = track(new SQLiteBackend(db, { cleanupIntervalMs: 0 }))
    const other = track(new Database(file))
    other.exec('BEGIN IMMEDIATE')
    const waiting = backend.checkAndIncrement('k', gcra, 1, { deadline: Date.now() + 10_000 })
    db.close()
    await expect(waiting).rejects.toMatchObject({
      code: 'ERR_FASTLIMIT_BACKEND',
      message: expect.stringMatching(/was closed by its owner/),
    })
    other.exec('ROLLBACK')
  })

  it('reports its owner closing it first as a backend error, not a crash', async () => {
    const db = new Database(':memory:')
    const backend = track(new SQLiteBackend(db, { cleanupIntervalMs: 0 }))
    db.close()
    await expect(backend.checkAndIncrement('k', gcra, 1)).rejects.toMatchObject({
      code: 'ERR_FASTLIMIT_BACKEND',
      message: expect.stringMatching(/was closed by its owner: close the SQLiteBackend .* before closing/),
    })
  })
})

/** Counts turns of the event loop until stopped: a loop blocked by a lock wait does not turn. */
function loopTurns(): { stop(): number } {
  let turns = 0
  let running = true
  const turn = () => {
    turns++
    if (running) setImmediate(turn)
  }
  setImmediate(turn)
  return {
    stop: () => {
      running = false
      return turns
    },
  }
}

/** The error a promise rejects with, or fails the test. */
async function rejection(promise: Promise<unknown>): Promise<FastlimitError> {
  return promise.then(
    () => {
      throw new Error('expected the promise to reject')
    },
    (err: FastlimitError) => err,
  )
}

describe('SQLiteBackend when another connection holds the write lock', () => {
  it('the synchronous path answers undefined without waiting, charges nothing, and still reads', () => {
    const file = path.join(tempDir(), 'busy.db')
    const backend = track(new SQLiteBackend(file, { busyTimeoutMs: 1000, cleanupIntervalMs: 0 }))
    backend.checkAndIncrementSync('k', gcra, 1)
    const other = track(new Database(file))
    other.exec('BEGIN IMMEDIATE')
    const started = performance.now()
    expect(backend.checkAndIncrementSync('k', gcra, 1)).toBeUndefined()
    expect(backend.checkAndIncrementAllSync('k', [gcra, { ...gcra, limit: 9 }], 1)).toBeUndefined()
    expect(backend.checkAndIncrementAllSync('k', [gcra], 1)).toBeUndefined()
    // Three calls, each waiting at most 2 ms (busyTimeoutMs is 1000: it used to block that long each).
    expect(performance.now() - started).toBeLessThan(500)
    // WAL: readers never wait for the writer.
    expect(backend.peekSync('k', gcra)?.remaining).toBe(2)
    other.exec('COMMIT')
    expect(backend.checkAndIncrementSync('k', gcra, 1)?.remaining).toBe(1)
  })

  it('an asynchronous call waits off the event loop, in turn, and is applied once the lock is free', async () => {
    const file = path.join(tempDir(), 'wait.db')
    const backend = track(new SQLiteBackend(file, { busyTimeoutMs: 1000, cleanupIntervalMs: 0 }))
    const other = track(new Database(file))
    other.exec('BEGIN IMMEDIATE')
    const turns = loopTurns()
    const order: string[] = []
    const deadline = Date.now() + 10_000
    const first = backend.checkAndIncrement('k', gcra, 2, { deadline }).then((r) => {
      order.push('first')
      return r
    })
    const second = backend
      .checkAndIncrementAll('k', [gcra, { ...gcra, limit: 9 }], 1, { deadline })
      .then((r) => {
        order.push('second')
        return r
      })
    // While calls wait, the synchronous path waits its turn too.
    expect(backend.checkAndIncrementSync('j', gcra, 1)).toBeUndefined()
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(order).toEqual([])
    other.exec('COMMIT')
    expect((await first).remaining).toBe(1)
    expect((await second).map((r) => r.remaining)).toEqual([0, 8])
    expect(order).toEqual(['first', 'second'])
    // The loop kept turning while they waited (it did not turn at all during a blocking wait).
    expect(turns.stop()).toBeGreaterThan(10)
    expect(backend.checkAndIncrementSync('j', gcra, 1)?.remaining).toBe(2)
  })

  it('a call still waiting at its deadline fails with ERR_FASTLIMIT_TIMEOUT, and is never applied afterwards', async () => {
    const file = path.join(tempDir(), 'deadline.db')
    const backend = track(new SQLiteBackend(file, { busyTimeoutMs: 5000, cleanupIntervalMs: 0 }))
    const other = track(new Database(file))
    other.exec('BEGIN IMMEDIATE')
    const started = performance.now()
    const err = await rejection(backend.checkAndIncrement('k', gcra, 1, { deadline: Date.now() + 50 }))
    const waited = performance.now() - started
    expect(err.code).toBe('ERR_FASTLIMIT_TIMEOUT')
    expect(err.message).toMatch(
      /^\[fastlimit\] \[sqlite\] Another connection held the database's write lock until the call's deadline/,
    )
    expect(err.message).toMatch(/Nothing was charged; onBackendError applies/)
    expect(String((err.cause as { code?: string }).code)).toMatch(/^SQLITE_BUSY/)
    expect(waited).toBeGreaterThanOrEqual(45)
    expect(waited).toBeLessThan(2000)
    other.exec('COMMIT')
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(backend.peekSync('k', gcra)?.remaining).toBe(3)
    // A deadline already past is refused even with the lock free.
    const late = await rejection(backend.checkAndIncrement('k', gcra, 1, { deadline: Date.now() - 1 }))
    expect(late.code).toBe('ERR_FASTLIMIT_TIMEOUT')
    expect(late.message).toMatch(/deadline passed before it could be applied: nothing was charged/)
    expect(await rejection(backend.reset('k', { deadline: Date.now() - 1 }))).toMatchObject({
      code: 'ERR_FASTLIMIT_TIMEOUT',
    })
    expect(backend.peekSync('k', gcra)?.remaining).toBe(3)
  })

  it('without a deadline, every waiting call gives up after busyTimeoutMs with ERR_FASTLIMIT_TIMEOUT', async () => {
    const file = path.join(tempDir(), 'busy-timeout.db')
    const backend = track(new SQLiteBackend(file, { busyTimeoutMs: 30, cleanupIntervalMs: 0 }))
    await backend.checkAndIncrement('k', gcra, 1)
    const other = track(new Database(file))
    other.exec('BEGIN IMMEDIATE')
    for (const call of [
      () => backend.checkAndIncrement('k', gcra, 1),
      () => backend.checkAndIncrementAll('k', [gcra, { ...gcra, limit: 9 }], 1),
      () => backend.reset('k'),
      () => backend.clear(),
      () => backend.sweep(),
      // A later deadline than busyTimeoutMs: busyTimeoutMs still bounds the wait.
      () => backend.checkAndIncrement('k', gcra, 1, { deadline: Date.now() + 60_000 }),
    ]) {
      const err = await rejection(call())
      expect(err.code).toBe('ERR_FASTLIMIT_TIMEOUT')
      expect(err.message).toMatch(/write lock for busyTimeoutMs \(30 ms\); waited \d+ ms without blocking/)
      expect(String((err.cause as { code?: string }).code)).toMatch(/^SQLITE_BUSY/)
    }
    expect((await backend.peek('k', gcra)).remaining).toBe(2)
    other.exec('COMMIT')
    expect((await backend.checkAndIncrement('k', gcra, 1)).remaining).toBe(1)
  })

  it('busyTimeoutMs 0: a call tries the lock once and never waits for it', async () => {
    const file = path.join(tempDir(), 'no-wait.db')
    const backend = track(new SQLiteBackend(file, { busyTimeoutMs: 0, cleanupIntervalMs: 0 }))
    expect((await backend.checkAndIncrement('k', gcra, 1)).remaining).toBe(2)
    expect((await backend.checkAndIncrement('k', gcra, 1, { deadline: Date.now() + 1000 })).remaining).toBe(1)
    const other = track(new Database(file))
    other.exec('BEGIN IMMEDIATE')
    const err = await rejection(backend.checkAndIncrement('k', gcra, 1, { deadline: Date.now() + 1000 }))
    expect(err.message).toMatch(/write lock for busyTimeoutMs \(0 ms\)/)
    other.exec('COMMIT')
    expect((await backend.checkAndIncrement('k', gcra, 1)).remaining).toBe(0)
  })

  it('close rejects the calls still waiting with ERR_FASTLIMIT_CLOSED; reconnect drops them, uncharged', async () => {
    const file = path.join(tempDir(), 'drop.db')
    const backend = new SQLiteBackend(file, { cleanupIntervalMs: 0 })
    const other = track(new Database(file))
    other.exec('BEGIN IMMEDIATE')
    const dropped = backend.checkAndIncrement('k', gcra, 1, { deadline: Date.now() + 10_000 })
    const cause = new Error('breaker open')
    backend.reconnect(cause)
    const err = await rejection(dropped)
    expect(err).toMatchObject({ code: 'ERR_FASTLIMIT_TIMEOUT', cause })
    expect(err.message).toMatch(/the limiter gave up on the store. Nothing was charged/)
    const waiting = backend.checkAndIncrement('k', gcra, 1, { deadline: Date.now() + 10_000 })
    await backend.close()
    expect((await rejection(waiting)).code).toBe('ERR_FASTLIMIT_CLOSED')
    other.exec('COMMIT')
    expect(other.prepare('SELECT count(*) FROM fastlimit').pluck().get()).toBe(0)
  })

  it('through FastLimit: the policy within timeoutMs, nothing charged, and the fast path again once free', async () => {
    const file = path.join(tempDir(), 'policy.db')
    const backend = track(new SQLiteBackend(file, { busyTimeoutMs: 5000, cleanupIntervalMs: 0 }))
    expect(isSyncBackend(backend)).toBe(true)
    const asyncCheck = vi.spyOn(backend, 'checkAndIncrement')
    const asyncAll = vi.spyOn(backend, 'checkAndIncrementAll')
    const errors: FastlimitError[] = []
    const closed = new FastLimit({
      backend,
      timeoutMs: 50,
      onBackendError: 'fail-closed',
      onError: (e) => errors.push(e),
    })
    const open = new FastLimit({ backend, timeoutMs: 50, onError: () => undefined })
    expect((await closed.check('ada', '2/min')).allowed).toBe(true)
    expect((await closed.check('ada', ['2/min', '10/h'])).allowed).toBe(true)
    expect(await closed.check('ada', '2/min')).toMatchObject({ allowed: false, reason: 'rate-limited' })
    expect(asyncCheck).not.toHaveBeenCalled()
    expect(asyncAll).not.toHaveBeenCalled()
    const other = track(new Database(file))
    other.exec('BEGIN IMMEDIATE')
    const started = performance.now()
    expect(await closed.check('grace', '2/min')).toMatchObject({
      allowed: false,
      reason: 'fail-closed',
      source: 'policy',
    })
    expect(await closed.check('grace', ['2/min', '10/h'])).toMatchObject({
      allowed: false,
      reason: 'fail-closed',
    })
    expect(await open.check('grace', '2/min')).toMatchObject({ allowed: true, reason: 'fail-open' })
    // Three calls of timeoutMs 50 each, where each used to block for busyTimeoutMs (5000 ms).
    expect(performance.now() - started).toBeLessThan(2500)
    expect(errors.map((e) => e.code)).toEqual(['ERR_FASTLIMIT_TIMEOUT', 'ERR_FASTLIMIT_TIMEOUT'])
    expect(asyncCheck).toHaveBeenCalledTimes(2)
    expect(asyncAll).toHaveBeenCalledTimes(1)
    other.exec('ROLLBACK')
    // Nothing the limiter gave up on was charged, even once the lock was free.
    await new Promise((resolve) => setTimeout(resolve, 30))
    expect(await closed.check('grace', '2/min')).toMatchObject({
      allowed: true,
      remaining: 1,
      source: 'backend',
    })
    expect(await closed.check('grace', '10/h')).toMatchObject({ allowed: true, remaining: 9 })
    expect(asyncCheck).toHaveBeenCalledTimes(2)
  })
})

describe('SQLiteBackend behind a Proxy or a wrapper', () => {
  it('works through new Proxy(backend, {}), fast path included', async () => {
    const backend = track(new SQLiteBackend(':memory:', { cleanupIntervalMs: 0 }))
    const proxy = new Proxy(backend, {})
    expect(isSyncBackend(proxy)).toBe(true)
    expect(proxy.kind).toBe('sqlite')
    expect(proxy.database).toBe(backend.database)
    const errors: FastlimitError[] = []
    const limiter = new FastLimit({ backend: proxy, onError: (e) => errors.push(e) })
    const ds = await Promise.all(Array.from({ length: 5 }, () => limiter.check('ada', '3/min')))
    expect(ds.map((d) => [d.allowed, d.source])).toEqual([
      [true, 'backend'],
      [true, 'backend'],
      [true, 'backend'],
      [false, 'backend'],
      [false, 'backend'],
    ])
    expect((await limiter.check('ada', ['3/min', '9/h'])).allowed).toBe(false)
    expect((await limiter.peek('ada', '3/min')).remaining).toBe(0)
    await limiter.reset('ada')
    expect((await limiter.peek('ada', '3/min')).remaining).toBe(3)
    expect(await proxy.checkAndIncrement('k', gcra, 1, { deadline: Date.now() + 1000 })).toMatchObject({
      remaining: 2,
    })
    expect(await proxy.sweep()).toBe(0)
    await proxy.clear()
    expect(errors).toEqual([])
    await proxy.close()
    expect(backend.database.open).toBe(false)
  })
})

describe('SQLiteBackend close', () => {
  it('is idempotent, closes the database it opened, and every call after it fails with ERR_FASTLIMIT_CLOSED', async () => {
    const backend = new SQLiteBackend(path.join(tempDir(), 'close.db'))
    await backend.close()
    await backend.close()
    expect(backend.database.open).toBe(false)
    const closed = { code: 'ERR_FASTLIMIT_CLOSED', message: expect.stringMatching(/\[sqlite\] .*was closed/) }
    await expect(backend.checkAndIncrement('k', gcra, 1)).rejects.toMatchObject(closed)
    await expect(backend.checkAndIncrementAll('k', [gcra, { ...gcra, limit: 5 }], 1)).rejects.toMatchObject(
      closed,
    )
    await expect(backend.peek('k', gcra)).rejects.toMatchObject(closed)
    await expect(backend.reset('k')).rejects.toMatchObject(closed)
    await expect(backend.clear()).rejects.toMatchObject(closed)
    await expect(backend.sweep()).rejects.toMatchObject(closed)
    expect(() => backend.checkAndIncrementSync('k', gcra, 1)).toThrow(expect.objectContaining(closed))
    expect(() => backend.peekSync('k', gcra)).toThrow(expect.objectContaining(closed))
  })
})

describe('SQLiteBackend sweep', () => {
  it('removes expired rows in bounded batches, yielding between them, and keeps live ones', async () => {
    const clock = fakeClock()
    const backend = track(
      new SQLiteBackend(path.join(tempDir(), 'sweep.db'), { clock: clock.now, cleanupIntervalMs: 0 }),
    )
    const short: BucketConfig = { algorithm: 'fixed-window', limit: 5, windowMs: 1000 }
    const long: BucketConfig = { algorithm: 'sliding-log', limit: 5, windowMs: 3_600_000 }
    const insert = backend.database.transaction(() => {
      for (let i = 0; i < 1234; i++) backend.checkAndIncrementSync(`short:${i}`, short, 1)
      for (let i = 0; i < 300; i++) backend.checkAndIncrementAllSync(`both:${i}`, [short, long], 2)
    })
    insert()
    expect(count(backend.database)).toBe(1234 + 600)
    expect(await backend.sweep()).toBe(0)
    clock.advance(5_000)
    // Expired rows are no state at all, swept or not.
    expect(backend.peekSync('short:1', short)?.remaining).toBe(5)
    let yielded = false
    const sweeping = backend.sweep()
    expect(backend.sweep()).toBe(sweeping)
    setImmediate(() => {
      yielded = true
    })
    expect(await sweeping).toBe(1234 + 300)
    expect(yielded).toBe(true)
    expect(count(backend.database)).toBe(300)
    expect(backend.peekSync('both:7', long)?.remaining).toBe(3)
    expect(await backend.sweep()).toBe(0)
  })

  it('runs on its own every cleanupIntervalMs', async () => {
    const clock = fakeClock()
    const backend = track(new SQLiteBackend(':memory:', { clock: clock.now, cleanupIntervalMs: 5 }))
    for (let i = 0; i < 20; i++) backend.checkAndIncrementSync(`k${i}`, gcra, 1)
    expect(count(backend.database)).toBe(20)
    clock.advance(120_000)
    await vi.waitFor(() => expect(count(backend.database)).toBe(0), { timeout: 20_000, interval: 5 })
  })
})

describe('SQLiteBackend rows', () => {
  it('ignores a row whose expires_at has passed, swept or not', () => {
    const clock = fakeClock()
    const backend = track(new SQLiteBackend(':memory:', { clock: clock.now, cleanupIntervalMs: 0 }))
    const day: BucketConfig = { algorithm: 'fixed-window', limit: 2, windowMs: 86_400_000 }
    backend.checkAndIncrementSync('k', day, 2)
    expect(backend.checkAndIncrementSync('k', day, 1)?.allowed).toBe(false)
    backend.database.prepare('UPDATE fastlimit SET expires_at = ?').run(clock.now())
    expect(backend.peekSync('k', day)?.remaining).toBe(2)
    expect(backend.checkAndIncrementSync('k', day, 1)).toMatchObject({ allowed: true, remaining: 1 })
    expect(count(backend.database)).toBe(1)
  })

  it('keeps a row up to one window (at most a minute) past its state, so a busy key rewrites only its state', () => {
    const clock = fakeClock()
    const backend = track(new SQLiteBackend(':memory:', { clock: clock.now, cleanupIntervalMs: 0 }))
    const row = backend.database.prepare('SELECT state, expires_at FROM fastlimit WHERE key = ?')
    const read = (key: string) => row.get(key) as { state: string; expires_at: number }
    const fast: BucketConfig = { algorithm: 'gcra', limit: 1000, windowMs: 1000 }
    const first = backend.checkAndIncrementSync('fast', fast, 1)
    // The state alone expires when the bucket is full again (resetMs); the row a window later.
    expect(read('fast').expires_at).toBe(first!.resetMs + 1000)
    const expiresAt = read('fast').expires_at
    for (let i = 0; i < 20; i++) {
      clock.advance(1)
      backend.checkAndIncrementSync('fast', fast, 5)
    }
    expect(read('fast').expires_at).toBe(expiresAt)
    expect(read('fast').state).not.toBe('')
    // Once the state outgrows the row, the row moves: never shorter than the state.
    clock.advance(500)
    const late = backend.checkAndIncrementSync('fast', fast, 1000)
    expect(late!.resetMs).toBeGreaterThan(expiresAt)
    expect(read('fast').expires_at).toBe(late!.resetMs + 1000)
    const day: BucketConfig = { algorithm: 'sliding-window', limit: 5, windowMs: 86_400_000 }
    backend.checkAndIncrementSync('day', day, 1)
    const ttl = read('day').expires_at - clock.now()
    expect(ttl).toBeGreaterThan(86_400_000)
    expect(ttl).toBeLessThanOrEqual(2 * 86_400_000 + 60_000)
  })
})
