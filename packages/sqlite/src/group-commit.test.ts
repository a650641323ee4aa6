// Group commit on real files: writes made in one turn share one transaction (counted in WAL frames), with the
// results of a serial run, a failing member failing alone, and other connections and processes interleaving.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { type BackendResult, type BucketConfig, FastLimit, type FastlimitError } from '@fastlimit/core'
import Database from 'better-sqlite3'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { killWorkers, startWorker } from '../test/helpers'
import { SQLiteBackend, type SQLiteBackendOptions } from './index'

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-sqlite-group-'))
let n = 0
const opened: Array<{ close(): unknown }> = []
afterEach(async () => {
  for (const x of opened.splice(0).reverse()) await x.close()
  killWorkers()
})
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))

const NOW = 1_700_000_000_000
function open(options: SQLiteBackendOptions = {}, file = path.join(root, `${n++}.db`)): SQLiteBackend {
  const backend = new SQLiteBackend(file, { clock: () => NOW, cleanupIntervalMs: 0, ...options })
  opened.push(backend)
  return backend
}

/**
 * The WAL frames written by `run`: the log is emptied first (and automatic checkpoints are off), then
 * `wal_checkpoint(PASSIVE)` counts what is in it.
 */
async function framesOf(backend: SQLiteBackend, run: () => Promise<unknown>): Promise<number> {
  const db = backend.database
  db.pragma('wal_autocheckpoint = 0')
  db.pragma('wal_checkpoint(TRUNCATE)')
  await run()
  const [row] = db.pragma('wal_checkpoint(PASSIVE)') as Array<{ log: number }>
  return (row as { log: number }).log
}

const minute: BucketConfig = { algorithm: 'gcra', limit: 40, windowMs: 60_000 }
const hour: BucketConfig = { algorithm: 'fixed-window', limit: 60, windowMs: 3_600_000 }
const slide: BucketConfig = { algorithm: 'sliding-window', limit: 25, windowMs: 60_000 }
/** Never full in these tests: every decision writes. */
const roomy: BucketConfig = { algorithm: 'fixed-window', limit: 1000, windowMs: 3_600_000 }

describe('group commit: WAL frames', () => {
  it('100 concurrent decisions on one key write a handful of frames, not one transaction each', async () => {
    const grouped = open()
    const alone = open({ groupCommit: 'off' })
    for (const b of [grouped, alone]) await b.checkAndIncrement('warm', minute, 1)
    const run = (b: SQLiteBackend) => () =>
      Promise.all(Array.from({ length: 100 }, () => b.checkAndIncrement('hot', roomy, 1)))
    const frames = await framesOf(grouped, run(grouped))
    const framesAlone = await framesOf(alone, run(alone))
    expect(framesAlone).toBeGreaterThanOrEqual(100)
    expect(frames).toBeLessThanOrEqual(4)
    expect(grouped.peekSync('hot', roomy)?.remaining).toBe(900)
    expect(alone.peekSync('hot', roomy)?.remaining).toBe(900)
  })

  it('100 concurrent decisions on 100 keys, and FastLimit (default and turn), write far fewer frames', async () => {
    const grouped = open()
    const frames = await framesOf(grouped, () =>
      Promise.all(Array.from({ length: 100 }, (_, i) => grouped.checkAndIncrement(`user-${i}`, minute, 1))),
    )
    // 100 new rows fit in a few pages of the table and of its expiry index.
    expect(frames).toBeLessThanOrEqual(12)

    for (const groupCommit of ['turn', 'async'] as const) {
      const backend = open({ groupCommit })
      const limiter = new FastLimit({ backend })
      const rules = limiter.rules('50/min')
      await limiter.check('warm', rules)
      const framesTurn = await framesOf(backend, () =>
        Promise.all(Array.from({ length: 100 }, () => limiter.check('hot', rules))),
      )
      // The first decision of the turn commits alone (the fast path), the other 99 together.
      expect(framesTurn, groupCommit).toBeLessThanOrEqual(6)
      const ds = await Promise.all(Array.from({ length: 10 }, () => limiter.check('hot', rules)))
      expect(ds.every((d) => !d.allowed && d.source === 'backend')).toBe(true)
    }
  })

  it('FastLimit with the default groupCommit: the first check of a turn decides synchronously, later ones share a transaction', async () => {
    const backend = open()
    const limiter = new FastLimit({ backend })
    const rules = limiter.rules('5/min')
    expect(backend.syncNow()).toBe(true)
    const first = limiter.check('u', rules)
    // FastLimit is told to go asynchronously for the rest of this turn; the direct synchronous methods
    // still answer.
    expect(backend.syncNow()).toBe(false)
    expect(backend.checkAndIncrementSync('direct', minute, 1)?.allowed).toBe(true)
    const rest = Promise.all(Array.from({ length: 9 }, () => limiter.check('u', rules)))
    const ds = [await first, ...(await rest)]
    expect(ds.map((d) => d.allowed)).toEqual([
      true,
      true,
      true,
      true,
      true,
      false,
      false,
      false,
      false,
      false,
    ])
    await Promise.resolve()
    expect(backend.syncNow()).toBe(true)
  })
})

