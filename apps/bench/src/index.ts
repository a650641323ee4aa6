// `pnpm bench [--quick] [--instructions] [--jobs=2] [--reps=3] [--only=memory,heap,redis,sqlite,postgres,http,outbound,otel,bundle,delay,reservation,local-tier,lease]`:
// measures fastlimit beside the libraries users would otherwise pick, in one run, and writes RESULTS.md and
// chart.svg. `--instructions` adds callgrind's instructions per operation to the in-process cases (memory,
// HTTP in process), `--jobs` callgrind processes at a time, `--reps` pairs of runs per case (median).
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { bundleSection } from './bundle-section'
import { type CountCase, cleanBundles, countInstructions, ensureValgrind, fmtIns } from './callgrind'
import { delaySection } from './delay-section'
import { fmtOps, fmtStat, type Measured, runJsonChild, type Stat, stat } from './harness'
import { httpSection } from './http-section'
import { leaseSection } from './lease-section'
import { localTierSection } from './local-tier-section'
import { DENIED, memoryCases, ROTATING } from './memory'
import { otelSection } from './otel-section'
import { outboundSection } from './outbound-section'
import { postgresSection } from './postgres-section'
import { type PlannedSection, progress } from './progress'
import { redisSection } from './redis-section'
import { chart, type Headline, markdown, overlaps, ratio, type Section, table } from './report'
import { reservationSection } from './reservation-section'
import { sqliteSection } from './sqlite-section'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..')
const args = process.argv.slice(2)
const quick = args.includes('--quick')
const counting = args.includes('--instructions')
const jobs = Number(args.find((a) => a.startsWith('--jobs='))?.slice('--jobs='.length) ?? 2)
const repsArg = args.find((a) => a.startsWith('--reps='))?.slice('--reps='.length)
const only = args
  .find((a) => a.startsWith('--only='))
  ?.slice('--only='.length)
  .split(',')
const wants = (name: string) => only === undefined || only.includes(name)
const started = Date.now()

function find<T extends Measured>(results: T[], group: string, name: string): T {
  const r = results.find((m) => m.group === group && m.name === name)
  if (!r) throw new Error(`no result for ${name} in ${group}`)
  return r
}

/** Instruction-count settings of a run: pairs of runs per case, and the warm-up and N of each kind. */
const REPS = repsArg === undefined ? (quick ? 1 : 3) : Math.max(1, Number(repsArg))
const MEMORY_WARM = 20_000
const MEMORY_N = quick ? 20_000 : 40_000

/**
 * A headline ratio (higher is better for fastlimit) from the wall clock, or from instructions when they were
 * counted and the wall clock's (min–max) ranges overlap: then the clock is noisier than the effect.
 */
function pickHeadline(
  h: { label: string; target?: number },
  wall: { ours: Stat; other: Stat; detail: string },
  ins: { ours: Stat | undefined; other: Stat | undefined; unit: string },
): Headline {
  const wallRatio = wall.ours.median / wall.other.median
  // A median at or below zero is a failed count (see countInstructions): it decides nothing.
  const counted = ins.ours && ins.other && ins.ours.median > 0 && ins.other.median > 0
  if (counted && ins.ours && ins.other && overlaps(wall.ours, wall.other)) {
    return {
      ...h,
      ratio: ins.other.median / ins.ours.median,
      basis: 'instructions',
      detail: `${fmtIns(ins.ours.median)} vs ${fmtIns(ins.other.median)} instructions per ${ins.unit}; wall clock ${wallRatio.toFixed(2)}x, within its noise`,
    }
  }
  const insNote =
    counted && ins.ours && ins.other
      ? `; ${(ins.other.median / ins.ours.median).toFixed(2)}x in instructions`
      : ''
  return { ...h, ratio: wallRatio, basis: 'wall clock', detail: `${wall.detail}${insNote}` }
}

