// Shared by the reliability tests: recorded observations, heap and GC, unhandled rejections, latency figures.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import v8 from 'node:v8'
import vm from 'node:vm'

const here = path.dirname(fileURLToPath(import.meta.url))
/** The package directory (`apps/reliability`). */
export const PACKAGE_DIR = path.resolve(here, '..')
/** Where each test writes what it measured, one JSON file per test. */
export const RESULTS_DIR = path.join(PACKAGE_DIR, 'results')

/** A cell of a results table. */
export type Cell = string | number | boolean | null

/** What one test file measured: rows of one kind, turned into tables by `report.ts`. */
export interface Results {
  /** The file name under `results/`, without `.json`. */
  readonly name: string
  /** Which table of the report the rows belong to. */
  readonly kind: 'fault' | 'load' | 'hostile' | 'clock' | 'wait'
  readonly rows: Array<Record<string, Cell>>
  /** Free-form figures that do not fit a row (heap samples, percentiles). */
  readonly details?: Record<string, unknown>
}

/** Collects rows during a test file and writes them to `results/<name>.json` (call `save()` in afterAll). */
export class Recorder {
  readonly rows: Array<Record<string, Cell>> = []
  readonly details: Record<string, unknown> = {}
  constructor(
    readonly name: string,
    readonly kind: Results['kind'],
  ) {}

  add(row: Record<string, Cell>): void {
    this.rows.push(row)
  }

  save(): void {
    fs.mkdirSync(RESULTS_DIR, { recursive: true })
    const out: Results = { name: this.name, kind: this.kind, rows: this.rows, details: this.details }
    fs.writeFileSync(path.join(RESULTS_DIR, `${this.name}.json`), `${JSON.stringify(out, null, 2)}\n`)
  }
}

let gcFn: (() => void) | undefined
/** Runs a full garbage collection (exposing `gc` through V8 flags if the process started without it). */
export function gc(): void {
  if (gcFn === undefined) {
    const global = (globalThis as { gc?: () => void }).gc
    if (typeof global === 'function') gcFn = global
    else {
      v8.setFlagsFromString('--expose-gc')
      gcFn = vm.runInNewContext('gc') as () => void
    }
  }
  gcFn()
  gcFn()
}

/** Heap in use after a full collection, in MB. */
export function heapAfterGcMb(): number {
  gc()
  return process.memoryUsage().heapUsed / 1024 / 1024
}

/** Counts unhandled rejections and uncaught exceptions while installed. */
export function watchUnhandled(): { readonly seen: unknown[]; stop(): void } {
  const seen: unknown[] = []
  const onRejection = (reason: unknown) => {
    seen.push(reason)
  }
  process.on('unhandledRejection', onRejection)
  return {
    seen,
    stop: () => {
      process.off('unhandledRejection', onRejection)
    },
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** The `p`-th percentile (0 to 100) of numbers, nearest rank; 0 for none. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank] as number
}

/** Rounds to `digits` decimals, for the results files. */
export function round(value: number, digits = 1): number {
  const f = 10 ** digits
  return Math.round(value * f) / f
}

/** Counts of each value: `{ ok: 12, 'fail-open': 3 }`. */
export function tally<T>(items: readonly T[], by: (item: T) => string): Record<string, number> {
  const out: Record<string, number> = {}
  for (const item of items) {
    const k = by(item)
    out[k] = (out[k] ?? 0) + 1
  }
  return out
}

/** `{ a: 1, b: 2 }` as `a 1, b 2`, for a table cell. */
export function formatTally(counts: Record<string, number>): string {
  return Object.entries(counts)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')
}

/** Waits until `check` resolves true (polling every `everyMs`), or throws after `timeoutMs`. */
export async function waitUntil(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs: number,
  everyMs = 100,
): Promise<number> {
  const started = performance.now()
  let last: unknown
  while (performance.now() - started < timeoutMs) {
    try {
      if (await check()) return performance.now() - started
    } catch (err) {
      last = err
    }
    await sleep(everyMs)
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`,
  )
}
