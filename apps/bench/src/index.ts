// `pnpm bench [--quick] [--only=memory,heap,redis,sqlite,postgres,http,outbound,otel,bundle,delay,reservation,local-tier,lease]`: measures fastlimit beside the
// libraries users would otherwise pick, in one run, and writes RESULTS.md and chart.svg.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { bundleSection } from './bundle-section'
import { delaySection } from './delay-section'
import { fmtOps, fmtStat, type Measured, runJsonChild, stat } from './harness'
import { httpSection } from './http-section'
import { leaseSection } from './lease-section'
import { localTierSection } from './local-tier-section'
import { DENIED, memoryCases, ROTATING } from './memory'
import { otelSection } from './otel-section'
import { outboundSection } from './outbound-section'
import { postgresSection } from './postgres-section'
import { redisSection } from './redis-section'
import { chart, type Headline, markdown, ratio, type Section, table } from './report'
import { reservationSection } from './reservation-section'
import { sqliteSection } from './sqlite-section'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..')
const args = process.argv.slice(2)
const quick = args.includes('--quick')
const only = args
  .find((a) => a.startsWith('--only='))
  ?.slice('--only='.length)
  .split(',')
const wants = (name: string) => only === undefined || only.includes(name)
const started = Date.now()

function find(results: Measured[], group: string, name: string): Measured {
  const r = results.find((m) => m.group === group && m.name === name)
  if (!r) throw new Error(`no result for ${name} in ${group}`)
  return r
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
    for (const c of cases) {
      const { opsPerSec } = runJsonChild<{ opsPerSec: number }>(
        path.join(here, 'memory-child.ts'),
        [c.id, quick ? '100' : '400', quick ? '60' : '250'],
        { cwd: root, timeout: 60_000 },
        `case ${c.id} failed`,
      )
      samples.get(c.id)?.push(opsPerSec)
    }
    process.stdout.write(`  round ${r + 1}/${rounds}\r`)
  }
  process.stdout.write('\n')
  const results: Measured[] = cases.map((c) => ({
    name: c.name,
    group: c.group,
    kind: c.kind,
    opsPerSec: stat(samples.get(c.id) as number[]),
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
  for (const group of groups) {
    const rows = results.filter((r) => r.group === group)
    const rlf = rows.find((r) => r.name.startsWith('rate-limiter-flexible'))
    const floor = rows.find((r) => r.kind === 'floor')
    body.push(`### ${group}`, '')
    body.push(
      table(
        ['case', 'ops/s, median (min–max)', 'vs rate-limiter-flexible', 'vs Map floor'],
        rows.map((r) => [
          r.name,
          fmtStat(r.opsPerSec),
          rlf ? ratio(r.opsPerSec.median, rlf.opsPerSec.median) : '—',
          floor ? ratio(r.opsPerSec.median, floor.opsPerSec.median) : '—',
        ]),
      ),
      '',
    )
  }
  const rot = ROTATING
  const denied = DENIED
  const headlines: Headline[] = []
  for (const alg of ['gcra', 'fixed-window']) {
    const ours = find(results, rot, `fastlimit ${alg}`).opsPerSec.median
    headlines.push({
      label: `memory ${alg} vs RLF consume (rotating)`,
      ratio: ours / find(results, rot, 'rate-limiter-flexible consume').opsPerSec.median,
      target: 2.5,
      detail: `${fmtOps(ours)} ops/s`,
    })
    headlines.push({
      label: `memory ${alg} vs Map floor (rotating)`,
      ratio: ours / find(results, rot, 'Map fixed-window floor').opsPerSec.median,
      target: 0.8,
      detail: `floor ${fmtOps(find(results, rot, 'Map fixed-window floor').opsPerSec.median)} ops/s`,
    })
  }
  const oursDenied = find(results, denied, 'fastlimit gcra').opsPerSec.median
  headlines.push({
    label: 'memory gcra denied vs RLF denied',
    ratio: oursDenied / find(results, denied, 'rate-limiter-flexible consume').opsPerSec.median,
    target: 5,
    detail: `${fmtOps(oursDenied)} ops/s`,
  })
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
        ratio: rlf / ours,
        detail: `${ours.toFixed(0)} vs ${rlf.toFixed(0)} bytes`,
      },
    ],
  }
}

// Each section runs on its own (one `--only=` name each), in this order.
const registry: Array<[string, () => Promise<Section> | Section]> = [
  ['memory', memorySection],
  ['heap', heapSection],
  ['redis', () => redisSection({ quick })],
  ['sqlite', () => sqliteSection({ quick })],
  ['postgres', () => postgresSection({ quick })],
  ['http', () => httpSection({ quick })],
  ['outbound', () => outboundSection({ quick })],
  ['otel', () => otelSection({ quick })],
  ['bundle', bundleSection],
  ['delay', () => delaySection({ quick })],
  ['reservation', () => reservationSection({ quick })],
  ['local-tier', () => localTierSection({ quick })],
  ['lease', () => leaseSection({ quick })],
]
const sections: Section[] = []
for (const [name, run] of registry) if (wants(name)) sections.push(await run())

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