async function memorySection(): Promise<Section> {
  console.log('[bench] in-process: FastLimit.check on MemoryBackend vs peers, one process per case and round')
  // The quick run measures the two algorithms of the headline (gcra, fixed-window) beside every peer.
  const cases = memoryCases().filter(
    (c) =>
      !quick || c.kind !== 'fastlimit' || c.name === 'fastlimit gcra' || c.name === 'fastlimit fixed-window',
  )
  const rounds = quick ? 2 : 7
  const samples = new Map<string, number[]>(cases.map((c) => [c.id, []]))
  for (let r = 0; r < rounds; r++) {
    for (const [i, c] of cases.entries()) {
      progress.update({
        case: `${c.name}, ${c.group}`,
        round: r + 1,
        rounds,
        done: r * cases.length + i,
        total: rounds * cases.length,
      })
      const { opsPerSec } = runJsonChild<{ opsPerSec: number }>(
        path.join(here, 'memory-child.ts'),
        [c.id, quick ? '100' : '400', quick ? '60' : '250'],
        { cwd: root, timeout: 60_000 },
        `case ${c.id} failed`,
      )
      samples.get(c.id)?.push(opsPerSec)
    }
  }
  let ins = new Map<string, Stat>()
  if (counting) {
    progress.section('memory instructions')
    console.log(
      `[bench] in-process: instructions per check under callgrind (${MEMORY_N.toLocaleString()} and 0 after ${MEMORY_WARM.toLocaleString()}, ${REPS}x, ${jobs} at a time)`,
    )
    const countCases: CountCase[] = cases.map((c) => ({
      id: c.id,
      label: `${c.name}, ${c.group}`,
      entry: path.join(here, 'memory-child.ts'),
      n: MEMORY_N,
      args: (n) => [c.id, 'count', String(MEMORY_WARM), String(n)],
    }))
    ins = await countInstructions(countCases, {
      reps: REPS,
      jobs,
      onRun: (done, total, label) => progress.update({ case: `callgrind: ${label}`, done, total }),
    })
  }
  const results: Array<Measured & { ins: Stat | undefined }> = cases.map((c) => ({
    name: c.name,
    group: c.group,
    kind: c.kind,
    opsPerSec: stat(samples.get(c.id) as number[]),
    ins: ins.get(c.id),
  }))
  const groups = [...new Set(results.map((r) => r.group))]
  const body: string[] = [
    'Each operation is one awaited call, and each case runs in a process of its own for every round (a warm-up,',
    'then the measured slice), as an app runs one limiter. `fastlimit` is `FastLimit.check(identity, rule)` on the default',
    '`MemoryBackend` (the full path: rule lookup, identity escaping, the algorithm, the store, a `Decision`);',
    "rate-limiter-flexible is `RateLimiterMemory.consume` (its denied path rejects); express-rate-limit's",
    '`MemoryStore.increment` only counts (it never decides); the floor is a plain `Map` fixed-window counter',
    'in an async function.',
    '',
  ]
  if (counting)
    body.push(
      `Instructions per operation: callgrind (\`node --single-threaded\`, each case bundled with esbuild) counts a`,
      `process that warms up with ${MEMORY_WARM.toLocaleString()} operations and then runs ${MEMORY_N.toLocaleString()} more, and one that`,
      `stops after the warm-up; the difference divided by ${MEMORY_N.toLocaleString()} is one sample, the table gives the median`,
      `(min–max) of ${REPS}. Ratios in instructions are the peer's count over ours (higher is better for fastlimit, as`,
      'with ops/s). The load of the machine does not move these counts; cache misses and branch mispredictions',
      'are not in them, so a case can do fewer instructions and still run slower (or the reverse).',
      '',
    )
  for (const group of groups) {
    const rows = results.filter((r) => r.group === group)
    const rlf = rows.find((r) => r.name.startsWith('rate-limiter-flexible'))
    const floor = rows.find((r) => r.kind === 'floor')
    body.push(`### ${group}`, '')
    const insRatio = (r: (typeof rows)[number], other: (typeof rows)[number] | undefined) =>
      r.ins && other?.ins ? ratio(other.ins.median, r.ins.median) : '—'
    body.push(
      table(
        [
          'case',
          'ops/s, median (min–max)',
          'vs rate-limiter-flexible',
          'vs Map floor',
          ...(counting
            ? ['instructions/op, median (min–max)', 'vs RLF (instructions)', 'vs floor (instructions)']
            : []),
        ],
        rows.map((r) => [
          r.name,
          fmtStat(r.opsPerSec),
          rlf ? ratio(r.opsPerSec.median, rlf.opsPerSec.median) : '—',
          floor ? ratio(r.opsPerSec.median, floor.opsPerSec.median) : '—',
          ...(counting ? [r.ins ? fmtStat(r.ins, fmtIns) : 'n/a', insRatio(r, rlf), insRatio(r, floor)] : []),
        ]),
      ),
      '',
    )
  }
  const headlines: Headline[] = []
  const oneHeadline = (label: string, target: number, group: string, ours: string, other: string) => {
    const a = find(results, group, ours)
    const b = find(results, group, other)
    headlines.push(
      pickHeadline(
        { label, target },
        {
          ours: a.opsPerSec,
          other: b.opsPerSec,
          detail: `${fmtOps(a.opsPerSec.median)} vs ${fmtOps(b.opsPerSec.median)} ops/s`,
        },
        { ours: a.ins, other: b.ins, unit: 'check' },
      ),
    )
  }
  for (const alg of ['gcra', 'fixed-window']) {
    oneHeadline(
      `memory ${alg} vs RLF consume (rotating)`,
      2.5,
      ROTATING,
      `fastlimit ${alg}`,
      'rate-limiter-flexible consume',
    )
    oneHeadline(
      `memory ${alg} vs Map floor (rotating)`,
      0.8,
      ROTATING,
      `fastlimit ${alg}`,
      'Map fixed-window floor',
    )
  }
  oneHeadline(
    'memory gcra denied vs RLF denied',
    5,
    DENIED,
    'fastlimit gcra',
    'rate-limiter-flexible consume',
  )
  return { title: 'In-process (MemoryBackend)', body: body.join('\n'), headlines }
}

