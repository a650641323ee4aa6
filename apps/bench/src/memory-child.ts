// Runs one in-process case for one slice and prints its operations per second:
//   node --import tsx src/memory-child.ts <case id> <warmup ms> <slice ms>
import { memoryCases } from './memory'

const [id = '', warmText = '300', sliceText = '200'] = process.argv.slice(2)
const c = memoryCases().find((x) => x.id === id)
if (!c) throw new Error(`unknown case ${id}`)
const run = c.make()

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

await timed(Number(warmText))
console.log(JSON.stringify({ id, opsPerSec: await timed(Number(sliceText)) }))
