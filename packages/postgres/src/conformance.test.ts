// The core conformance suite on the machine's PostgreSQL, in a database of this run's own: through a pg.Pool,
// a connection string, a Proxy, and a named schema and table.
import { backendConformance } from '@fastlimit/core/testing'
import pg from 'pg'
import { afterAll, beforeAll } from 'vitest'
import { createDatabase, type TestDatabase } from '../test/databases'
import { PostgresBackend } from './index'

let db: TestDatabase
let pool: pg.Pool
beforeAll(async () => {
  db = await createDatabase()
  pool = new pg.Pool({ connectionString: db.url, max: 20 })
}, 60_000)
afterAll(async () => {
  await pool?.end()
  await db?.drop()
}, 60_000)

async function count(backend: PostgresBackend): Promise<number> {
  const r = await pool.query(`SELECT count(*)::int AS n FROM "${backend.schema}"."${backend.tableName}"`)
  return r.rows[0].n as number
}

backendConformance({
  name: 'PostgresBackend (pg.Pool)',
  make: (clock) => new PostgresBackend(pool, { clock, cleanupIntervalMs: 0 }),
  destroy: (backend) => backend.close(),
  deadlines: true,
  countKeys: count,
  sweep: async (backend) => {
    await backend.sweep()
  },
})

backendConformance({
  name: 'PostgresBackend (connection string, own schema and table, through a Proxy)',
  make: (clock) =>
    new Proxy(
      new PostgresBackend(db.url, { clock, cleanupIntervalMs: 0, schema: 'limits', tableName: 'Api_State' }),
      {},
    ),
  deadlines: true,
  countKeys: count,
  sweep: async (backend) => {
    await backend.sweep()
  },
  algorithms: ['gcra', 'sliding-log'],
})