function heapSection(): Section {
  const n = quick ? 100_000 : 1_000_000
  console.log(`[bench] heap bytes per key at ${n.toLocaleString()} keys`)
  const rows: string[][] = []
  const measured = new Map<string, number>()
  const cases: Array<[impl: string, shape: 'ip' | 'user', rules: 1 | 2]> = [
    ['fastlimit-gcra', 'ip', 1],
    ['fastlimit-gcra', 'user', 1],
    ['fastlimit-gcra', 'ip', 2],
    ['fastlimit-gcra', 'user', 2],
    ['fastlimit-fixed-window', 'ip', 1],
    ['rate-limiter-flexible', 'ip', 1],
    ['rate-limiter-flexible', 'user', 1],
  ]
  for (const [impl, shape, rules] of cases) {
    const r = runJsonChild<{ bytesPerKey: number; heapMB: number }>(
      path.join(here, 'heap.ts'),
      [impl, String(n), shape, String(rules)],
      { cwd: root, timeout: 300_000, nodeArgs: ['--expose-gc', '--max-old-space-size=4096'] },
      `heap measurement of ${impl} failed`,
    )
    measured.set(`${impl} ${shape} ${rules}`, r.bytesPerKey)
    rows.push([
      impl,
      shape === 'ip' ? 'IPv4 (`10.1.2.3`)' : '`user-N`',
      impl.startsWith('fastlimit') ? String(rules) : '—',
      r.bytesPerKey.toFixed(0),
      r.heapMB.toFixed(0),
    ])
  }
  const ours = measured.get('fastlimit-gcra ip 1') as number
  const rlf = measured.get('rate-limiter-flexible ip 1') as number
  return {
    title: `Heap per key (${n.toLocaleString()} keys)`,
    body: [
      `Growth of the JS heap plus ArrayBuffer memory after inserting ${n.toLocaleString()} distinct identities (which exist before`,
      'the measurement), divided by the number of keys, after full GCs, each in its own process. MemoryBackend keeps its',
      'slots in typed arrays (counted here), a second rule of a key in a second arena of the same shape; rate-limiter-flexible',
      'keeps an object and a `setTimeout` per key. Rules: 100/h, and 1000/day as the second.',
      '',
      table(['implementation', 'identities', 'rules', 'bytes per key', 'heap + array buffers (MB)'], rows),
    ].join('\n'),
    headlines: [
      {
        label: 'heap per key: RLF / fastlimit',
        basis: 'bytes',
        ratio: rlf / ours,
        detail: `${ours.toFixed(0)} vs ${rlf.toFixed(0)} bytes`,
      },
    ],
  }
}

