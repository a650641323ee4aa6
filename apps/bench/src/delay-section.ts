// The delay-mode section: what `mode: 'delay'` costs a request it does not hold (the Express middleware,
// MemoryBackend, every request admitted) beside the default mode, measured two ways: requests per second
// (each case a process of its own per round, round-robin) and instructions per request under callgrind when
// valgrind is installed (independent of the machine's load; two runs of different length are subtracted,
// so start-up and warm-up cancel out).

import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { hasValgrind, tsxInstructions } from './callgrind'
import { fmtStat, runJsonChild, type Stat, stat } from './harness'
import { type Headline, type Section, table } from './report'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..')
const child = path.join(here, 'delay-child.ts')

const CASES = [
  { id: 'enforce', name: "rateLimit() (mode 'enforce', the default)" },
  { id: 'delay', name: "rateLimit({ mode: 'delay', maxDelayMs: 5000 }), not holding" },
] as const

/** Instructions callgrind counts for `n` requests of a case (plus the fixed start-up and warm-up). */
function instructions(id: string, n: number): number {
  return tsxInstructions(child, [id, 'count', String(n)], 600_000)
}

function overhead(base: number, other: number): string {
  const pct = (other / base - 1) * 100
  return `${pct >= 0 ? '+' : ''}${pct.toFixed(1)}%`
}

export async function delaySection({ quick }: { quick: boolean }): Promise<Section> {
  const rounds = quick ? 3 : 9
  console.log(`[bench] delay: ${rounds} rounds per case, one process per case and round`)
  const samples = new Map<string, number[]>(CASES.map((c) => [c.id, []]))
  for (let r = 0; r < rounds; r++) {
    for (const c of CASES) {
      const { opsPerSec } = runJsonChild<{ opsPerSec: number }>(
        child,
        [c.id, 'time', quick ? '150' : '400', quick ? '100' : '300'],
        { cwd: root, timeout: 60_000 },
        `delay case ${c.id} failed`,
      )
      samples.get(c.id)?.push(opsPerSec)
    }
    process.stdout.write(`  round ${r + 1}/${rounds}\r`)
  }
  process.stdout.write('\n')
  const ops = new Map<string, Stat>(CASES.map((c) => [c.id, stat(samples.get(c.id) as number[])]))

  // Instructions per request: (I(2n) - I(n)) / n, the median of several differences (V8's compilation and
  // GC decisions move one difference by several percent).
  const perRequest = new Map<string, number>()
  if (hasValgrind()) {
    const n = quick ? 50_000 : 100_000
    const reps = quick ? 1 : 3
    console.log(`[bench] delay: instructions per request under callgrind (${n} and twice that, ${reps}x)`)
    for (const c of CASES) {
      const diffs: number[] = []
      for (let r = 0; r < reps; r++) diffs.push((instructions(c.id, 2 * n) - instructions(c.id, n)) / n)
      perRequest.set(c.id, stat(diffs).median)
    }
  }
  const baseOps = (ops.get('enforce') as Stat).median
  const baseIns = perRequest.get('enforce')
  const rows = CASES.map((c) => {
    const s = ops.get(c.id) as Stat
    const ins = perRequest.get(c.id)
    return [
      c.name,
      fmtStat(s),
      c.id === 'enforce' ? '—' : overhead(s.median, baseOps),
      ins === undefined ? 'n/a' : ins.toFixed(0),
      ins === undefined || baseIns === undefined || c.id === 'enforce' ? '—' : overhead(baseIns, ins),
    ]
  })
  const headlines: Headline[] = []
  const delayIns = perRequest.get('delay')
  if (delayIns !== undefined && baseIns !== undefined) {
    headlines.push({
      label: "delay mode: admitted-request throughput, mode 'delay' / 'enforce' (instructions)",
      basis: 'instructions',
      ratio: baseIns / delayIns,
      target: 0.95,
      detail: `${baseIns.toFixed(0)} -> ${delayIns.toFixed(0)} instructions per request`,
      unresolved: delayIns <= baseIns,
    })
  }
  return {
    title: 'Delay mode overhead on a request it does not hold (Express middleware, MemoryBackend)',
    body: [
      "The Express `rateLimit()` called on plain request objects shaped like Express's (256 client addresses,",
      'no server: the middleware alone), every request admitted, awaited one at a time. In delay mode a',
      'request of a client with nothing held takes the same check as the default mode; only a denial is held.',
      'Instructions per request are counted by callgrind (`node --single-threaded`), which the load of a',
      'shared machine does not move; requests per second are the median (min–max) over the rounds.',
      '',
      table(
        [
          'case',
          'requests/s, median (min–max)',
          'time added per request (requests/s)',
          'instructions per request',
          'overhead (instructions)',
        ],
        rows,
      ),
    ].join('\n'),
    headlines,
  }
}
