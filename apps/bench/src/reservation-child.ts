// The cases of the reservation section, in a process of its own:
//   node --import tsx src/reservation-child.ts <backend> all pair <warmup ms> <ms per case> [where]
//     -> {"check": ops/s, "reserve-settle": ops/s, "reserve-equal": ops/s}, the cases run in alternating
//        batches, so that a machine's changing load weighs on each alike
//   node --import tsx src/reservation-child.ts <backend> <case> count <n> [_ where]     (under callgrind)
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

const opOf = (name: string): (() => Promise<unknown>) =>
  name === 'check'
    ? () => limiter.check(keys[i++ % KEYS] as string, rules, { cost: 2 })
    : name === 'reserve-settle'
      ? async () => (await limiter.reserve(keys[i++ % KEYS] as string, rules, { cost: 2 })).settle(1)
      : name === 'reserve-equal'
        ? async () => (await limiter.reserve(keys[i++ % KEYS] as string, rules, { cost: 2 })).settle(2)
        : () => {
            throw new Error(`unknown case ${name}`)
          }

async function run(op: () => Promise<unknown>, n: number): Promise<void> {
  for (let j = 0; j < n; j++) await op()
}

const CASES = ['check', 'reserve-settle', 'reserve-equal'] as const

/** Alternating batches of every case until each has run `ms`; operations per second of each. */
async function pair(ms: number): Promise<Record<string, number>> {
  const time = new Map<string, number>(CASES.map((c) => [c, 0]))
  const count = new Map<string, number>(CASES.map((c) => [c, 0]))
  let batch = 8
  while ((time.get('check') as number) < ms) {
    for (const c of CASES) {
      const t0 = performance.now()
      await run(opOf(c), batch)
      time.set(c, (time.get(c) as number) + performance.now() - t0)
      count.set(c, (count.get(c) as number) + batch)
    }
    // Batches of about 20 ms: long enough to time, short enough to alternate often.
    if (((time.get('check') as number) / (count.get('check') as number)) * batch < 20) batch *= 2
  }
  return Object.fromEntries(
    CASES.map((c) => [c, (count.get(c) as number) / ((time.get(c) as number) / 1000)]),
  )
}

if (how === 'count') {
  // Under callgrind: a fixed warm-up, then n operations; the caller subtracts two runs of different n.
  await run(opOf(name), 50_000)
  await run(opOf(name), Number(a))
} else {
  await pair(Number(a))
  console.log(JSON.stringify(await pair(Number(b))))
}
await close()
