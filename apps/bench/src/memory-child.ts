// Runs one in-process case in a process of its own:
//   node --import tsx src/memory-child.ts <case id> <warmup ms> <slice ms>   -> {"opsPerSec": n}
//   node memory-child.mjs <case id> count <warm-up ops> <n>                  (bundled, under callgrind)
import { instrumentationOn } from './callgrind-child'
import { memoryCases } from './memory'

const [id = '', warmText = '300', sliceText = '200', countText = '0'] = process.argv.slice(2)
const c = memoryCases().find((x) => x.id === id)
if (!c) throw new Error(`unknown case ${id}`)
const run = await c.make()

async function timed(ms: number): Promise<number> {
  // Batches of a size that takes about 5 ms, until `ms` has passed.
  let batch = 1000
  let ops = 0
  const start = process.hrtime.bigint()
  const end = start + BigInt(ms) * 1_000_000n
  for (;;) {
    const t0 = process.hrtime.bigint()
    await run(batch)
    ops += batch
    const t1 = process.hrtime.bigint()
    if (t1 >= end) return ops / (Number(t1 - start) / 1e9)
    const took = Number(t1 - t0) / 1e6
    if (took < 2) batch *= 2
  }
}

if (warmText === 'count') {
  // Under callgrind: the same warm-up (not counted), then n operations; the caller subtracts the run with n = 0.
  await run(Number(sliceText))
  instrumentationOn()
  await run(Number(countText))
} else {
  await timed(Number(warmText))
  console.log(JSON.stringify({ id, opsPerSec: await timed(Number(sliceText)) }))
}