/** A reproducible mix of calls: several keys, rules, costs, single and all-or-nothing, refunds. */
type Op =
  | { kind: 'one'; key: string; bucket: BucketConfig; cost: number }
  | { kind: 'all'; key: string; buckets: BucketConfig[]; cost: number }
  | { kind: 'adjust'; key: string; buckets: BucketConfig[]; delta: number }
function ops(count: number, seed: number): Op[] {
  let x = seed
  const rand = (k: number) => {
    x = (x * 1_103_515_245 + 12_345) % 2 ** 31
    return x % k
  }
  const keys = ['a', 'b', 'c', 'd']
  const rules = [minute, hour, slide]
  return Array.from({ length: count }, (): Op => {
    const key = keys[rand(keys.length)] as string
    const r = rand(10)
    if (r < 6) return { kind: 'one', key, bucket: rules[rand(3)] as BucketConfig, cost: 1 + rand(3) }
    if (r < 9) return { kind: 'all', key, buckets: [minute, hour], cost: 1 + rand(2) }
    return { kind: 'adjust', key, buckets: [minute, hour], delta: -1 }
  })
}
function call(b: SQLiteBackend, op: Op): Promise<BackendResult | BackendResult[]> {
  if (op.kind === 'one') return b.checkAndIncrement(op.key, op.bucket, op.cost)
  if (op.kind === 'all') return b.checkAndIncrementAll(op.key, op.buckets, op.cost)
  return b.adjust(op.key, op.buckets, op.delta, undefined)
}

describe('group commit: the results of a serial run', () => {
  it('600 calls made in one turn (several keys, rules, costs, refunds) answer as one after the other', async () => {
    const list = ops(600, 7)
    const serial = open({ groupCommit: 'off' })
    const expected: Array<BackendResult | BackendResult[]> = []
    for (const op of list) expected.push(await call(serial, op))
    const grouped = open()
    let actual: Array<BackendResult | BackendResult[]> = []
    const frames = await framesOf(grouped, async () => {
      actual = await Promise.all(list.map((op) => call(grouped, op)))
    })
    expect(actual).toEqual(expected)
    // Three groups of at most 256 calls: a few frames each, where 600 transactions write 600 or more.
    expect(frames).toBeLessThan(40)
    for (const key of ['a', 'b', 'c', 'd']) {
      for (const rule of [minute, hour, slide]) {
        expect(grouped.peekSync(key, rule), `${key} ${rule.algorithm}`).toEqual(serial.peekSync(key, rule))
      }
    }
  })

  it('admissions across turns and through FastLimit (turn mode) are exact: the limit, not one more', async () => {
    const backend = open({ groupCommit: 'turn' })
    const limiter = new FastLimit({ backend })
    const rules = limiter.rules(['30/min', '45/h'])
    let allowed = 0
    let remainingSeen = new Set<number | undefined>()
    for (let round = 0; round < 4; round++) {
      const ds = await Promise.all(Array.from({ length: 20 }, () => limiter.check('user', rules)))
      allowed += ds.filter((d) => d.allowed).length
      remainingSeen = new Set([...remainingSeen, ...ds.filter((d) => d.allowed).map((d) => d.remaining)])
    }
    expect(allowed).toBe(30)
    // Every admission saw its own remaining count: 29 down to 0, each once.
    expect(remainingSeen.size).toBe(30)
  })

  it('a synchronous call made beside a waiting group runs after it, in its transaction (groupCommit: async)', async () => {
    const backend = open()
    const first = backend.checkAndIncrement('k', hour, 5)
    const sync = backend.checkAndIncrementSync('k', hour, 1)
    expect(sync?.remaining).toBe(54)
    expect((await first).remaining).toBe(55)
    // A read made after writes sees them.
    const later = backend.checkAndIncrement('k', hour, 2)
    expect(backend.peekSync('k', hour)?.remaining).toBe(52)
    expect((await later).remaining).toBe(52)
  })

  it('groupCommit: turn makes the second synchronous write of a turn answer undefined, and the first decide', async () => {
    const backend = open({ groupCommit: 'turn' })
    expect(backend.checkAndIncrementSync('k', hour, 1)?.remaining).toBe(59)
    expect(backend.checkAndIncrementSync('k', hour, 1)).toBeUndefined()
    const joined = backend.checkAndIncrement('k', hour, 1)
    expect(backend.checkAndIncrementSync('k', hour, 1)).toBeUndefined()
    expect((await joined).remaining).toBe(58)
    // The next turn decides synchronously again.
    await new Promise((resolve) => setImmediate(resolve))
    expect(backend.checkAndIncrementSync('k', hour, 1)?.remaining).toBe(57)
  })

  it('rejects a groupCommit that is not one of its values', () => {
    expect(() => new SQLiteBackend(':memory:', { groupCommit: 'yes' as never })).toThrow(
      /groupCommit must be 'async', 'turn' or 'off', got "yes"/,
    )
  })
})

