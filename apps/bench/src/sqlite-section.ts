// The SQLite section: FastLimit.check on SQLiteBackend beside rate-limiter-flexible's RateLimiterSQLite
// (better-sqlite3) and a bare better-sqlite3 UPSERT in a transaction (the floor), each on its own file in a
// fresh temp directory that is removed at the end; then 256 decisions in flight with each groupCommit mode,
// in decisions/s and WAL frames per decision.
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

/** Decisions in flight in the concurrent part: 256 callers, each awaiting one decision after another. */
const IN_FLIGHT = 256

type GroupCommit = NonNullable<ConstructorParameters<typeof SQLiteBackend>[1]>['groupCommit']

interface FlightCase {
  name: string
  groupCommit: GroupCommit
  via: 'FastLimit.check' | 'SQLiteBackend.checkAndIncrement'
  /** How many callers: 256, or 1 for the sequential reference. */
  inFlight: number
  backend: SQLiteBackend
  call: (key: string) => Promise<boolean>
}

/**
 * `inFlight` callers, each awaiting `c.call` on the rotating keys, until `maxOps` calls in all or `maxMs`
 * passed (each caller reads the clock before each call).
 */
async function flight(c: FlightCase, cursor: { i: number }, maxOps: number, maxMs: number): Promise<Slice> {
  let ops = 0
  let unexpected = 0
  const t0 = performance.now()
  const deadline = t0 + maxMs
  const caller = async () => {
    while (ops < maxOps && performance.now() < deadline) {
      ops++
      let ok = false
      try {
        ok = await c.call(keys[cursor.i++ % KEYS] as string)
      } catch {
        ok = false
      }
      if (!ok) unexpected++
    }
  }
  await Promise.all(Array.from({ length: c.inFlight }, caller))
  return { ops, seconds: (performance.now() - t0) / 1000, unexpected }
}

/**
 * WAL frames per decision: the log is emptied (`wal_checkpoint(TRUNCATE)`) and automatic checkpoints are off
 * while `n` decisions run, then `wal_checkpoint(PASSIVE)` counts the frames in the log.
 */
