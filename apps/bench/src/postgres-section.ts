// The Postgres section: FastLimit.check on PostgresBackend beside rate-limiter-flexible's RateLimiterPostgres
// and a bare prepared UPSERT (the floor), at 1 and 64 calls in flight, on a database of its own that this
// section creates on the machine's PostgreSQL (127.0.0.1:5432, or FASTLIMIT_PG_URL) and drops at the end.
import { type Algorithm, type BucketConfig, FastLimit } from '@fastlimit/core'
import { PostgresBackend } from '@fastlimit/postgres'
import pg from 'pg'
import { RateLimiterPostgres } from 'rate-limiter-flexible'
import { createDatabase } from '../../../packages/postgres/test/databases'
import { fmtOps, fmtStat, rotate, type Stat, stat } from './harness'
import { progress } from './progress'
import { burst, type Call } from './redis-measure'
import { type Headline, ratio, type Section, table } from './report'

const KEYS = 10_000
const keys = Array.from({ length: KEYS }, (_, i) => `user-${i}`)
/** Per minute: never reached (each key sees at most a few hundred calls a minute). */
const LIMIT = 1_000_000
const WINDOW_MS = 60_000
/** Connections per pool: pg's default `max`, the same for every case. */
const POOL_SIZE = 10
const IN_FLIGHT = [1, 64] as const
const OURS: readonly Algorithm[] = ['gcra', 'fixed-window', 'sliding-window']

interface PgCase {
  name: string
  kind: 'fastlimit' | 'peer' | 'floor'
  call: Call
  note?: string
}

/** A call over the 10,000 keys in turn; `fn` resolves whether the outcome was the expected one. */
function rotating(fn: (key: string) => Promise<boolean>): Call {
  let i = 0
  return () => fn(keys[i++ % KEYS] as string)
}

function rlfReady(
  options: ConstructorParameters<typeof RateLimiterPostgres>[0],
): Promise<RateLimiterPostgres> {
  return new Promise((resolve, reject) => {
    const limiter: RateLimiterPostgres = new RateLimiterPostgres(options, (err?: unknown) =>
      err ? reject(err) : resolve(limiter),
    )
  })
}

export async function postgresSection({ quick }: { quick: boolean }): Promise<Section> {
  const rounds = quick ? 3 : 7
  const sliceMs = quick ? 300 : 1000
  console.log(
    `[bench] postgres: ${rounds} rounds of ${sliceMs} ms per case, at ${IN_FLIGHT.join(' and ')} in flight`,
  )
  const db = await createDatabase()
  const pools: pg.Pool[] = []
  const closers: Array<() => Promise<unknown>> = []
  const pool = () => {
    const p = new pg.Pool({ connectionString: db.url, max: POOL_SIZE })
    p.on('error', () => undefined)
    pools.push(p)
    return p
  }
  try {
    const admin = pool()
    const version = String((await admin.query('SHOW server_version')).rows[0]?.server_version ?? '?')
    const cases: PgCase[] = []

    // Ours: PostgresBackend on a pg.Pool of its own per algorithm (its defaults: the database's clock).
    let gcra: BucketConfig | undefined
    for (const algorithm of OURS) {
      const backend = new PostgresBackend(pool(), { tableName: `fl_${algorithm.replace('-', '_')}` })
      await backend.ready()
      closers.push(() => backend.close())
      const limiter = new FastLimit({ backend, algorithm })
      const rules = limiter.rules({ limit: LIMIT, window: '1m' })
      if (algorithm === 'gcra') gcra = rules.rules[0] as BucketConfig
      cases.push({
        name: `fastlimit ${algorithm}`,
        kind: 'fastlimit',
        call: rotating(async (k) => (await limiter.check(k, rules)).reason === 'ok'),
      })
    }
    {
      // The same durability as the peer and the floor (the server's synchronous_commit: a WAL flush per commit).
      const backend = new PostgresBackend(pool(), { tableName: 'fl_gcra_durable', durable: true })
      await backend.ready()
      closers.push(() => backend.close())
      const limiter = new FastLimit({ backend })
      const rules = limiter.rules({ limit: LIMIT, window: '1m' })
      cases.push({
        name: 'fastlimit gcra, durable: true',
        kind: 'fastlimit',
        call: rotating(async (k) => (await limiter.check(k, rules)).reason === 'ok'),
        note: 'a WAL flush per commit, like the peer',
      })
    }
    if (gcra) {
      const backend = new PostgresBackend(pool(), { tableName: 'fl_backend_only' })
      await backend.ready()
      closers.push(() => backend.close())
      const rule = gcra
      cases.push({
        name: 'PostgresBackend.checkAndIncrement, gcra (no FastLimit)',
        kind: 'fastlimit',
        call: rotating(async (k) => (await backend.checkAndIncrement(`fl:{${k}}`, rule, 1)).allowed),
        note: 'diagnostic',
      })
    }

    // rate-limiter-flexible: RateLimiterPostgres on a pg.Pool, as its docs show (one prepared UPSERT per call).
    {
      const rlf = await rlfReady({
        storeClient: pool(),
        storeType: 'pool',
        tableName: 'rlf_limits',
        points: LIMIT,
        duration: WINDOW_MS / 1000,
        clearExpiredByTimeout: false,
      })
      cases.push({
        name: 'rate-limiter-flexible RateLimiterPostgres',
        kind: 'peer',
        call: rotating((k) =>
          rlf.consume(k).then(
            () => true,
            () => false,
          ),
        ),
      })
    }

    // The floor: one prepared UPSERT of a counter through pool.query (one round trip, no transaction).
    {
      const p = pool()
      await p.query(
        'CREATE TABLE counters (key text PRIMARY KEY, count bigint NOT NULL, expires_at bigint NOT NULL)',
      )
      cases.push({
        name: 'bare prepared UPSERT (pool.query)',
        kind: 'floor',
        call: rotating(async (k) => {
          const r = await p.query({
            name: 'floor-upsert',
            text:
              'INSERT INTO counters (key, count, expires_at) VALUES ($1, 1, $2) ' +
              'ON CONFLICT (key) DO UPDATE SET count = counters.count + 1 RETURNING count',
            values: [k, Date.now() + WINDOW_MS],
          })
          return Number(r.rows[0]?.count) <= LIMIT
        }),
      })
    }

    // Warm up: every key once per case (the first call inserts its row; the slices measure updates).
    progress.update({ case: 'warming up', done: 0, total: rounds + 1 })
    for (const c of cases) await burst(c.call, { inFlight: 64, maxOps: KEYS, maxMs: quick ? 8000 : 20_000 })

    const samples = new Map<string, { ops: number[]; unexpected: number }>()
    const slot = (c: PgCase, inFlight: number) => {
      const id = `${c.name}@${inFlight}`
      const m = samples.get(id) ?? { ops: [], unexpected: 0 }
      samples.set(id, m)
      return m
    }
    for (let r = 0; r < rounds; r++) {
      progress.update({ round: r + 1, rounds, done: r + 1, total: rounds + 1 })
      for (const inFlight of IN_FLIGHT) {
        for (const c of rotate(cases, r)) {
          const b = await burst(c.call, { inFlight, maxOps: 5_000_000, maxMs: sliceMs })
          const m = slot(c, inFlight)
          m.ops.push(b.ops / b.seconds)
          m.unexpected += b.unexpected
        }
      }
    }
    const results = new Map<string, { opsPerSec: Stat; unexpected: number }>(
      [...samples].map(([id, m]) => [id, { opsPerSec: stat(m.ops), unexpected: m.unexpected }]),
    )
    return report(cases, results, { rounds, sliceMs, version })
  } finally {
    for (const close of closers.reverse()) await close().catch(() => undefined)
    for (const p of pools) await p.end().catch(() => undefined)
    await db.drop().catch(() => undefined)
  }
}