describe('group commit: a member that fails', () => {
  it('fails alone: a malformed key or rule, a passed deadline; the others commit as if it had not been made', async () => {
    const backend = open()
    const reference = open({ groupCommit: 'off' })
    const good = (b: SQLiteBackend) => [
      b.checkAndIncrement('k', hour, 2),
      b.checkAndIncrementAll('k', [hour, minute], 3),
    ]
    const calls = [
      ...good(backend),
      backend.checkAndIncrement({} as string, hour, 1),
      backend.checkAndIncrement('k', { ...hour, algorithm: 'nope' } as unknown as BucketConfig, 1),
      backend.checkAndIncrementAll('k', [hour, minute], 1, { deadline: Date.now() - 1 }),
      backend.checkAndIncrementAll('k', [hour, { ...minute, algorithm: 'nope' } as never], 1),
      backend.checkAndIncrement('k', hour, 4),
    ]
    const settled = await Promise.allSettled(calls)
    const codes = settled.map((s) => (s.status === 'fulfilled' ? 'ok' : (s.reason as FastlimitError).code))
    expect(codes).toEqual([
      'ok',
      'ok',
      'ERR_FASTLIMIT_BACKEND',
      'ERR_FASTLIMIT_BACKEND',
      'ERR_FASTLIMIT_TIMEOUT',
      'ERR_FASTLIMIT_BACKEND',
      'ok',
    ])
    const expected = await Promise.all([...good(reference), reference.checkAndIncrement('k', hour, 4)])
    const values = settled.filter((s) => s.status === 'fulfilled').map((s) => s.value)
    expect(values).toEqual(expected)
    // The all-or-nothing call whose second rule failed left its first rule untouched (60 - 2 - 3 - 4).
    expect(backend.peekSync('k', hour)?.remaining).toBe(51)
    expect(backend.peekSync('k', minute)?.remaining).toBe(37)
  })

  it('a full database (SQLITE_FULL rolls the whole transaction back): only the calls that need room fail', async () => {
    const backend = open()
    backend.checkAndIncrementSync('old', hour, 1)
    const db = backend.database
    // No room for a new page: updating the existing row still fits, new long keys do not.
    db.pragma(`max_page_count = ${db.pragma('page_count', { simple: true })}`)
    const big = 'x'.repeat(3000)
    const settled = await Promise.allSettled([
      backend.checkAndIncrement('old', hour, 1),
      ...Array.from({ length: 4 }, (_, i) => backend.checkAndIncrement(`${big}${i}`, hour, 1)),
      backend.checkAndIncrement('old', hour, 1),
    ])
    expect(
      settled.map((s) => (s.status === 'fulfilled' ? s.value.remaining : (s.reason as FastlimitError).code)),
    ).toEqual([
      58,
      'ERR_FASTLIMIT_STORE_FULL',
      'ERR_FASTLIMIT_STORE_FULL',
      'ERR_FASTLIMIT_STORE_FULL',
      'ERR_FASTLIMIT_STORE_FULL',
      57,
    ])
    expect(backend.peekSync('old', hour)?.remaining).toBe(57)
    expect(backend.peekSync(`${big}0`, hour)?.remaining).toBe(60)
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok')
  })

  it('close commits the writes of the turn first; calls after it fail with ERR_FASTLIMIT_CLOSED', async () => {
    const file = path.join(root, `${n++}.db`)
    const backend = new SQLiteBackend(file, { clock: () => NOW, cleanupIntervalMs: 0 })
    const made = backend.checkAndIncrement('k', hour, 3)
    await backend.close()
    expect((await made).remaining).toBe(57)
    await expect(backend.checkAndIncrement('k', hour, 1)).rejects.toMatchObject({
      code: 'ERR_FASTLIMIT_CLOSED',
    })
    const again = open({}, file)
    expect(again.peekSync('k', hour)?.remaining).toBe(57)
  })
})