async function framesPerDecision(c: FlightCase, cursor: { i: number }, n: number): Promise<number> {
  const db = c.backend.database
  db.pragma('wal_autocheckpoint = 0')
  try {
    db.pragma('wal_checkpoint(TRUNCATE)')
    const s = await flight(c, cursor, n, 60_000)
    const [row] = db.pragma('wal_checkpoint(PASSIVE)') as Array<{ log: number }>
    return (row as { log: number }).log / s.ops
  } finally {
    db.pragma('wal_autocheckpoint = 1000')
  }
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
    const flights = await inFlight(file, closers, rounds, sliceMs * 2, quick)
    return report(cases, results, rounds, sliceMs, flights, sliceMs * 2)
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

interface FlightResult {
  opsPerSec: Stat
  unexpected: number
  frames: number
}

/** The concurrent part: each groupCommit mode at 256 in flight, through FastLimit and the backend alone. */
async function inFlight(
  file: (name: string) => string,
  closers: Array<() => unknown>,
  rounds: number,
  sliceMs: number,
  quick: boolean,
): Promise<Map<FlightCase, FlightResult>> {
  console.log(`[bench] sqlite: ${IN_FLIGHT} in flight, ${rounds} rounds of ${sliceMs} ms per case`)
  const cases: FlightCase[] = []
  const add = (via: FlightCase['via'], groupCommit: GroupCommit, inFlight = IN_FLIGHT) => {
    const backend = new SQLiteBackend(file(`flight-${cases.length}.db`), { groupCommit })
    closers.push(() => backend.close())
    const limiter = new FastLimit({ backend, algorithm: 'gcra' })
    const rules = limiter.rules({ limit: LIMIT, window: '1m' })
    const rule = rules.rules[0] as BucketConfig
    const call =
      via === 'FastLimit.check'
        ? async (k: string) => (await limiter.check(k, rules)).reason === 'ok'
        : async (k: string) => (await backend.checkAndIncrement(`fl:{${k}}`, rule, 1)).allowed
    const name = `${via}, groupCommit '${groupCommit}'${inFlight === 1 ? ', 1 in flight' : ''}`
    cases.push({ name, groupCommit, via, inFlight, backend, call })
  }
  add('FastLimit.check', 'async', 1)
  for (const mode of ['off', 'async', 'turn'] as const) add('FastLimit.check', mode)
  for (const mode of ['off', 'async'] as const) add('SQLiteBackend.checkAndIncrement', mode)

  const cursors = new Map(cases.map((c) => [c, { i: 0 }]))
  // Warm up: every key once, so the rounds measure updates of existing rows.
  for (const c of cases) await flight(c, cursors.get(c) as { i: number }, KEYS, quick ? 4000 : 8000)
  const samples = new Map(cases.map((c) => [c, { ops: [] as number[], unexpected: 0 }]))
  for (let r = 0; r < rounds; r++) {
    progress.update({ case: `${IN_FLIGHT} in flight`, round: r + 1, rounds, done: r + 1, total: rounds })
    for (const c of rotate(cases, r)) {
      const s = await flight(c, cursors.get(c) as { i: number }, 50_000_000, sliceMs)
      const m = samples.get(c) as { ops: number[]; unexpected: number }
      m.ops.push(s.ops / s.seconds)
      m.unexpected += s.unexpected
    }
  }
  const out = new Map<FlightCase, FlightResult>()
  for (const c of cases) {
    const frames = await framesPerDecision(c, cursors.get(c) as { i: number }, 20 * IN_FLIGHT)
    const m = samples.get(c) as { ops: number[]; unexpected: number }
    out.set(c, { opsPerSec: stat(m.ops), unexpected: m.unexpected, frames })
  }
  return out
}

function report(
  cases: SqliteCase[],
  results: Map<SqliteCase, { opsPerSec: Stat; unexpected: number }>,
  rounds: number,
  sliceMs: number,
  flights: Map<FlightCase, FlightResult>,
  flightMs: number,
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
  const flightCases = [...flights.keys()]
  const fl = (c: FlightCase) => flights.get(c) as FlightResult
  const off = flightCases.find((c) => c.via === 'FastLimit.check' && c.groupCommit === 'off')
  body.push(
    '',
    `### ${IN_FLIGHT} decisions in flight: group commit`,
    '',
    `${IN_FLIGHT} callers, each awaiting one decision after another over the same 10,000 rotating identities (gcra,`,
    `never full), each case on its own file; ${rounds} rounds of ${flightMs} ms per case, round-robin. \`groupCommit\`:`,
    "`'off'` is one `BEGIN IMMEDIATE` transaction per decision (the behaviour before group commit); `'async'` (the",
    "default) groups the backend's asynchronous calls of a turn in one transaction, and `FastLimit` (told by",
    "`syncNow()`) decides only a turn's first decision on the synchronous fast path and sends the others to the group;",
    "`'turn'` also makes the synchronous methods answer `undefined` after a turn's first write. WAL frames per decision:",
    `${(20 * IN_FLIGHT).toLocaleString()} decisions after the rounds with the log emptied first and automatic checkpoints`,
    'off, then `wal_checkpoint(PASSIVE)` counts the frames in the log. The 1-in-flight row is the sequential reference.',
    '',
    table(
      [
        'case',
        'decisions/s, median (min–max)',
        "vs FastLimit, 'off'",
        'WAL frames per decision',
        'unexpected',
      ],
      flightCases.map((c) => [
        c.name,
        fmtStat(fl(c).opsPerSec),
        off ? ratio(fl(c).opsPerSec.median, fl(off).opsPerSec.median) : '—',
        fl(c).frames.toFixed(3),
        String(fl(c).unexpected),
      ]),
    ),
  )
  const headlines: Headline[] = []
  const turn = flightCases.find(
    (c) => c.via === 'FastLimit.check' && c.groupCommit === 'async' && c.inFlight === IN_FLIGHT,
  )
  if (off && turn) {
    headlines.push({
      label: `sqlite ${IN_FLIGHT} in flight: group commit (the default) vs one transaction per decision`,
      ratio: fl(turn).opsPerSec.median / fl(off).opsPerSec.median,
      detail:
        `${fmtOps(fl(turn).opsPerSec.median)} vs ${fmtOps(fl(off).opsPerSec.median)} decisions/s; ` +
        `${fl(turn).frames.toFixed(3)} vs ${fl(off).frames.toFixed(3)} WAL frames per decision`,
    })
  }
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
