// One case of the delay-mode section, in a process of its own: the Express middleware on plain request
// objects shaped like Express's (as packages/express/test/micro.ts), memory backend, every request admitted.
//   node --import tsx src/delay-child.ts <case> time <warmup ms> <slice ms>   -> {"opsPerSec": n}
//   node --import tsx src/delay-child.ts <case> count <n>                     (under callgrind)
// Cases: 'enforce' (the default mode), 'delay' (mode: 'delay', maxDelayMs: 5000).
import { rateLimit } from '@fastlimit/express'

const [name = 'enforce', how = 'time', a = '300', b = '200'] = process.argv.slice(2)
if (name !== 'enforce' && name !== 'delay') throw new Error(`unknown case ${name}`)
// A huge limit: every request is admitted, so delay mode never holds one.
const rules = '1000000000/min'
const middleware =
  name === 'delay' ? rateLimit({ rules, mode: 'delay', maxDelayMs: 5000 }) : rateLimit({ rules })
const sockets = Array.from({ length: 256 }, (_, i) => ({ remoteAddress: `203.0.113.${i}` }))
const res = { setHeader: (_name: string, _value: string) => undefined, statusCode: 200, end: () => undefined }

let i = 0
const once = (): Promise<void> =>
  new Promise((resolve) =>
    middleware({ socket: sockets[i++ & 255], headers: {}, method: 'GET' } as never, res as never, () =>
      resolve(),
    ),
  )

async function run(n: number): Promise<void> {
  for (let j = 0; j < n; j++) await once()
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
  // Under callgrind: a fixed warm-up, then n requests; the caller subtracts two runs of different n.
  await run(50_000)
  await run(Number(a))
} else {
  await timed(Number(a))
  console.log(JSON.stringify({ opsPerSec: await timed(Number(b)) }))
}
