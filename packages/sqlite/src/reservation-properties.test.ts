// The reservation properties of @fastlimit/core/testing on SQLite (a WAL file): 500 random sequences per
// algorithm (each a few transactions; the pure steps carry the 10,000-sequence runs in core).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { reservationProperties } from '@fastlimit/core/testing'
import { afterAll } from 'vitest'
import { SQLiteBackend } from './index'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-sqlite-reservations-'))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

reservationProperties({
  name: 'SQLiteBackend (file, WAL)',
  make: (clock) => new SQLiteBackend(path.join(dir, 'reservations.db'), { clock, cleanupIntervalMs: 0 }),
  runs: 500,
})
