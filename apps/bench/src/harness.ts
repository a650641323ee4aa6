// Shared by the bench sections: medians with their min–max over the rounds, the round-robin rotation,
// number formatting, and running a child script that prints its result as one JSON line.
import { spawnSync } from 'node:child_process'

export interface Stat {
  median: number
  min: number
  max: number
  samples: number[]
}

export interface Measured {
  name: string
  group: string
  /** Who it is: 'fastlimit', a peer library, or 'floor'. */
  kind: 'fastlimit' | 'peer' | 'floor'
  opsPerSec: Stat
}

export function stat(samples: number[]): Stat {
  const sorted = [...samples].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  const median =
    sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
  return { median, min: sorted[0] as number, max: sorted[sorted.length - 1] as number, samples }
}

/** `items` rotated left by `by`: round r of a round-robin starts at a different case each time. */
export function rotate<T>(items: readonly T[], by: number): T[] {
  const k = items.length === 0 ? 0 : by % items.length
  return [...items.slice(k), ...items.slice(0, k)]
}

/**
 * Runs `node [...nodeArgs] --import tsx <script> [...args]` and parses the last line of its stdout as JSON.
 * Throws `${failure}: ${stderr}` if the child exits non-zero or that line does not start with '{'.
 */
export function runJsonChild<T>(
  script: string,
  args: string[],
  { cwd, timeout, nodeArgs = [] }: { cwd: string; timeout: number; nodeArgs?: string[] },
  failure: string,
): T {
  const run = spawnSync(process.execPath, [...nodeArgs, '--import', 'tsx', script, ...args], {
    cwd,
    encoding: 'utf8',
    timeout,
  })
  const line = run.stdout.trim().split('\n').pop() ?? ''
  if (run.status !== 0 || !line.startsWith('{')) throw new Error(`${failure}: ${run.stderr}`)
  return JSON.parse(line) as T
}

export function fmtOps(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`
  return n.toFixed(0)
}

export function fmtStat(s: Stat, f: (n: number) => string = fmtOps): string {
  return `${f(s.median)} (${f(s.min)}–${f(s.max)})`
}
