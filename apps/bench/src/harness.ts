// Interleaved measurement: every case runs once per round, round-robin, so drift on a shared machine
// hits all cases alike. Results are medians with their min–max over the rounds.

/** One thing to measure: `run(n)` performs n operations (awaited) and resolves when done. */
export interface Case {
  /** Row label. */
  name: string
  /** The group it is compared within (e.g. 'rotating keys'). */
  group: string
  /** Who it is: 'fastlimit', a peer library, or 'floor'. */
  kind: 'fastlimit' | 'peer' | 'floor'
  run: (n: number) => Promise<void>
}

export interface Stat {
  median: number
  min: number
  max: number
  samples: number[]
}

export interface Measured {
  name: string
  group: string
  kind: Case['kind']
  opsPerSec: Stat
}

export function stat(samples: number[]): Stat {
  const sorted = [...samples].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  const median =
    sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
  return { median, min: sorted[0] as number, max: sorted[sorted.length - 1] as number, samples }
}

async function timed(c: Case, n: number): Promise<number> {
  const t0 = process.hrtime.bigint()
  await c.run(n)
  return Number(process.hrtime.bigint() - t0) / 1e9
}

/**
 * Calibrates each case to about `sliceMs` per round, then runs `rounds` rounds round-robin.
 * Bounded: a case never runs more than `maxOps` operations per slice.
 */
export async function interleave(
  cases: Case[],
  {
    rounds,
    sliceMs,
    maxOps = 5_000_000,
    log = true,
  }: { rounds: number; sliceMs: number; maxOps?: number; log?: boolean },
): Promise<Measured[]> {
  const sizes = new Map<Case, number>()
  for (const c of cases) {
    // Warm up (JIT) and calibrate.
    let n = 1000
    let s = await timed(c, n)
    while (s < 0.02 && n < maxOps) {
      n *= 4
      s = await timed(c, n)
    }
    sizes.set(c, Math.max(100, Math.min(maxOps, Math.round((n * sliceMs) / 1000 / s))))
  }
  const samples = new Map<Case, number[]>(cases.map((c) => [c, []]))
  for (let r = 0; r < rounds; r++) {
    for (const c of cases) {
      const n = sizes.get(c) as number
      const s = await timed(c, n)
      samples.get(c)?.push(n / s)
    }
    if (log) process.stdout.write(`  round ${r + 1}/${rounds}\r`)
  }
  if (log) process.stdout.write('\n')
  return cases.map((c) => ({
    name: c.name,
    group: c.group,
    kind: c.kind,
    opsPerSec: stat(samples.get(c) as number[]),
  }))
}

export function fmtOps(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`
  return n.toFixed(0)
}

export function fmtStat(s: Stat, f: (n: number) => string = fmtOps): string {
  return `${f(s.median)} (${f(s.min)}–${f(s.max)})`
}