// Each section runs on its own (one `--only=` name each), in this order, with the seconds it took on the
// 2-core machine of RESULTS.md (full run; the quick run takes about a sixth): the progress line's estimates.
const registry: Array<[string, number, () => Promise<Section> | Section]> = [
  ['memory', 190, memorySection],
  ['heap', 60, heapSection],
  ['redis', 100, () => redisSection({ quick })],
  ['sqlite', 45, () => sqliteSection({ quick })],
  ['postgres', 55, () => postgresSection({ quick })],
  ['http', 560, () => httpSection({ quick, instructions: counting ? { reps: REPS, jobs } : undefined })],
  ['outbound', 45, () => outboundSection({ quick })],
  ['otel', 70, () => otelSection({ quick, jobs })],
  ['bundle', 5, bundleSection],
  ['delay', 60, () => delaySection({ quick })],
  ['reservation', 60, () => reservationSection({ quick })],
  ['local-tier', 60, () => localTierSection({ quick })],
  ['lease', 45, () => leaseSection({ quick })],
]
if (counting) {
  const why = ensureValgrind()
  if (why !== undefined) {
    console.error(`[bench] --instructions: ${why}`)
    process.exit(1)
  }
}
// Callgrind runs (about 8 s of CPU each for a memory case, 14 for an HTTP one) at `jobs` at a time.
const memoryCount = quick ? 2 * 2 + 8 : 6 * 3 + 8
const plan: PlannedSection[] = []
for (const [name, seconds] of registry) {
  if (!wants(name)) continue
  plan.push({ name, estimateS: quick ? Math.ceil(seconds / 6) : seconds })
  if (counting && name === 'memory')
    plan.push({ name: 'memory instructions', estimateS: (memoryCount * REPS * 2 * 8) / Math.max(1, jobs) })
  if (counting && name === 'http')
    plan.push({ name: 'http instructions', estimateS: (20 * REPS * 2 * 14) / Math.max(1, jobs) })
}
progress.begin(plan)
const sections: Section[] = []
try {
  for (const [name, , run] of registry) {
    if (!wants(name)) continue
    progress.section(name)
    sections.push(await run())
  }
} finally {
  progress.end()
  cleanBundles()
}

const seconds = (Date.now() - started) / 1000
const md = markdown(sections, {
  mode: quick ? 'quick' : 'full',
  command: `pnpm bench${args.length ? ` ${args.join(' ')}` : ''}`,
  seconds,
})
const file = quick || only ? 'RESULTS.quick.md' : 'RESULTS.md'
fs.writeFileSync(path.join(root, file), md)
if (!quick && !only)
  fs.writeFileSync(path.join(root, 'chart.svg'), chart(sections.flatMap((s) => s.headlines)))
console.log(`[bench] wrote apps/bench/${file} in ${Math.round(seconds)} s`)
for (const h of sections.flatMap((s) => s.headlines)) {
  const figure = h.unresolved ? 'unresolved (within the noise)' : `${h.ratio.toFixed(2)}x`
  console.log(`  ${h.label}: ${figure}${h.target ? ` (target ${h.target}x)` : ''}`)
}
