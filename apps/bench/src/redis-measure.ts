// Load generators of the Redis section: `inFlight` concurrent async loops for a fixed slice, and awaited
// calls one at a time with a latency each. Every loop is bounded by a count and by a time.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'

/** One decision; resolves whether its outcome was the expected one (an error counts as unexpected). */
export type Call = () => Promise<boolean>

export interface Burst {
  /** Calls completed. */
  ops: number
  /** Wall-clock seconds from the first call to the last answer. */
  seconds: number
  /** Calls whose outcome was not the expected one, or that failed. */
  unexpected: number
}

/**
 * Runs `inFlight` async loops that each await one call after another, until `maxOps` calls were started
 * or `maxMs` passed; resolves once every call in flight has answered.
 */
export async function burst(
  call: Call,
  { inFlight, maxOps, maxMs }: { inFlight: number; maxOps: number; maxMs: number },
): Promise<Burst> {
  let started = 0
  let ops = 0
  let unexpected = 0
  const t0 = performance.now()
  const deadline = t0 + maxMs
  const loop = async () => {
    while (started < maxOps && performance.now() < deadline) {
      started++
      let ok = false
      try {
        ok = await call()
      } catch {
        ok = false
      }
      ops++
      if (!ok) unexpected++
    }
  }
  await Promise.all(Array.from({ length: inFlight }, loop))
  return { ops, seconds: (performance.now() - t0) / 1000, unexpected }
}

export interface Latencies {
  /** Microseconds per call, sorted ascending. */
  sortedUs: Float64Array
  unexpected: number
}

/** Awaits `calls` calls one at a time (fewer if `maxMs` passes first), timing each with `process.hrtime.bigint()`. */
export async function sequential(
  call: Call,
  { calls, maxMs }: { calls: number; maxMs: number },
): Promise<Latencies> {
  const us = new Float64Array(calls)
  let n = 0
  let unexpected = 0
  const deadline = performance.now() + maxMs
  while (n < calls && performance.now() < deadline) {
    const t0 = process.hrtime.bigint()
    let ok = false
    try {
      ok = await call()
    } catch {
      ok = false
    }
    us[n++] = Number(process.hrtime.bigint() - t0) / 1000
    if (!ok) unexpected++
  }
  return { sortedUs: us.subarray(0, n).sort(), unexpected }
}

/** The p-th percentile (0–100, nearest rank) of ascending samples. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)))
  return sorted[rank - 1] as number
}

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat; NaN where unavailable. */
export function processCpuSeconds(pid: number): number {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may hold spaces) start at the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here (state is field 3).
    return (Number(fields[11]) + Number(fields[12])) / ticks()
  } catch {
    return Number.NaN
  }
}

let clockTicks: number | undefined
/** Clock ticks per second of /proc times (`getconf CLK_TCK`, 100 on Linux almost always). */
function ticks(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
    } catch {
      clockTicks = 100
    }
  }
  return clockTicks
}
