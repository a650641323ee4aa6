// Four real Node processes on one table of the machine's PostgreSQL: exact totals for every algorithm.
import { ALGORITHMS, type BucketConfig } from '@fastlimit/core'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { PostgresBackend } from '../src/index'
import { createDatabase, type TestDatabase } from './databases'
import { killWorkers, startWorker } from './helpers'

let db: TestDatabase
beforeAll(async () => {
  db = await createDatabase()
}, 60_000)
afterEach(() => killWorkers())
afterAll(async () => {
  killWorkers()
  await db?.drop()
}, 60_000)

interface HammerResult {
  single: Record<string, number[]>
  all: Record<string, number[]>
  weighted: Record<string, number>
}

describe('PostgresBackend across processes', () => {
  it('4 processes hammering the same keys on a new table admit exactly the limit, for every algorithm', async () => {
    const limit = 60
    // A day per window: nothing refills during the test, on the database's own clock.
    const windowMs = 86_400_000
    const config = { url: db.url, table: 'hammer', limit, windowMs, algorithms: ALGORITHMS }
    const workers = Array.from({ length: 4 }, () => startWorker('hammer', config))
    // Every process has prepared the schema (once between them, under an advisory lock) before any starts.
    await Promise.all(workers.map((w) => w.next('ready')))
    for (const w of workers) w.child.send('go')
    const results = await Promise.all(workers.map((w) => w.next<HammerResult>('result')))
    const exits = await Promise.all(workers.map((w) => w.exited))
    expect(exits).toEqual(workers.map(() => ({ code: 0, signal: null })))

    const backend = new PostgresBackend(db.url, { tableName: 'hammer', cleanupIntervalMs: 0 })
    try {
      const everyRemaining = Array.from({ length: limit }, (_, i) => i)
      for (const algorithm of ALGORITHMS) {
        const bucket: BucketConfig = { algorithm, limit, windowMs }
        // Each admitted call saw a distinct remaining: no two processes ever read the same state.
        const single = results.flatMap((r) => r.single[algorithm] ?? []).sort((a, b) => a - b)
        expect(single, `${algorithm}: one bucket`).toEqual(everyRemaining)
        const all = results.flatMap((r) => r.all[algorithm] ?? []).sort((a, b) => a - b)
        expect(all, `${algorithm}: two buckets, all-or-nothing`).toEqual(everyRemaining)
        const second: BucketConfig = { algorithm: 'fixed-window', limit: limit + 5, windowMs }
        expect((await backend.peek(`all:${algorithm}`, second)).remaining).toBe(5)
        expect((await backend.peek(`single:${algorithm}`, bucket)).remaining).toBe(0)
        // Costs of 1 to 3: what was admitted is exactly what the stored state says was charged.
        const weighted = results.reduce((sum, r) => sum + (r.weighted[algorithm] ?? 0), 0)
        const left = (await backend.peek(`weighted:${algorithm}`, bucket)).remaining
        expect(weighted + left, `${algorithm}: weighted`).toBe(limit)
        expect(left).toBeLessThan(3)
      }
    } finally {
      await backend.close()
    }
  }, 180_000)
})
