// The reservation properties of @fastlimit/core/testing on PostgreSQL, in a database of this run's own:
// 200 random sequences per algorithm (two round trips per call; the pure steps carry the 10,000-sequence
// runs in core).
import { reservationProperties } from '@fastlimit/core/testing'
import pg from 'pg'
import { afterAll, beforeAll } from 'vitest'
import { createDatabase, type TestDatabase } from '../test/databases'
import { PostgresBackend } from './index'

let db: TestDatabase
let pool: pg.Pool
beforeAll(async () => {
  db = await createDatabase()
  pool = new pg.Pool({ connectionString: db.url, max: 10 })
}, 60_000)
afterAll(async () => {
  await pool?.end()
  await db?.drop()
}, 60_000)

reservationProperties({
  name: 'PostgresBackend',
  make: (clock) => new PostgresBackend(pool, { clock, cleanupIntervalMs: 0 }),
  runs: 200,
})
