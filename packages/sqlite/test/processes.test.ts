// Several real Node processes on one database file: exact totals for every algorithm, and state that survives SIGKILL.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ALGORITHMS, type BucketConfig } from '@fastlimit/core'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { SQLiteBackend } from '../src/index'
import { BURST_BUCKETS } from './fixtures/shared'
import { killWorkers, startWorker } from './helpers'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-sqlite-processes-'))
const NOW = 1_700_000_000_000

afterEach(() => killWorkers())
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

interface HammerResult {
  single: Record<string, number[]>
  all: Record<string, number[]>
  weighted: Record<string, number>
  decisions: number
  ms: number
  deferred: number
  timeouts: number
  worstSyncMs: number
}

describe('SQLiteBackend across processes', () => {
  it('4 processes hammering the same keys on one new file admit exactly the limit, for every algorithm', async () => {
    const file = path.join(dir, 'hammer.db')
    const limit = 150
    const config = { file, now: NOW, limit, algorithms: ALGORITHMS }
    const workers = Array.from({ length: 4 }, () => startWorker('hammer', config))
    // Every process has opened the file (creating the schema once between them) before any starts.
    await Promise.all(workers.map((w) => w.next('ready')))
    for (const w of workers) w.child.send('go')
    const results = await Promise.all(workers.map((w) => w.next<HammerResult>('result')))
    const exits = await Promise.all(workers.map((w) => w.exited))
    expect(exits).toEqual(workers.map(() => ({ code: 0, signal: null })))
    // Figures for the record (not asserted: the machine's load decides them).
    const decisions = results.reduce((sum, r) => sum + r.decisions, 0)
    const seconds = Math.max(...results.map((r) => r.ms)) / 1000
    console.log(
      `[sqlite] 4 processes: ${decisions} decisions in ${seconds.toFixed(2)} s (${Math.round(decisions / seconds)}/s); ` +
        `deferred to the async path ${results.reduce((sum, r) => sum + r.deferred, 0)}, timed out and retried ` +
        `${results.reduce((sum, r) => sum + r.timeouts, 0)}; worst synchronous call ` +
        `${Math.max(...results.map((r) => r.worstSyncMs)).toFixed(1)} ms`,
    )

    const backend = new SQLiteBackend(file, { clock: () => NOW, cleanupIntervalMs: 0 })
    try {
      const everyRemaining = Array.from({ length: limit }, (_, i) => i)
      for (const algorithm of ALGORITHMS) {
        const bucket: BucketConfig = { algorithm, limit, windowMs: 60_000 }
        // Each admitted call saw a distinct remaining: no two processes ever read the same state.
        const single = results.flatMap((r) => r.single[algorithm] ?? []).sort((a, b) => a - b)
        expect(single, `${algorithm}: one bucket`).toEqual(everyRemaining)
        const all = results.flatMap((r) => r.all[algorithm] ?? []).sort((a, b) => a - b)
        expect(all, `${algorithm}: two buckets, all-or-nothing`).toEqual(everyRemaining)
        const second: BucketConfig = { algorithm: 'fixed-window', limit: limit + 5, windowMs: 60_000 }
        expect((await backend.peek(`all:${algorithm}`, second)).remaining).toBe(5)
        expect((await backend.peek(`single:${algorithm}`, bucket)).remaining).toBe(0)
        // Costs of 1 to 3: what was admitted is exactly what the stored state says was charged.
        const weighted = results.reduce((sum, r) => sum + (r.weighted[algorithm] ?? 0), 0)
        const left = (await backend.peek(`weighted:${algorithm}`, bucket)).remaining
        expect(weighted + left, `${algorithm}: weighted`).toBe(limit)
        expect(left).toBeLessThan(3)
      }
      expect(backend.database.pragma('integrity_check', { simple: true })).toBe('ok')
    } finally {
      await backend.close()
    }
  }, 180_000)

  it('state written by a process killed with SIGKILL mid-burst is seen by a new process; the file stays intact', async () => {
    const file = path.join(dir, 'burst.db')
    const config = { file, now: NOW }
    const burst = startWorker('burst', config)
    let reported = 0
    while (reported < 3000) reported = (await burst.next<{ admitted: number }>('progress')).admitted
    burst.child.kill('SIGKILL')
    expect(await burst.exited).toEqual({ code: null, signal: 'SIGKILL' })
    // It never closed its connection: its last commits are only in the write-ahead log.
    expect(fs.statSync(`${file}-wal`).size).toBeGreaterThan(0)

    const inspect = startWorker('inspect', config)
    const seen = await inspect.next<{ integrity: string; remaining: number[]; next: number[] }>('seen')
    expect(await inspect.exited).toEqual({ code: 0, signal: null })
    expect(seen.integrity).toBe('ok')
    const used = seen.remaining.map((r, i) => (BURST_BUCKETS[i] as BucketConfig).limit - r)
    // Every call reported before the kill is there, and the three buckets were charged together.
    expect(used[0]).toBeGreaterThanOrEqual(reported)
    expect(new Set(used).size).toBe(1)
    expect(seen.next).toEqual(seen.remaining.map((r) => r - 1))
  }, 120_000)
})
