// The database file deleted or replaced under running processes: noticed, reopened, and one limit again.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { BucketConfig, FastlimitError } from '@fastlimit/core'
import Database from 'better-sqlite3'
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'
import { SQLiteBackend } from '../src/index'
import { killWorkers, startWorker, type Worker } from './helpers'

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-sqlite-file-'))
let n = 0
/** A fresh directory for one test. */
function tempDir(): string {
  const dir = path.join(root, String(n++))
  fs.mkdirSync(dir)
  return dir
}
const opened: Array<{ close(): unknown }> = []
function track<T extends { close(): unknown }>(x: T): T {
  opened.push(x)
  return x
}
afterEach(async () => {
  for (const x of opened.splice(0).reverse()) await x.close()
  killWorkers()
})
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))

const LIMIT = 5
const hourly: BucketConfig = { algorithm: 'fixed-window', limit: LIMIT, windowMs: 3_600_000 }
/** How often the running process checks its file in these tests. */
const CHECK_MS = 100

/** A process deciding on `file`, once it has opened it. */
async function decider(file: string): Promise<Worker> {
  const w = startWorker('decide', { file, fileCheckIntervalMs: CHECK_MS })
  await w.next('ready')
  return w
}

/** Makes `n` checks of `key` in the process; how many it admitted. */
async function check(w: Worker, key: string, n: number): Promise<number> {
  w.child.send({ type: 'check', key, n, bucket: hourly })
  const r = await w.next<{ admitted: number; errors: string[] }>('checked')
  expect(r.errors).toEqual([])
  return r.admitted
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('SQLiteBackend when its file is deleted or replaced', () => {
  for (const [what, remove] of [
    ['the file, its -wal and its -shm', (f: string) => [f, `${f}-wal`, `${f}-shm`]],
    ['the file alone', (f: string) => [f]],
  ] as const) {
    it(`deleted (${what}) under a running process: it reopens the path, and two processes admit the limit once`, async () => {
      const file = path.join(tempDir(), 'limits.db')
      const a = await decider(file)
      expect(await check(a, 'warm', 3)).toBe(3)
      for (const f of remove(file)) fs.rmSync(f)
      // A process started after the deletion creates a new file at the path.
      const b = await decider(file)
      await sleep(5 * CHECK_MS)
      const admitted = [await check(a, 'k', 4), await check(b, 'k', 4), await check(a, 'k', 2)]
      expect(
        admitted.reduce((x, y) => x + y, 0),
        `admitted ${admitted.join(' + ')}`,
      ).toBe(LIMIT)
      // Both are on the file at the path, which a third opener sees too.
      const c = track(new SQLiteBackend(file, { cleanupIntervalMs: 0 }))
      expect(c.peekSync('k', hourly)?.remaining).toBe(0)
      expect(c.peekSync('warm', hourly)?.remaining).toBe(LIMIT)
      expect(c.database.pragma('integrity_check', { simple: true })).toBe('ok')
    })
  }

  it('replaced by another file renamed over it: both processes decide on the new file, with its state', async () => {
    const dir = tempDir()
    const file = path.join(dir, 'limits.db')
    const a = await decider(file)
    expect(await check(a, 'k', 1)).toBe(1)
    expect(await check(a, 'old-only', 1)).toBe(1)
    // The replacement: a database where k has used 2 of its 5.
    const replacement = path.join(dir, 'replacement.db')
    const r = new SQLiteBackend(replacement, { cleanupIntervalMs: 0 })
    r.checkAndIncrementSync('k', hourly, 2)
    await r.close()
    fs.renameSync(replacement, file)
    await sleep(5 * CHECK_MS)
    const b = await decider(file)
    const admitted = [await check(a, 'k', 3), await check(b, 'k', 3)]
    expect(
      admitted.reduce((x, y) => x + y, 0),
      `admitted ${admitted.join(' + ')}`,
    ).toBe(LIMIT - 2)
    const c = track(new SQLiteBackend(file, { cleanupIntervalMs: 0 }))
    // The old file's state did not leak into the new one.
    expect(c.peekSync('old-only', hourly)?.remaining).toBe(LIMIT)
    expect(c.database.pragma('integrity_check', { simple: true })).toBe('ok')
  })

  it('a directory gone: every call fails with ERR_FASTLIMIT_BACKEND until the path can be opened again', async () => {
    const dir = tempDir()
    const file = path.join(dir, 'limits.db')
    const backend = track(new SQLiteBackend(file, { cleanupIntervalMs: 0, fileCheckIntervalMs: 20 }))
    backend.checkAndIncrementSync('k', hourly, 1)
    fs.rmSync(dir, { recursive: true })
    await vi.waitFor(() => expect(() => backend.checkAndIncrementSync('k', hourly, 1)).toThrow(), {
      timeout: 5000,
      interval: 10,
    })
    let err: FastlimitError | undefined
    try {
      backend.checkAndIncrementSync('k', hourly, 1)
    } catch (e) {
      err = e as FastlimitError
    }
    expect(err?.code).toBe('ERR_FASTLIMIT_BACKEND')
    expect(err?.message).toMatch(
      /^\[fastlimit\] \[sqlite\] The database file ".*limits\.db" was deleted or replaced while open, and opening the path anew failed \(Cannot open database because the directory does not exist\)/,
    )
    await expect(backend.checkAndIncrement('k', hourly, 1)).rejects.toMatchObject({
      code: 'ERR_FASTLIMIT_BACKEND',
    })
    fs.mkdirSync(dir)
    await vi.waitFor(() => expect(backend.checkAndIncrementSync('k', hourly, 1)?.remaining).toBe(LIMIT - 1), {
      timeout: 5000,
      interval: 10,
    })
  })

  it('a Database passed in whose file is deleted: every call fails with ERR_FASTLIMIT_BACKEND, saying what to do', async () => {
    const file = path.join(tempDir(), 'mine.db')
    const db = track(new Database(file))
    const backend = track(new SQLiteBackend(db, { cleanupIntervalMs: 0, fileCheckIntervalMs: 20 }))
    expect(backend.checkAndIncrementSync('k', hourly, 1)?.remaining).toBe(LIMIT - 1)
    fs.rmSync(file)
    await vi.waitFor(() => expect(() => backend.checkAndIncrementSync('k', hourly, 1)).toThrow(), {
      timeout: 5000,
      interval: 10,
    })
    const err = await backend.checkAndIncrement('k', hourly, 1).catch((e: FastlimitError) => e)
    expect(err).toMatchObject({ code: 'ERR_FASTLIMIT_BACKEND' })
    expect((err as FastlimitError).message).toMatch(
      /The Database passed to SQLiteBackend \(".*mine\.db"\): its file was deleted or replaced while open\. .*open a new Database on the path and create a new SQLiteBackend/,
    )
    // Still its owner's: SQLiteBackend never closes it.
    expect(db.open).toBe(true)
  })
})