function report(
  cases: PgCase[],
  results: Map<string, { opsPerSec: Stat; unexpected: number }>,
  meta: { rounds: number; sliceMs: number; version: string },
): Section {
  const get = (c: PgCase, n: number) =>
    results.get(`${c.name}@${n}`) as { opsPerSec: Stat; unexpected: number }
  const rlf = cases.find((c) => c.kind === 'peer')
  const floor = cases.find((c) => c.kind === 'floor')
  const body = [
    `PostgreSQL ${meta.version} on this machine (loopback TCP), a database created for the run. Each operation is one`,
    'awaited decision for one of 10,000 rotating identities (each touched once before the measurement, so the',
    'slices measure an existing row read and rewritten), 1,000,000 per minute (never reached). Every case has its',
    `own pg.Pool of ${POOL_SIZE} connections (pg's default) and its own table. ${meta.rounds} rounds of ${meta.sliceMs} ms slices per`,
    'case and concurrency, round-robin, the order rotating each round.',
    '',
    '- `fastlimit <algorithm>`: `FastLimit.check(identity, rule)` on `new PostgresBackend(pool)` (its defaults: the',
    "  database's clock, `durable: false`): one `READ COMMITTED` transaction per decision in two round trips (`BEGIN`,",
    '  the deadline as `lock_timeout`/`statement_timeout`, `synchronous_commit = off`, a placeholder `INSERT ... ON',
    '  CONFLICT DO NOTHING`, `SELECT ... FOR UPDATE`, the clock; then the core algorithm in the process and',
    "  `UPDATE ...; COMMIT`, or `ROLLBACK`). The `durable: true` row keeps the server's `synchronous_commit` (a WAL",
    '  flush per commit), as the peer and the floor do.',
    "- `rate-limiter-flexible`: `RateLimiterPostgres.consume` on a pg.Pool (`storeType: 'pool'`): one prepared",
    "  `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` per call, a fixed window on the app's clock.",
    '- the floor: one prepared `INSERT ... ON CONFLICT DO UPDATE SET count = count + 1 RETURNING count`',
    '  through `pool.query`.',
    '',
  ]
  for (const n of IN_FLIGHT) {
    body.push(`### ${n} in flight`, '')
    body.push(
      table(
        [
          'case',
          'decisions/s, median (min–max)',
          'vs rate-limiter-flexible',
          'vs bare UPSERT',
          'unexpected',
          'note',
        ],
        cases.map((c) => [
          c.name,
          fmtStat(get(c, n).opsPerSec),
          rlf ? ratio(get(c, n).opsPerSec.median, get(rlf, n).opsPerSec.median) : '—',
          floor ? ratio(get(c, n).opsPerSec.median, get(floor, n).opsPerSec.median) : '—',
          String(get(c, n).unexpected),
          c.note ?? '',
        ]),
      ),
      '',
    )
  }
  const headlines: Headline[] = []
  for (const [name, label] of [
    ['fastlimit gcra', 'postgres gcra'],
    ['fastlimit gcra, durable: true', 'postgres gcra durable'],
  ] as const) {
    const ours = cases.find((c) => c.name === name)
    if (!ours || !rlf) continue
    for (const n of IN_FLIGHT) {
      headlines.push({
        label: `${label} vs RLF RateLimiterPostgres (${n} in flight)`,
        ratio: get(ours, n).opsPerSec.median / get(rlf, n).opsPerSec.median,
        detail: `${fmtOps(get(ours, n).opsPerSec.median)} vs ${fmtOps(get(rlf, n).opsPerSec.median)} decisions/s`,
      })
    }
  }
  return { title: 'PostgreSQL', body: body.join('\n'), headlines }
}
