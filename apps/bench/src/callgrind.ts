// Instructions per operation under valgrind's callgrind, which the load of a shared machine does not move.
// A case's child script is bundled once per run (esbuild: the workspace's sources inlined, every other
// package left to Node by its resolved path), then run twice under callgrind after the same warm-up: with N
// measured operations and with 0. (I(N) - I(0)) / N removes start-up, loading and the warm-up; V8's
// compilation and GC decisions still move one difference by a few percent, so a case is the median of
// several such pairs.
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { build, type Plugin } from 'esbuild'
import { type Stat, stat } from './harness'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..')
// One directory per run (runs may overlap); imports of packages are absolute paths, so any place works.
const outDir = path.join(os.tmpdir(), `fastlimit-bench-callgrind-${process.pid}`)

function onPath(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0
}

/** Whether `valgrind` is on the PATH. */
export function hasValgrind(): boolean {
  return onPath('valgrind')
}

/**
 * Makes valgrind available: already there, or installed with apt-get when running as root on a system
 * that has it. Returns `undefined` when valgrind can be used, else what the user should do.
 */
export function ensureValgrind(): string | undefined {
  if (hasValgrind()) return undefined
  const root = process.getuid?.() === 0
  if (root && onPath('apt-get')) {
    console.log('[bench] valgrind is missing: installing it with apt-get (running as root)')
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
    const install = () =>
      spawnSync('apt-get', ['install', '-y', '--no-install-recommends', 'valgrind'], {
        stdio: 'inherit',
        env,
      })
    if (install().status !== 0) {
      spawnSync('apt-get', ['update'], { stdio: 'inherit', env })
      install()
    }
    if (hasValgrind()) return undefined
    return 'apt-get could not install valgrind: install it yourself and run again'
  }
  return [
    'valgrind is not installed, and the bench installs it only as root with apt-get. Install it and run again:',
    '  Debian/Ubuntu: sudo apt-get install valgrind    Fedora: sudo dnf install valgrind    Alpine: apk add valgrind',
    '  (valgrind runs on Linux; on macOS run the bench in a Linux container)',
  ].join('\n')
}

/**
 * Leaves every package outside the workspace to Node, imported by the path esbuild resolves it to (so a
 * dependency of a workspace package resolves even where the bench itself could not import it by name).
 */
const externalPackages: Plugin = {
  name: 'external-packages',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, async (args) => {
      if (args.pluginData === 'inner' || args.path.startsWith('@fastlimit/') || args.path.startsWith('node:'))
        return undefined
      const resolved = await b.resolve(args.path, {
        kind: args.kind,
        resolveDir: args.resolveDir,
        importer: args.importer,
        pluginData: 'inner',
      })
      if (resolved.errors.length > 0) return { errors: resolved.errors }
      if (resolved.external) return undefined
      return { path: resolved.path, external: true }
    })
  },
}

const bundles = new Map<string, Promise<string>>()

/**
 * Bundles a child script of the bench (TypeScript, the workspace's sources through their
 * `@fastlimit/source` condition) into one `.mjs` that plain Node runs, so callgrind counts neither tsx
 * nor its transforms. Bundled once per run into a temporary directory of the run's own.
 */
export function bundleChild(entry: string): Promise<string> {
  let out = bundles.get(entry)
  if (!out) {
    const name = path.basename(entry, path.extname(entry))
    const dir = path.join(outDir, name)
    const outfile = path.join(dir, `${name}.mjs`)
    out = build({
      entryPoints: [entry],
      outdir: dir,
      outExtension: { '.js': '.mjs' },
      // Dynamic imports stay lazy chunks: a process loads the adapter and the packages its case uses.
      splitting: true,
      bundle: true,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      conditions: ['@fastlimit/source'],
      plugins: [externalPackages],
      logLevel: 'silent',
    }).then(() => outfile)
    bundles.set(entry, out)
  }
  return out
}

/**
 * Instructions callgrind counts for one run of `node --single-threaded --import tsx <script> ...args`,
 * synchronously and without bundling (start-up included: subtract two runs of different length).
 */
export function tsxInstructions(script: string, args: string[], timeoutMs: number): number {
  const run = spawnSync(
    'valgrind',
    [
      '--tool=callgrind',
      '--callgrind-out-file=/dev/null',
      process.execPath,
      '--single-threaded',
      '--import',
      'tsx',
      script,
      ...args,
    ],
    { cwd: root, encoding: 'utf8', timeout: timeoutMs },
  )
  const m = /Collected\s*:\s*(\d+)/.exec(run.stderr)
  if (run.status !== 0 || !m)
    throw new Error(`callgrind of ${args.join(' ')} failed: ${run.stderr.slice(-2000)}`)
  return Number(m[1])
}

