// One case of the reservation section, in a process of its own:
//   node --import tsx src/reservation-child.ts <backend> <case> time <warmup ms> <slice ms> [where]  -> {"opsPerSec": n}
//   node --import tsx src/reservation-child.ts memory <case> count <n>                            (under callgrind)
// Backends: 'memory', 'sqlite' (where: a file path), 'postgres' (where: a connection string).
// Cases, each on 10,000 rotating keys with a gcra rule never reached:
//   'check'          limiter.check(key, rules, { cost: 2 })
//   'reserve-settle' limiter.reserve(key, rules, { cost: 2 }), then settle(1): a refund (one adjust call)
//   'reserve-equal'  the same, settled at the reserved cost: no store call (the reservation's own cost)
import { type Backend, FastLimit } from '@fastlimit/core'

const [backendName = 'memory', name = 'check', how = 'time', a = '300', b = '200', where = ''] =
  process.argv.slice(2)

async function makeBackend(): Promise<{ backend: Backend; close: () => Promise<void> }> {
  if (backendName === 'memory') {
    const { MemoryBackend } = await import('@fastlimit/core')
    const backend = new MemoryBackend()
    return { backend, close: () => backend.close() }
  }
  if (backendName === 'sqlite') {
    const { SQLiteBackend } = await import('@fastlimit/sqlite')
    const backend = new SQLiteBackend(where, { cleanupIntervalMs: 0 })
    return { backend, close: () => backend.close() }
  }
  if (backendName === 'postgres') {
    const { PostgresBackend } = await import('@fastlimit/postgres')
    const backend = new PostgresBackend(where, { cleanupIntervalMs: 0, poolSize: 2 })
    await backend.ready()
    return { backend, close: () => backend.close() }
  }
  throw new Error(`unknown backend ${backendName}`)
}

const { backend, close } = await makeBackend()
const limiter = new FastLimit({ backend, algorithm: 'gcra' })
// A huge limit: every call is admitted.
const rules = limiter.rules({ limit: 1_000_000_000, window: '1m' })
const KEYS = 10_000
const keys = Array.from({ length: KEYS }, (_, i) => `user-${i}`)
let i = 0

const op: () => Promise<unknown> =
  name === 'check'
    ? () => limiter.check(keys[i++ % KEYS] as string, rules, { cost: 2 })
    : name === 'reserve-settle'
      ? async () => (await limiter.reserve(keys[i++ % KEYS] as string, rules, { cost: 2 })).settle(1)
      : name === 'reserve-equal'
        ? async () => (await limiter.reserve(keys[i++ % KEYS] as string, rules, { cost: 2 })).settle(2)
        : () => {
            throw new Error(`unknown case ${name}`)
          }

async function run(n: number): Promise<void> {
  for (let j = 0; j < n; j++) await op()
}

async function timed(ms: number): Promise<number> {
  let batch = 16
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
  // Under callgrind: a fixed warm-up, then n operations; the caller subtracts two runs of different n.
  await run(50_000)
  await run(Number(a))
} else {
  await timed(Number(a))
  console.log(JSON.stringify({ opsPerSec: await timed(Number(b)) }))
}
await close()
