// The OTel section: what instrument() from @fastlimit/otel costs a FastLimit.check on MemoryBackend at
// full speed, measured two ways: operations per second (each case a process of its own per round,
// round-robin), and instructions per check under callgrind when valgrind is installed (independent of
// the machine's load; a run of N checks and one of 0 after the same warm-up are subtracted, so start-up
// and warm-up cancel out).
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { countInstructions, hasValgrind } from './callgrind'
import { fmtOps, fmtStat, runJsonChild, type Stat, stat } from './harness'
import { progress } from './progress'
import { type Headline, type Section, table } from './report'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..')
const child = path.join(here, 'otel-child.ts')

const CASES = [
  { id: 'plain', name: 'FastLimit.check, not instrumented' },
  { id: 'instrument', name: 'instrument(limiter) (defaults)' },
  { id: 'instrument-sync', name: 'instrument(limiter, { syncCalls: true })' },
  { id: 'decision-listener', name: "one empty limiter.on('decision') listener (core's delivery alone)" },
] as const

/** The time per check a case adds, from operations per second. */
function overhead(plain: number, other: number): string {
  const pct = (plain / other - 1) * 100
  return `${pct >= 0 ? '+' : ''}${pct.toFixed(1)}%`
}

export async function otelSection({ quick, jobs = 2 }: { quick: boolean; jobs?: number }): Promise<Section> {
  const rounds = quick ? 3 : 9
  console.log(`[bench] otel: ${rounds} rounds per case, one process per case and round`)
  const samples = new Map<string, number[]>(CASES.map((c) => [c.id, []]))
  for (let r = 0; r < rounds; r++) {
    for (const [i, c] of CASES.entries()) {
      progress.update({
        case: c.name,
        round: r + 1,
        rounds,
        done: r * CASES.length + i,
        total: rounds * CASES.length,
      })
      const { opsPerSec } = runJsonChild<{ opsPerSec: number }>(
        child,
        [c.id, 'time', quick ? '150' : '400', quick ? '100' : '300'],
        { cwd: root, timeout: 60_000 },
        `otel case ${c.id} failed`,
      )
      samples.get(c.id)?.push(opsPerSec)
    }
  }
  const ops = new Map<string, Stat>(CASES.map((c) => [c.id, stat(samples.get(c.id) as number[])]))
  const plainOps = (ops.get('plain') as Stat).median

  // Instructions per check: (I(n) - I(0)) / n after the same warm-up, which removes start-up and loading.
  const perCheck = new Map<string, number>()
  const valgrind = hasValgrind()
  if (valgrind) {
    // One difference varies by a few percent with V8's compilation and GC decisions: the median of three.
    const n = quick ? 50_000 : 100_000
    const reps = quick ? 1 : 3
    console.log(
      `[bench] otel: instructions per check under callgrind (${n.toLocaleString()} and 0 after 50,000, ${reps}x)`,
    )
    const counted = await countInstructions(
      CASES.map((c) => ({
        id: c.id,
        label: c.name,
        entry: child,
        n,
        args: (count: number) => [c.id, 'count', String(count)],
      })),
      {
        reps,
        jobs,
        onRun: (done, total, label) => progress.update({ case: `callgrind: ${label}`, done, total }),
      },
    )
    for (const [id, s] of counted) perCheck.set(id, s.median)
  }
  const plainIns = perCheck.get('plain')

  const rows = CASES.map((c) => {
    const s = ops.get(c.id) as Stat
    const ins = perCheck.get(c.id)
    return [
      c.name,
      fmtStat(s),
      c.id === 'plain' ? '—' : overhead(plainOps, s.median),
      ins === undefined ? 'n/a' : ins.toFixed(0),
      ins === undefined || plainIns === undefined || c.id === 'plain' ? '—' : overhead(ins, plainIns),
    ]
  })
  const headlines: Headline[] = []
  const instrumented = perCheck.get('instrument')
  if (instrumented !== undefined && plainIns !== undefined) {
    headlines.push({
      label: 'otel: check throughput with instrument() / without (instructions)',
      basis: 'instructions',
      ratio: plainIns / instrumented,
      target: 0.95,
      detail: `${plainIns.toFixed(0)} -> ${instrumented.toFixed(0)} instructions per check`,
    })
  } else {
    const s = ops.get('instrument') as Stat
    headlines.push({
      label: 'otel: check throughput with instrument() / without',
      ratio: s.median / plainOps,
      target: 0.95,
      detail: `${fmtOps(plainOps)} -> ${fmtOps(s.median)} ops/s`,
    })
  }
  return {
    title: 'OpenTelemetry overhead (MemoryBackend, gcra)',
    body: [
      '`FastLimit.check` on the default MemoryBackend, awaited one at a time over 10,000 rotating keys, every',
      'check admitted; `instrument()` records into a real SDK `MeterProvider` whose reader exports once an',
      'hour (recording is measured, exporting is not). Instructions per check are counted by callgrind',
      '(`node --single-threaded`), which the load of a shared machine does not move; operations per second are',
      'the median (min–max) over the rounds.',
      '',
      table(
        [
          'case',
          'ops/s, median (min–max)',
          'time added per check (ops/s)',
          'instructions per check',
          'overhead (instructions)',
        ],
        rows,
      ),
      '',
      'The defaults count every decision (an array increment per decision, reported at collection) and time',
      'no call on a backend with the synchronous fast path. The rest of the overhead is core delivering the',
      "`'decision'` event (its own row: an extra promise per check). `syncCalls: true` also times each",
      "synchronous call and records it in the SDK's histogram, which hashes the attributes of every",
      'measurement: more than the check itself on MemoryBackend.',
      valgrind ? '' : '\nvalgrind was not on the PATH: no instruction counts.',
    ].join('\n'),
    headlines,
  }
}