let toggle: boolean | undefined

/**
 * Instructions callgrind counts for one run of `node --single-threaded <script> ...args`. When
 * callgrind_control is on the PATH, the run starts with instrumentation off and the script switches it on
 * after loading (see callgrind-child.ts): start-up, which both runs of a pair share, then costs a third.
 */
export function instructions(script: string, args: string[]): Promise<number> {
  toggle ??= onPath('callgrind_control')
  return new Promise((resolve, reject) => {
    const child = spawn(
      'valgrind',
      [
        '--tool=callgrind',
        '--callgrind-out-file=/dev/null',
        ...(toggle ? ['--instr-atstart=no'] : []),
        process.execPath,
        '--single-threaded',
        script,
        ...args,
      ],
      {
        cwd: root,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, FASTLIMIT_CALLGRIND_TOGGLE: toggle ? '1' : '0' },
      },
    )
    let stderr = ''
    let stdout = ''
    child.stdout.on('data', (d) => {
      stdout += d
    })
    child.stderr.on('data', (d) => {
      stderr += d
    })
    const timer = setTimeout(() => child.kill('SIGKILL'), 900_000)
    child.on('close', (code) => {
      clearTimeout(timer)
      const m = /Collected\s*:\s*(\d+)/.exec(stderr)
      if (code !== 0 || !m)
        reject(
          new Error(
            `callgrind of ${path.basename(script)} ${args.join(' ')} failed (${code}): ${stdout.slice(-1000)}${stderr.slice(-2000)}`,
          ),
        )
      else resolve(Number(m[1]))
    })
  })
}

/** One case to count: `args(n)` runs the same warm-up, then `n` measured operations. */
export interface CountCase {
  id: string
  /** Shown in the progress line. */
  label: string
  /** The child script (TypeScript; bundled before it runs). */
  entry: string
  args: (n: number) => string[]
  /** Measured operations in the long run. */
  n: number
}

/**
 * Instructions per operation of each case: `reps` pairs of runs (n and 0 operations after the same
 * warm-up), `jobs` callgrind processes at a time (instruction counts do not depend on the load), the
 * median over the pairs. `onRun` is told after every finished run.
 */
export async function countInstructions(
  cases: CountCase[],
  {
    reps,
    jobs,
    onRun,
  }: { reps: number; jobs: number; onRun?: (done: number, total: number, label: string) => void },
): Promise<Map<string, Stat>> {
  const scripts = new Map<string, string>()
  for (const c of cases) scripts.set(c.id, await bundleChild(c.entry))
  const runs: Array<{ c: CountCase; rep: number; n: number }> = []
  for (let rep = 0; rep < reps; rep++)
    for (const c of cases) for (const n of [c.n, 0]) runs.push({ c, rep, n })
  const counts = new Map<string, number>()
  let next = 0
  let done = 0
  const worker = async () => {
    for (;;) {
      const run = runs[next++]
      if (!run) return
      const count = await instructions(scripts.get(run.c.id) as string, run.c.args(run.n))
      counts.set(`${run.c.id}|${run.rep}|${run.n}`, count)
      onRun?.(++done, runs.length, run.c.label)
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, jobs) }, worker))
  const out = new Map<string, Stat>()
  for (const c of cases) {
    const perOp: number[] = []
    for (let rep = 0; rep < reps; rep++) {
      const long = counts.get(`${c.id}|${rep}|${c.n}`) as number
      const empty = counts.get(`${c.id}|${rep}|0`) as number
      perOp.push((long - empty) / c.n)
      // More instructions with 0 operations than with N: one run did extra work the other did not (a GC or
      // a compilation at another moment); the median of several pairs outvotes it, one pair cannot.
      if (long <= empty)
        console.log(`[bench] callgrind: ${c.label}, pair ${rep + 1}: N ops counted fewer instructions than 0`)
    }
    out.set(c.id, stat(perOp))
  }
  return out
}

/** Removes the bundles of this run. */
export function cleanBundles(): void {
  fs.rmSync(outDir, { recursive: true, force: true })
}

/** An instruction count as the tables print it (thousands separated). */
export function fmtIns(n: number): string {
  return Math.round(n).toLocaleString('en-US')
}
