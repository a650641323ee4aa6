// The SQLite section: FastLimit.check on SQLiteBackend beside rate-limiter-flexible's RateLimiterSQLite
// (better-sqlite3) and a bare better-sqlite3 UPSERT in a transaction (the floor), each on its own file in a
// fresh temp directory that is removed at the end.
import fs from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { type Algorithm, type BucketConfig, FastLimit } from '@fastlimit/core'
import { SQLiteBackend } from '@fastlimit/sqlite'
import { RateLimiterSQLite } from 'rate-limiter-flexible'
import { fmtOps, fmtStat, rotate, type Stat, stat } from './harness'
import { progress } from './progress'
import { type Headline, ratio, type Section, table } from './report'

/** better-sqlite3's Database, typed through @fastlimit/sqlite (this app has no @types/better-sqlite3 of its own). */
type Db = SQLiteBackend['database']
const Database = createRequire(import.meta.url)('better-sqlite3') as new (file: string) => Db

const KEYS = 10_000
const keys = Array.from({ length: KEYS }, (_, i) => `user-${i}`)
/** Per minute: never reached (each key sees at most a few thousand calls a minute). */
const LIMIT = 1_000_000
const WINDOW_MS = 60_000
const OURS: readonly Algorithm[] = ['gcra', 'fixed-window', 'sliding-window']

interface SqliteCase {
  name: string
  kind: 'fastlimit' | 'peer' | 'floor'
  /** One decision on `key`; resolves whether its outcome was the expected one (allowed). */
  call: (key: string) => Promise<boolean>
  /** Shown in the table only: not a configuration any ratio is taken against. */
  note?: string
}

interface Slice {
  ops: number
  seconds: number
  unexpected: number
}

/**
 * Awaits one call after another over the rotating keys until `maxOps` calls or `maxMs` passed (the clock is
 * read every 32 calls). `cursor` carries the key position across slices.
 */
async function slice(c: SqliteCase, cursor: { i: number }, maxOps: number, maxMs: number): Promise<Slice> {
  let ops = 0
  let unexpected = 0
  const t0 = performance.now()
  const deadline = t0 + maxMs
  while (ops < maxOps && performance.now() < deadline) {
    for (let j = 0; j < 32 && ops < maxOps; j++) {
      let ok = false
      try {
        ok = await c.call(keys[cursor.i++ % KEYS] as string)
      } catch {
        ok = false
      }
      ops++
      if (!ok) unexpected++
    }
  }
  return { ops, seconds: (performance.now() - t0) / 1000, unexpected }
}

function rlfReady(options: ConstructorParameters<typeof RateLimiterSQLite>[0]): Promise<RateLimiterSQLite> {
  return new Promise((resolve, reject) => {
    const limiter: RateLimiterSQLite = new RateLimiterSQLite(options, (err?: unknown) =>
      err ? reject(err) : resolve(limiter),
    )
  })
}

/** A better-sqlite3 connection as its docs advise (WAL), with the `synchronous` level given. */
function open(file: string, synchronous: 'NORMAL' | 'FULL'): Db {
  const db = new Database(file)
  db.pragma('journal_mode = WAL')
  db.pragma(`synchronous = ${synchronous}`)
  return db
}

