// Concurrency leases on one SQLite file shared by processes: 1,000 acquirers in 4 processes at limit 5
// never hold more than 5 slots at once (counted by the holders in a database of their own), a holder
// killed with SIGKILL loses its slot within leaseMs, and a late release frees nothing.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { FastLimit } from '@fastlimit/core'
import { leaseCrowd } from '@fastlimit/core/testing'
import Database from 'better-sqlite3'
import { afterAll, describe, expect, it } from 'vitest'
import { SQLiteBackend } from '../src'

const here = path.dirname(fileURLToPath(import.meta.url))
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-sqlite-leases-'))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Starts test/lease-child.ts; resolves its first line of output (JSON), with the child. */
function child(args: Record<string, unknown>) {
  const proc = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(here, 'lease-child.ts'), JSON.stringify(args)],
    {
      cwd: path.join(here, '..'),
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  let stderr = ''
  proc.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000)
  })
  const line = new Promise<Record<string, unknown>>((resolve, reject) => {
    createInterface({ input: proc.stdout as NodeJS.ReadableStream }).once('line', (l) =>
      resolve(JSON.parse(l)),
    )
    proc.once('exit', (code) => reject(new Error(`child exited with ${code}: ${stderr.slice(-1500)}`)))
  })
  return { proc, line }
}

describe('SQLiteBackend leases across processes', () => {
  it('1,000 acquirers in 4 processes at limit 5: never more than 5 holders at once', async () => {
    const file = path.join(dir, 'crowd.db')
    const counter = path.join(dir, 'counter.db')
    new SQLiteBackend(file).close()
    const db = new Database(counter)
    db.pragma('journal_mode = WAL')
    db.exec('CREATE TABLE holders (n INTEGER NOT NULL); INSERT INTO holders VALUES (0);')
    const common = { mode: 'crowd', file, counter, identity: 'hot', limit: 5, leaseMs: 60_000, holdMs: 2 }
    const runs = Array.from({ length: 4 }, () => child({ ...common, n: 250 }).line)
    const results = (await Promise.all(runs)) as Array<{ max: number; done: number }>
    expect(results.reduce((s, r) => s + r.done, 0)).toBe(1000)
    const max = Math.max(...results.map((r) => r.max))
    expect(max).toBeLessThanOrEqual(5)
    expect(max).toBeGreaterThanOrEqual(2)
    expect(db.prepare('SELECT n FROM holders').pluck().get()).toBe(0)
    db.close()
    // Every slot came back.
    const backend = new SQLiteBackend(file)
    const lease = await new FastLimit({ backend }).acquire('hot', { limit: 5 })
    expect(lease.holders).toBe(1)
    await backend.close()
  }, 120_000)

  it('1,000 concurrent acquirers in one process at limit 5, on two connections to one file', async () => {
    const file = path.join(dir, 'one.db')
    const a = new SQLiteBackend(file)
    const b = new SQLiteBackend(file)
    const la = new FastLimit({ backend: a })
    const lb = new FastLimit({ backend: b })
    // One counter over both limiters: the holders count themselves.
    let holding = 0
    let max = 0
    const run = async (limiter: FastLimit) => {
      for (;;) {
        const lease = await limiter.acquire('k', { limit: 5, leaseMs: 60_000 })
        if (!lease.allowed) {
          await sleep(Math.min(2, lease.retryAfterMs))
          continue
        }
        max = Math.max(max, ++holding)
        await sleep(1)
        holding--
        await lease.release()
        return
      }
    }
    await Promise.all(Array.from({ length: 1000 }, (_, i) => run(i % 2 === 0 ? la : lb)))
    expect(max).toBe(5)
    const r = await leaseCrowd(la, 'k2', { n: 200, limit: 3, leaseMs: 60_000, holdMs: 1, pollMs: 2 })
    expect(r).toMatchObject({ max: 3, done: 200 })
    await a.close()
    await b.close()
  }, 120_000)

  it('reclaims the slot of a holder killed with SIGKILL within leaseMs, and a late release frees nothing', async () => {
    const file = path.join(dir, 'kill.db')
    new SQLiteBackend(file).close()
    const leaseMs = 1500
    const holder = child({
      mode: 'hold',
      file,
      identity: 'job',
      limit: 1,
      leaseMs,
      n: 0,
      holdMs: 0,
      counter: '',
    })
    const held = await holder.line
    expect(held.allowed).toBe(true)
    holder.proc.kill('SIGKILL')
    await new Promise((r) => holder.proc.once('exit', r))
    const backend = new SQLiteBackend(file)
    const limiter = new FastLimit({ backend })
    const refused = await limiter.acquire('job', { limit: 1, leaseMs })
    expect(refused).toMatchObject({ allowed: false, holders: 1 })
    expect(refused.retryAfterMs).toBeGreaterThan(0)
    expect(refused.retryAfterMs).toBeLessThanOrEqual(leaseMs)
    await sleep(refused.retryAfterMs + 5)
    const mine = await limiter.acquire('job', { limit: 1, leaseMs: 200 })
    expect(mine.allowed).toBe(true)
    // Mine expires unreleased; another takes the slot; my late release must not free it.
    await sleep(250)
    const theirs = await limiter.acquire('job', { limit: 1, leaseMs: 60_000 })
    expect(theirs.allowed).toBe(true)
    await mine.release()
    expect(await limiter.acquire('job', { limit: 1, leaseMs: 60_000 })).toMatchObject({
      allowed: false,
      holders: 1,
    })
    await theirs.release()
    expect((await limiter.acquire('job', { limit: 1, leaseMs: 60_000 })).allowed).toBe(true)
    await backend.close()
  }, 60_000)
})
