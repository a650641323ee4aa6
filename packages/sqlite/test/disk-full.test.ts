// SQLite on a full file system: a small tmpfs this test mounts and unmounts (root only), filled until the
// limiter's writes fail. A full disk is ERR_FASTLIMIT_STORE_FULL, charges nothing, and heals with space.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { type BucketConfig, FastLimit, type FastlimitError } from '@fastlimit/core'
import { afterAll, describe, expect, it } from 'vitest'
import { SQLiteBackend } from '../src/index'

const root = process.getuid?.() === 0
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-sqlite-full-'))
let mounted = false
const opened: Array<{ close(): unknown }> = []

afterAll(async () => {
  for (const x of opened.splice(0).reverse()) await x.close()
  if (mounted) {
    try {
      execFileSync('umount', [dir])
    } catch {
      execFileSync('umount', ['-l', dir])
    }
  }
  fs.rmSync(dir, { recursive: true, force: true })
})

/** Writes `file` until the file system refuses: returns the bytes written. */
function fill(file: string): number {
  const fd = fs.openSync(file, 'w')
  let written = 0
  try {
    for (const size of [64 * 1024, 4096, 512, 1]) {
      const chunk = Buffer.alloc(size, 1)
      for (;;) {
        try {
          written += fs.writeSync(fd, chunk)
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
          break
        }
      }
    }
  } finally {
    fs.closeSync(fd)
  }
  return written
}

const hourly: BucketConfig = { algorithm: 'fixed-window', limit: 5, windowMs: 3_600_000 }

describe('SQLiteBackend on a full file system', () => {
  it.skipIf(!root)(
    'reports ERR_FASTLIMIT_STORE_FULL, charges nothing, applies the policy, and heals',
    async () => {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir])
      mounted = true
      const file = path.join(dir, 'limits.db')
      const backend = new SQLiteBackend(file, { cleanupIntervalMs: 0 })
      opened.push(backend)
      const errors: FastlimitError[] = []
      const limiter = new FastLimit({
        backend,
        onBackendError: 'fail-closed',
        onError: (e) => errors.push(e),
      })
      expect((await limiter.check('before', '5/h')).source).toBe('backend')
      // A database closed before the disk fills: its -shm file is gone with its last connection.
      const existing = path.join(dir, 'existing.db')
      await new SQLiteBackend(existing, { cleanupIntervalMs: 0 }).close()
      const filler = path.join(dir, 'filler')
      expect(fill(filler)).toBeGreaterThan(0)

      // Distinct keys until the -wal file cannot grow: every failure says the disk is full.
      const codes: Record<string, number> = {}
      let admitted = 0
      let firstFull: FastlimitError | undefined
      for (let i = 0; i < 2000; i++) {
        try {
          if (backend.checkAndIncrementSync(`key-${i}`, hourly, 1)?.allowed) admitted++
        } catch (err) {
          const e = err as FastlimitError
          codes[e.code] = (codes[e.code] ?? 0) + 1
          firstFull ??= e
        }
      }
      expect(Object.keys(codes)).toEqual(['ERR_FASTLIMIT_STORE_FULL'])
      expect(codes.ERR_FASTLIMIT_STORE_FULL).toBeGreaterThan(1900)
      expect(firstFull?.message).toMatch(
        /^\[fastlimit\] \[sqlite\] The file system holding the database is full: database or disk is full \(SQLITE_FULL\)\. No decision can be recorded until it has room: nothing was charged/,
      )
      expect((firstFull?.cause as { code?: string } | undefined)?.code).toBe('SQLITE_FULL')
      // Nothing was charged: reads still work, and show the keys untouched.
      expect(backend.peekSync('key-1999', hourly)?.remaining).toBe(5)
      await expect(
        backend.checkAndIncrement('async', hourly, 1, { deadline: Date.now() + 1000 }),
      ).rejects.toMatchObject({
        code: 'ERR_FASTLIMIT_STORE_FULL',
      })
      await expect(
        backend.checkAndIncrementAll('async', [hourly, { ...hourly, limit: 9 }], 1),
      ).rejects.toMatchObject({
        code: 'ERR_FASTLIMIT_STORE_FULL',
      })
      // Through FastLimit: the policy, and onError hears why.
      expect(await limiter.check('during', '5/h')).toMatchObject({ allowed: false, reason: 'fail-closed' })
      expect(errors.map((e) => e.code)).toEqual(['ERR_FASTLIMIT_STORE_FULL'])
      // A new database on the full disk fails at construction, saying so.
      expect(() => new SQLiteBackend(path.join(dir, 'other.db'), { cleanupIntervalMs: 0 })).toThrow(
        /cannot be written: the file system holding it is full: .*SQLITE_FULL.*Free some space there/,
      )

      // An existing database cannot even be read there: SQLite cannot create its -shm file.
      expect(() => new SQLiteBackend(existing, { cleanupIntervalMs: 0 })).toThrow(
        /cannot be written: the file system holding it is full: .*SQLITE_IOERR_SHMSIZE/,
      )

      // Room again: decisions are back on the file, exact.
      fs.rmSync(filler)
      const ds = await Promise.all(Array.from({ length: 8 }, () => limiter.check('after', '5/h')))
      expect(ds.filter((d) => d.allowed).length).toBe(5)
      expect(new Set(ds.map((d) => d.source))).toEqual(new Set(['backend']))
      expect(backend.checkAndIncrementSync('key-1999', hourly, 1)?.remaining).toBe(4)
      expect(backend.database.pragma('integrity_check', { simple: true })).toBe('ok')
      console.log(
        `[sqlite] full disk: ${admitted} admitted before the first failure, then ${JSON.stringify(codes)}`,
      )
    },
  )
})
