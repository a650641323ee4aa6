// One case of the lease section, in a process of its own:
//   node --import tsx src/lease-child.ts <backend> <case> time <warmup ms> <slice ms> [where]  -> {"opsPerSec": n}
//   node --import tsx src/lease-child.ts memory <case> count <n>                            (under callgrind)
// Backends: 'memory', 'redis' (where: a redis:// URL). Cases, each on 10,000 rotating identities:
//   'check'           limiter.check(identity, rule): one store call, a gcra rule never reached
//   'acquire-release' limiter.acquire(identity, { limit: 20 }), then release(): two store calls
import { type Backend, FastLimit } from '@fastlimit/core'

const [backendName = 'memory', name = 'check', how = 'time', a = '300', b = '200', where = ''] =
  process.argv.slice(2)

async function makeBackend(): Promise<{ backend: Backend; close: () => Promise<void> }> {
  if (backendName === 'memory') {
    const { MemoryBackend } = await import('@fastlimit/core')
    const backend = new MemoryBackend()
    return { backend, close: () => backend.close() }
  }
  if (backendName === 'redis') {
    const { RedisBackend } = await import('@fastlimit/redis')
    const backend = RedisBackend.fromUrl(where, { keyPrefix: `bench-lease-${name}:` })
    return { backend, close: () => backend.close() }
  }
  throw new Error(`unknown backend ${backendName}`)
}

const { backend, close } = await makeBackend()
const limiter = new FastLimit({ backend, algorithm: 'gcra' })
const rules = limiter.rules({ limit: 1_000_000_000, window: '1m' })
const slots = { limit: 20, leaseMs: 60_000 }
const KEYS = 10_000
const keys = Array.from({ length: KEYS }, (_, i) => `user-${i}`)
let i = 0

const op: () => Promise<unknown> =
  name === 'check'
    ? () => limiter.check(keys[i++ % KEYS] as string, rules)
    : name === 'acquire-release'
      ? async () => {
          const lease = await limiter.acquire(keys[i++ % KEYS] as string, slots)
          if (!lease.allowed) throw new Error('a lease was refused: the bench would measure refusals')
          await lease.release()
        }
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
  await run(50_000)
  await run(Number(a))
} else {
  await timed(Number(a))
  console.log(JSON.stringify({ opsPerSec: await timed(Number(b)) }))
}
await close()
