// The lease section: what a concurrency lease (limiter.acquire, then release) costs beside a plain
// limiter.check, on MemoryBackend and on RedisBackend (a redis-server this section starts on a free
// loopback port). Each case runs in a process of its own per round, round-robin; on memory also as
// instructions per operation under callgrind (two runs of different length subtracted).

import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startStandalone } from '../../../packages/redis/test/servers'
import { hasValgrind, tsxInstructions } from './callgrind'
import { fmtOps, fmtStat, rotate, runJsonChild, type Stat, stat } from './harness'
import { type Headline, type Section, table } from './report'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..')
const child = path.join(here, 'lease-child.ts')

const CASES = [
  { id: 'check', name: 'check (one rule)' },
  { id: 'acquire-release', name: 'acquire + release (limit 20)' },
] as const
const BACKENDS = ['memory', 'redis'] as const

/** Instructions callgrind counts for `n` operations of a memory case (plus start-up and warm-up). */
function instructions(id: string, n: number): number {
  return tsxInstructions(child, ['memory', id, 'count', String(n)], 900_000)
}

export async function leaseSection({ quick }: { quick: boolean }): Promise<Section> {
  const rounds = quick ? 3 : 7
  const warm = quick ? '150' : '300'
  const sliceMs = quick ? '200' : '600'
  console.log(`[bench] lease: ${rounds} rounds per case and backend, one process per case and round`)
  const server = await startStandalone()
  const samples = new Map<string, number[]>()
  try {
    for (let r = 0; r < rounds; r++) {
      for (const backend of BACKENDS) {
        for (const c of rotate(CASES, r)) {
          const { opsPerSec } = runJsonChild<{ opsPerSec: number }>(
            child,
            [backend, c.id, 'time', warm, sliceMs, backend === 'redis' ? server.url : ''],
            { cwd: root, timeout: 120_000 },
            `lease case ${backend}/${c.id} failed`,
          )
          const k = `${backend}/${c.id}`
          samples.set(k, [...(samples.get(k) ?? []), opsPerSec])
        }
      }
      process.stdout.write(`  round ${r + 1}/${rounds}\r`)
    }
    process.stdout.write('\n')
  } finally {
    await server.stop()
  }
  const ops = new Map<string, Stat>([...samples].map(([k, v]) => [k, stat(v)]))

  const perOp = new Map<string, number>()
  const valgrind = hasValgrind()
  if (valgrind) {
    const n = quick ? 50_000 : 100_000
    const reps = quick ? 1 : 3
    console.log(`[bench] lease: instructions per operation under callgrind (${n} and 4x that, ${reps}x)`)
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
    const lease = (ops.get(`${backend}/acquire-release`) as Stat).median
    const memIns = perOp.get('acquire-release')
    const checkIns = perOp.get('check')
    if (backend === 'memory' && memIns !== undefined && checkIns !== undefined) {
      headlines.push({
        label: 'lease: memory check / (acquire + release), instructions',
        basis: 'instructions',
        ratio: checkIns / memIns,
        detail: `${checkIns.toFixed(0)} instructions per check, ${memIns.toFixed(0)} per acquire + release`,
      })
    } else {
      headlines.push({
        label: `lease: ${backend} check / (acquire + release), ops/s`,
        ratio: lease / check,
        detail: `${fmtOps(check)} checks/s, ${fmtOps(lease)} acquire + release/s`,
      })
    }
  }
  return {
    title: 'Concurrency leases: acquire + release beside a plain check',
    body: [
      'One caller awaiting one operation after another over 10,000 rotating identities, each case a process of',
      'its own per round (round-robin). `check` is one store call (a `gcra` rule never reached);',
      '`acquire + release` is two (the lease, then its release; a limit of 20 never reached). Redis: one',
      'redis-server started by the bench on a free loopback port, `RedisBackend.fromUrl` defaults (server TIME):',
      'each lease call is one EVALSHA of its own script on a sorted set. Instructions per operation (memory) are',
      'counted by callgrind (`node --single-threaded`); "time / check" is the time per operation over a check.',
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
