// Instructions per request of the in-process HTTP variants alone, without the wall-clock parts of the http
// section (which come first there and take long on a loaded machine):
//   pnpm --filter @fastlimit/bench exec tsx src/http-instructions.ts [--frameworks=express,hono] [--variants=bare,fastlimit,peer] [--reps=1] [--jobs=2] [--full]
// Each variant runs in a process of its own under callgrind (see http-inproc.ts): a warm-up, then N requests
// or none; the difference divided by N is one sample. Prints each variant's median and the overheads over bare.
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { type CountCase, cleanBundles, countInstructions, ensureValgrind, fmtIns } from './callgrind'

const here = path.dirname(fileURLToPath(import.meta.url))
const args = process.argv.slice(2)
const opt = (name: string): string | undefined =>
  args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const frameworks = (opt('frameworks') ?? 'express,hono,koa,fastify,nestjs').split(',')
const variants = (opt('variants') ?? 'bare,fastlimit,peer').split(',')
const reps = Number(opt('reps') ?? 1)
const jobs = Number(opt('jobs') ?? 2)
// The sizes of the http section: --quick's unless --full.
const full = args.includes('--full')
const warm = full ? 10_000 : 5000
const n = full ? 3000 : 2000

const missing = ensureValgrind()
if (missing !== undefined) {
  console.error(missing)
  process.exit(1)
}
const cases: CountCase[] = frameworks.flatMap((f) =>
  variants.map((mode) => ({
    id: `${f}-${mode}`,
    label: `${f} ${mode}`,
    entry: path.join(here, 'http-inproc.ts'),
    n,
    args: (count: number) => [f, 'count', mode, String(count), String(warm)],
  })),
)
console.log(
  `[bench] HTTP in process, instructions per request: ${n} and 0 requests after ${warm}, ${reps} pair(s), ${jobs} at a time`,
)
const ins = await countInstructions(cases, {
  reps,
  jobs,
  onRun: (done, total, label) => console.log(`[bench] ${done}/${total} ${label}`),
})
cleanBundles()
console.log('| framework | variant | instructions/request, median (each pair) | over bare |')
console.log('| --- | --- | --- | --- |')
for (const f of frameworks) {
  const bare = ins.get(`${f}-bare`)?.median
  for (const mode of variants) {
    const s = ins.get(`${f}-${mode}`)
    if (s === undefined) continue
    const over = bare === undefined || mode === 'bare' ? '—' : fmtIns(s.median - bare)
    const pairs = s.samples.length > 1 ? ` (${s.samples.map(fmtIns).join(', ')})` : ''
    console.log(`| ${f} | ${mode} | ${fmtIns(s.median)}${pairs} | ${over} |`)
  }
}