export async function sqliteSection({ quick }: { quick: boolean }): Promise<Section> {
  const rounds = quick ? 5 : 9
  const sliceMs = quick ? 60 : 400
  console.log(`[bench] sqlite: ${rounds} rounds of ${sliceMs} ms per case, one awaited call at a time`)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-bench-sqlite-'))
  const closers: Array<() => unknown> = []
  try {
    const cases: SqliteCase[] = []
    const file = (name: string) => path.join(dir, name)

    // Ours: SQLiteBackend opens its own file (WAL, synchronous=NORMAL, statements prepared once).
    let gcraBackend: { backend: SQLiteBackend; rule: BucketConfig } | undefined
    for (const algorithm of OURS) {
      const backend = new SQLiteBackend(file(`fastlimit-${algorithm}.db`))
      closers.push(() => backend.close())
      const limiter = new FastLimit({ backend, algorithm })
      const rules = limiter.rules({ limit: LIMIT, window: '1m' })
      if (algorithm === 'gcra') gcraBackend = { backend, rule: rules.rules[0] as BucketConfig }
      cases.push({
        name: `fastlimit ${algorithm}`,
        kind: 'fastlimit',
        call: async (k) => (await limiter.check(k, rules)).reason === 'ok',
      })
    }
    if (gcraBackend) {
      // The same decision without FastLimit: the backend's synchronous fast path, awaited like the rest.
      const backend = new SQLiteBackend(file('fastlimit-backend-only.db'))
      closers.push(() => backend.close())
      const { rule } = gcraBackend
      cases.push({
        name: 'SQLiteBackend.checkAndIncrementSync, gcra (no FastLimit)',
        kind: 'fastlimit',
        call: async (k) => backend.checkAndIncrementSync(`fl:{${k}}`, rule, 1)?.allowed === true,
        note: 'diagnostic',
      })
    }

    // rate-limiter-flexible: RateLimiterSQLite on better-sqlite3, as its docs show, with the same WAL and
    // synchronous=NORMAL as ours (so the comparison is not about fsync), and once as better-sqlite3 leaves it.
    for (const [label, synchronous] of [
      ['WAL, synchronous=NORMAL', 'NORMAL'],
      ['WAL, synchronous=FULL (the default)', 'FULL'],
    ] as const) {
      const db = open(file(`rlf-${synchronous.toLowerCase()}.db`), synchronous)
      closers.push(() => db.close())
      const rlf = await rlfReady({
        storeClient: db,
        storeType: 'better-sqlite3',
        tableName: 'rate_limits',
        points: LIMIT,
        duration: WINDOW_MS / 1000,
      })
      cases.push({
        name: `rate-limiter-flexible RateLimiterSQLite, ${label}`,
        kind: 'peer',
        call: (k) =>
          rlf.consume(k).then(
            () => true,
            () => false,
          ),
        ...(synchronous === 'FULL' ? { note: 'fsyncs every commit' } : {}),
      })
    }

    // The floor: one prepared UPSERT of a counter (WITHOUT ROWID, RETURNING the count) in a transaction.
    {
      const db = open(file('bare-upsert.db'), 'NORMAL')
      closers.push(() => db.close())
      db.exec(
        'CREATE TABLE counters (key TEXT PRIMARY KEY NOT NULL, count INTEGER NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID',
      )
      const upsert = db.prepare<[string, number], { count: number }>(
        'INSERT INTO counters (key, count, expires_at) VALUES (?, 1, ?) ON CONFLICT (key) DO UPDATE SET count = count + 1 RETURNING count',
      )
      const tx = db.transaction(
        (key: string) => (upsert.get(key, Date.now() + WINDOW_MS) as { count: number }).count,
      )
      cases.push({
        name: 'bare better-sqlite3 UPSERT in a transaction',
        kind: 'floor',
        call: async (k) => tx(k) <= LIMIT,
      })
    }

    // Warm up: every key once (the first call inserts its row; the slices measure updates), bounded by time.
    progress.update({ case: 'warming up', done: 0, total: rounds + 1 })
    const cursors = new Map(cases.map((c) => [c, { i: 0 }]))
    for (const c of cases) await slice(c, cursors.get(c) as { i: number }, KEYS, quick ? 4000 : 8000)

    const samples = new Map(cases.map((c) => [c, { ops: [] as number[], unexpected: 0 }]))
    for (let r = 0; r < rounds; r++) {
      progress.update({ round: r + 1, rounds, done: r + 1, total: rounds + 1 })
      // Round-robin, the order rotating each round.
      for (const c of rotate(cases, r)) {
        const s = await slice(c, cursors.get(c) as { i: number }, 5_000_000, sliceMs)
        const m = samples.get(c) as { ops: number[]; unexpected: number }
        m.ops.push(s.ops / s.seconds)
        m.unexpected += s.unexpected
      }
    }
    const results = new Map<SqliteCase, { opsPerSec: Stat; unexpected: number }>(
      [...samples].map(([c, m]) => [c, { opsPerSec: stat(m.ops), unexpected: m.unexpected }]),
    )
    return report(cases, results, rounds, sliceMs)
  } finally {
    for (const close of closers.reverse()) {
      try {
        await close()
      } catch {
        // Report the measurement anyway; the directory goes below.
      }
    }
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

function report(
  cases: SqliteCase[],
  results: Map<SqliteCase, { opsPerSec: Stat; unexpected: number }>,
  rounds: number,
  sliceMs: number,
): Section {
  const ops = (c: SqliteCase) => (results.get(c) as { opsPerSec: Stat }).opsPerSec
  const find = (name: string) => cases.find((c) => c.name === name)
  const rlf = find('rate-limiter-flexible RateLimiterSQLite, WAL, synchronous=NORMAL')
  const floor = cases.find((c) => c.kind === 'floor')
  const body = [
    `Each operation is one awaited decision for one of 10,000 rotating identities (every one touched once before`,
    'the measurement, so the slices measure the steady state: an existing row read and rewritten). Every allowed',
    `path has 1,000,000 per minute (never reached). Each library has its own file in a fresh temp directory, in WAL`,
    `mode; ${rounds} rounds of ${sliceMs} ms slices per case (bounded by count and time), round-robin, the order rotating each`,
    'round.',
    '',
    '- `fastlimit <algorithm>`: `FastLimit.check(identity, rule)` on `new SQLiteBackend(file)` (its defaults: WAL,',
    '  `synchronous=NORMAL`, statements prepared once, one `BEGIN IMMEDIATE` transaction per decision: read the',
    '  row, the core algorithm, write it back). The diagnostic row calls `SQLiteBackend.checkAndIncrementSync`',
    '  directly (no `FastLimit`).',
    "- `rate-limiter-flexible`: `RateLimiterSQLite.consume` with `storeType: 'better-sqlite3'` (an UPSERT …",
    '  `RETURNING` in a better-sqlite3 transaction, the statement prepared on every call). Its connection gets WAL',
    "  and `synchronous=NORMAL` like ours, so the ratios compare the libraries' work, not fsync; the `FULL` row is",
    "  the same with better-sqlite3's default `synchronous` (a WAL fsync on every commit), for reference only.",
    '- the floor: one prepared `INSERT … ON CONFLICT DO UPDATE SET count = count + 1 RETURNING count` on a',
    '  `WITHOUT ROWID` table, in a better-sqlite3 transaction, in an async function (WAL, `synchronous=NORMAL`).',
    '',
    table(
      [
        'case',
        'decisions/s, median (min–max)',
        'vs rate-limiter-flexible (NORMAL)',
        'vs bare UPSERT',
        'unexpected',
        'note',
      ],
      cases.map((c) => [
        c.name,
        fmtStat(ops(c)),
        rlf ? ratio(ops(c).median, ops(rlf).median) : '—',
        floor ? ratio(ops(c).median, ops(floor).median) : '—',
        String((results.get(c) as { unexpected: number }).unexpected),
        c.note ?? '',
      ]),
    ),
  ]
  const headlines: Headline[] = []
  for (const algorithm of ['gcra', 'fixed-window']) {
    const o = find(`fastlimit ${algorithm}`)
    if (!o || !rlf) continue
    headlines.push({
      label: `sqlite ${algorithm} vs RLF RateLimiterSQLite`,
      ratio: ops(o).median / ops(rlf).median,
      target: 2,
      detail: `${fmtOps(ops(o).median)} vs ${fmtOps(ops(rlf).median)} decisions/s (both WAL, synchronous=NORMAL)`,
    })
  }
  const gcra = find('fastlimit gcra')
  if (gcra && floor) {
    headlines.push({
      label: 'sqlite gcra vs bare UPSERT (the floor)',
      ratio: ops(gcra).median / ops(floor).median,
      detail: `${fmtOps(ops(gcra).median)} vs ${fmtOps(ops(floor).median)} decisions/s`,
    })
  }
  return { title: 'SQLite', body: body.join('\n'), headlines }
}
