// Shared by the wait tests and their worker: the worker's config and report, and the arithmetic of
// admissions per window from brackets of the store's time.
import type { RuleObject } from '@fastlimit/core'
import { startWorker, type Worker } from './workers'

/** Waits of one identity under one rule, all enqueued at once. */
export interface WaitJob {
  readonly identity: string
  readonly rule: RuleObject
  readonly n: number
}

export interface WaitWorkerConfig {
  readonly tag: string
  readonly store: 'redis' | 'sqlite' | 'memory'
  readonly url?: string
  readonly file?: string
  /** Epoch ms at which every worker enqueues its waits. */
  readonly startAt: number
  readonly jobs: readonly WaitJob[]
  /** Through `throttle()` rather than `limiter.wait()`. */
  readonly throttle?: boolean
}

export interface WaitWorkerReport {
  readonly type: 'done'
  readonly tag: string
  readonly started: number
  readonly finished: number
  readonly jobs: ReadonlyArray<{
    readonly index: number
    readonly identity: string
    /** Epoch ms of each resolution, in resolution order. */
    readonly resolvedAt: readonly number[]
    /** The call index of each resolution, in resolution order. */
    readonly order: readonly number[]
    readonly errors: readonly string[]
  }>
  /** Per storage key: [start, end] (epoch ms) of each backend call that admitted. */
  readonly brackets: Record<string, Array<[number, number]>>
}

/** The admissions of `identity` (a storage key `prefix:{identity}`) in a report. */
export function admissionsOf(report: WaitWorkerReport, identity: string): Array<[number, number]> {
  const out: Array<[number, number]> = []
  for (const [key, list] of Object.entries(report.brackets))
    if (key.endsWith(`{${identity}}`)) out.push(...list)
  return out
}

/** A worker and when it exited, measured from its report. */
export interface Finished {
  readonly report: WaitWorkerReport
  readonly exit: { code: number | null; signal: NodeJS.Signals | null }
  /** Milliseconds from its report to its exit. */
  readonly exitAfterMs: number
}

/** Starts `count` wait workers (configs from `make(i)`), all enqueuing at one instant 3 to 4 s from now. */
export async function runWaitWorkers(
  count: number,
  make: (i: number, startAt: number) => WaitWorkerConfig,
): Promise<Finished[]> {
  // Mid-second, so the bucket's first burst does not straddle a window boundary.
  const startAt = Math.ceil(Date.now() / 1000) * 1000 + 3500
  const workers: Worker[] = Array.from({ length: count }, (_, i) =>
    startWorker('wait-worker', make(i, startAt)),
  )
  await Promise.all(workers.map((w) => w.next('ready')))
  return Promise.all(
    workers.map(async (w) => {
      const report = await w.next<WaitWorkerReport>('done')
      const reportedAt = Date.now()
      const exit = await w.exited
      return { report, exit, exitAfterMs: Date.now() - reportedAt }
    }),
  )
}

/**
 * Per aligned window of `windowMs` (index = floor(t / windowMs)): how many admissions certainly fall in
 * it (their whole bracket does) and how many possibly do (their bracket touches it).
 */
export function perWindow(
  brackets: ReadonlyArray<readonly [number, number]>,
  windowMs: number,
): Map<number, { certain: number; possible: number }> {
  const out = new Map<number, { certain: number; possible: number }>()
  const at = (w: number) => {
    let c = out.get(w)
    if (c === undefined) {
      c = { certain: 0, possible: 0 }
      out.set(w, c)
    }
    return c
  }
  for (const [a, b] of brackets) {
    const first = Math.floor(a / windowMs)
    const last = Math.floor(b / windowMs)
    if (first === last) at(first).certain++
    for (let w = first; w <= last; w++) at(w).possible++
  }
  return out
}

/** The most admissions whose brackets lie wholly inside one closed interval of `d` ms. */
export function mostWithin(brackets: ReadonlyArray<readonly [number, number]>, d: number): number {
  const sorted = [...brackets].sort((x, y) => x[0] - y[0])
  let most = 0
  for (let i = 0; i < sorted.length; i++) {
    const start = (sorted[i] as [number, number])[0]
    let n = 0
    for (let j = i; j < sorted.length; j++) {
      const [a, b] = sorted[j] as [number, number]
      if (a > start + d) break
      if (b <= start + d) n++
    }
    if (n > most) most = n
  }
  return most
}

/** The widest bracket: how far the store's time of an admission is from certain. */
export function widestBracket(brackets: ReadonlyArray<readonly [number, number]>): number {
  let most = 0
  for (const [a, b] of brackets) most = Math.max(most, b - a)
  return most
}