describe('group commit: other connections and processes', () => {
  it('a group that finds the lock taken waits for it, in order, and is applied once, after the other writer', async () => {
    const file = path.join(root, `${n++}.db`)
    const backend = open({ busyTimeoutMs: 5000 }, file)
    const second = open({ busyTimeoutMs: 5000 }, file)
    const other = new Database(file)
    opened.push(other)
    other.exec('BEGIN IMMEDIATE')
    const calls = Array.from({ length: 50 }, () => backend.checkAndIncrement('k', hour, 1))
    // While they wait, a synchronous call waits its turn too.
    await new Promise((resolve) => setTimeout(resolve, 30))
    expect(backend.checkAndIncrementSync('k', hour, 1)).toBeUndefined()
    other.exec('COMMIT')
    // The second connection's group interleaves with the waiting calls.
    const theirs = await Promise.all(Array.from({ length: 30 }, () => second.checkAndIncrement('k', hour, 1)))
    const ours = await Promise.all(calls)
    const admitted = [...ours, ...theirs].filter((r) => r.allowed)
    expect(admitted.length).toBe(60)
    // Each admission saw a distinct remaining count: no two were applied on the same state.
    expect(new Set(admitted.map((r) => r.remaining)).size).toBe(60)
    expect(ours.map((r) => r.remaining).filter((x, i, a) => i > 0 && x > (a[i - 1] as number))).toEqual([])
  }, 20_000)

  it('two processes and this one, each with groups of 64 concurrent calls on one key, admit exactly the limit', async () => {
    const file = path.join(root, `${n++}.db`)
    // The workers' clock (Date.now): one window for all.
    const mine = open({ busyTimeoutMs: 10_000, clock: Date.now }, file)
    // One row for all: FastLimit's key and rule, which the other two use directly.
    const bucket = new FastLimit({ backend: mine, algorithm: 'fixed-window' }).rules('500/h')
      .rules[0] as BucketConfig
    const key = 'fl:{shared}'
    const config = { file, key, bucket, rounds: 6, batch: 64 }
    const workers = [
      startWorker('group', { ...config, mode: 'async' }),
      startWorker('group', { ...config, mode: 'turn' }),
    ]
    await Promise.all(workers.map((w) => w.next('ready')))
    for (const w of workers) w.child.send({ type: 'go' })
    let admitted = 0
    for (let round = 0; round < 6; round++) {
      const rs = await Promise.all(Array.from({ length: 64 }, () => mine.checkAndIncrement(key, bucket, 1)))
      admitted += rs.filter((r) => r.allowed).length
    }
    const reports = await Promise.all(
      workers.map((w) => w.next<{ admitted: number; denied: number; errors: string[] }>('done')),
    )
    for (const r of reports) expect(r.errors).toEqual([])
    const total = admitted + reports.reduce((sum, r) => sum + r.admitted, 0)
    const decided = 6 * 64 + reports.reduce((sum, r) => sum + r.admitted + r.denied, 0)
    expect(decided).toBe(3 * 6 * 64)
    expect(total).toBe(500)
    expect(mine.peekSync(key, bucket)?.remaining).toBe(0)
  }, 60_000)
})
