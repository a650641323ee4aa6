// The core conformance suite, on a real database file in a temp directory and on ':memory:'.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { backendConformance } from '@fastlimit/core/testing'
import Database from 'better-sqlite3'
import { afterAll } from 'vitest'
import { SQLiteBackend } from './index'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-sqlite-conformance-'))
const file = path.join(dir, 'conformance.db')
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

// A second connection counts rows, as another process would see them.
let reader: Database.Database | undefined

backendConformance({
  name: 'SQLiteBackend (file, WAL)',
  make: (clock) => new SQLiteBackend(file, { clock, cleanupIntervalMs: 0 }),
  destroy: async (backend) => {
    await backend.close()
    reader?.close()
  },
  countKeys: async () => {
    reader ??= new Database(file, { readonly: true })
    return reader.prepare('SELECT count(*) FROM fastlimit').pluck().get() as number
  },
  sweep: async (backend) => {
    await backend.sweep()
  },
})

backendConformance({
  name: "SQLiteBackend (':memory:')",
  make: (clock) => new SQLiteBackend(':memory:', { clock, cleanupIntervalMs: 0 }),
  countKeys: async (backend) =>
    backend.database.prepare('SELECT count(*) FROM fastlimit').pluck().get() as number,
  sweep: async (backend) => {
    await backend.sweep()
  },
})

// The same contract with the synchronous fast path in group commit, and with group commit off.
for (const groupCommit of ['turn', 'off'] as const) {
  backendConformance({
    name: `SQLiteBackend (file, WAL, groupCommit '${groupCommit}')`,
    make: (clock) =>
      new SQLiteBackend(path.join(dir, `conformance-${groupCommit}.db`), {
        clock,
        cleanupIntervalMs: 0,
        groupCommit,
      }),
    sweep: async (backend) => {
      await backend.sweep()
    },
  })
}
