// The reservation section: what a reservation (limiter.reserve, then settle) costs beside a plain
// limiter.check, on MemoryBackend, SQLiteBackend and PostgresBackend. The cases alternate in batches in one
// process per backend and round; on memory also as instructions per operation under callgrind (two runs
// of different length subtracted, so start-up and warm-up cancel out).

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createDatabase } from '../../../packages/postgres/test/databases'
import { hasValgrind, tsxInstructions } from './callgrind'
import { fmtOps, fmtStat, rotate, runJsonChild, type Stat, stat } from './harness'
import { type Headline, type Section, table } from './report'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..')
const child = path.join(here, 'reservation-child.ts')

const CASES = [
  { id: 'check', name: 'check (cost 2)' },
  { id: 'reserve-settle', name: 'reserve (cost 2) + settle(1): one refund' },
  { id: 'reserve-equal', name: 'reserve (cost 2) + settle(2): no store call' },
] as const
const BACKENDS = ['memory', 'sqlite', 'postgres'] as const
type BackendName = (typeof BACKENDS)[number]

/** Instructions callgrind counts for `n` operations of a memory case (plus start-up and warm-up). */
function instructions(id: string, n: number): number {
  return tsxInstructions(child, ['memory', id, 'count', String(n)], 900_000)
}

export async function reservationSection({ quick }: { quick: boolean }): Promise<Section> {
  const rounds = quick ? 3 : 7
  const warm = quick ? '150' : '300'
  const sliceMs = quick ? '300' : '1500'
  console.log(`[bench] reservation: ${rounds} rounds per backend, one process per backend and round`)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-bench-reservation-'))
  const db = await createDatabase()
  const samples = new Map<string, number[]>()
  try {
    const where: Record<BackendName, (id: string) => string> = {
      memory: () => '',
      sqlite: (id) => path.join(dir, `${id}.db`),
      postgres: () => db.url,
    }
    for (let r = 0; r < rounds; r++) {
      for (const backend of rotate(BACKENDS, r)) {
        const result = runJsonChild<Record<string, number>>(
          child,
          [backend, 'all', 'pair', warm, sliceMs, where[backend](`round-${r}`)],
          { cwd: root, timeout: 300_000 },
          `reservation cases on ${backend} failed`,
        )
        for (const c of CASES) {
          const k = `${backend}/${c.id}`
          samples.set(k, [...(samples.get(k) ?? []), result[c.id] as number])
        }
      }
      process.stdout.write(`  round ${r + 1}/${rounds}\r`)
    }
    process.stdout.write('\n')
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
    await db.drop()
  }
  const ops = new Map<string, Stat>([...samples].map(([k, v]) => [k, stat(v)]))

  // Instructions per operation on memory: (I(4n) - I(n)) / 3n, the median of `reps`.
  const perOp = new Map<string, number>()
  const valgrind = hasValgrind()
  if (valgrind) {
    const n = quick ? 50_000 : 100_000
    const reps = quick ? 1 : 3
    console.log(
      `[bench] reservation: instructions per operation under callgrind (${n} and 4x that, ${reps}x)`,
    )
    for (const c of CASES) {
      const diffs: number[] = []
      for (let r = 0; r < reps; r++) diffs.push((instructions(c.id, 4 * n) - instructions(c.id, n)) / (3 * n))
      perOp.set(c.id, stat(diffs).median)
    }
  }

  const rows: string[][] = []
  const headlines: Headline[] = []
  for (const backend of BACKENDS) {
    const check = (ops.get(`${backend}/check`) as Stat).median
    for (const c of CASES) {
      const s = ops.get(`${backend}/${c.id}`) as Stat
      const ins = backend === 'memory' ? perOp.get(c.id) : undefined
      const checkIns = perOp.get('check')
      rows.push([
        backend,
        c.name,
        fmtStat(s),
        c.id === 'check' ? '1.00x' : `${(check / s.median).toFixed(2)}x`,
        ins === undefined ? '—' : ins.toFixed(0),
        ins === undefined || checkIns === undefined ? '—' : `${(ins / checkIns).toFixed(2)}x`,
      ])
    }
    const settle = (ops.get(`${backend}/reserve-settle`) as Stat).median
    const memIns = perOp.get('reserve-settle')
    const checkIns = perOp.get('check')
    if (backend === 'memory' && memIns !== undefined && checkIns !== undefined) {
      headlines.push({
        label: 'reservation: memory check / (reserve + settle), instructions',
        basis: 'instructions',
        ratio: checkIns / memIns,
        detail: `${checkIns.toFixed(0)} instructions per check, ${memIns.toFixed(0)} per reserve + settle`,
      })
    } else {
      headlines.push({
        label: `reservation: ${backend} check / (reserve + settle), ops/s`,
        ratio: settle / check,
        detail: `${fmtOps(check)} checks/s, ${fmtOps(settle)} reserve + settle/s`,
      })
    }
  }
  return {
    title: 'Reservations: reserve + settle beside a plain check',
    body: [
      'One caller awaiting one operation after another over 10,000 rotating keys, a `gcra` rule never reached;',
      'the three cases run in alternating batches of about 20 ms in one process per backend and round (so a',
      "shared machine's changing load weighs on each alike); SQLite on a WAL file in a temp directory,",
      'Postgres in a database of its own (its defaults: the server clock, two round trips per store call).',
      '`reserve + settle(1)` makes two store calls (the check, then the refund in one transaction);',
      '`settle(2)`, at the reserved cost, makes none. Instructions per operation (memory) are counted by',
      'callgrind (`node --single-threaded`); "slower" is the time (or instructions) per operation over a check.',
      '',
      table(
        [
          'backend',
          'case',
          'ops/s, median (min–max)',
          'time / check',
          'instructions per op',
          'instructions / check',
        ],
        rows,
      ),
      valgrind ? '' : '\nvalgrind was not on the PATH: no instruction counts.',
    ].join('\n'),
    headlines,
  }
}
