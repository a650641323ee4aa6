// One case of the OTel overhead section, in a process of its own:
//   node --import tsx src/otel-child.ts <case> time <warmup ms> <slice ms>   -> {"opsPerSec": n}
//   node otel-child.mjs <case> count <n>                                     (bundled, under callgrind)
// Cases: 'plain' (no listener), 'instrument' (the defaults), 'instrument-sync' ({ syncCalls: true }),
// 'decision-listener' (one empty 'decision' listener: what core's event delivery alone costs).
import { FastLimit } from '@fastlimit/core'
import { instrument } from '@fastlimit/otel'
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics'
import { instrumentationOn } from './callgrind-child'

const [name = 'plain', how = 'time', a = '300', b = '200'] = process.argv.slice(2)
const limiter = new FastLimit({ algorithm: 'gcra' })
// A huge limit: every check is admitted, as in the memory section's rotating case.
const rules = limiter.rules({ limit: 1_000_000_000, window: '1m' })
// A real SDK pipeline whose reader exports once an hour: recording is measured, exporting is not.
const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 })
const meterProvider = new MeterProvider({ readers: [reader] })
if (name === 'instrument') instrument(limiter, { meterProvider })
else if (name === 'instrument-sync') instrument(limiter, { meterProvider, syncCalls: true })
else if (name === 'decision-listener') {
  const seen = { n: 0 }
  limiter.on('decision', () => {
    seen.n++
  })
} else if (name !== 'plain') throw new Error(`unknown case ${name}`)

const KEYS = 10_000
const keys = Array.from({ length: KEYS }, (_, i) => `user-${i}`)
let i = 0
async function run(n: number): Promise<void> {
  for (let j = 0; j < n; j++) await limiter.check(keys[i++ % KEYS] as string, rules)
}

async function timed(ms: number): Promise<number> {
  let batch = 1000
  let ops = 0
  const start = performance.now()
  for (;;) {
    const t0 = performance.now()
    await run(batch)
    ops += batch
    const t1 = performance.now()
    if (t1 - start >= ms) return ops / ((t1 - start) / 1000)
    if (t1 - t0 < 2) batch *= 2
  }
}

if (how === 'count') {
  // Under callgrind: a fixed warm-up, then n checks; the caller subtracts the run with n = 0.
  await run(50_000)
  instrumentationOn()
  await run(Number(a))
} else {
  await timed(Number(a))
  console.log(JSON.stringify({ opsPerSec: await timed(Number(b)) }))
}
await meterProvider.shutdown()
