// Runs arrivals through one rule on every algorithm with core's real step functions, and samples
// admitted, denied and remaining capacity per tick.
import { ALGORITHMS, type Algorithm, parseRule, type Rule, type State, step } from '@fastlimit/core'

/** The rule the page builds: a limit per window, and a burst for the bucket algorithms. */
export interface RuleSpec {
  limit: number
  /** `'1s'`, `'10s'`, `'1m'`, ... */
  window: string
  /** Capacity of token-bucket, leaky-bucket and gcra; the limit when absent. */
  burst?: number
}

/** One algorithm's series. */
export interface Series {
  algorithm: Algorithm
  rule: Rule
  /** Per tick: requests admitted, denied, and what would still be admitted at the tick's end. */
  admitted: number[]
  denied: number[]
  remaining: number[]
  totalAdmitted: number
  totalDenied: number
}

const BUCKETS: ReadonlySet<Algorithm> = new Set(['token-bucket', 'leaky-bucket', 'gcra'])

/** The rule of one algorithm (`burst` only where the algorithm has one). Throws core's ConfigError. */
export function ruleFor(algorithm: Algorithm, spec: RuleSpec): Rule {
  const burst = spec.burst !== undefined && BUCKETS.has(algorithm) ? { burst: spec.burst } : {}
  return parseRule({ limit: spec.limit, window: spec.window, algorithm, ...burst })
}

/**
 * Every algorithm on the same arrivals (sorted epoch ms from `start`), one client, cost 1 each, in
 * ticks of `tickMs` over `ticks` ticks. State is written back as a backend would: when admitted, or
 * when the step rebased it.
 */
export function simulate(
  arrivals: readonly number[],
  spec: RuleSpec,
  start: number,
  tickMs: number,
  ticks: number,
): Series[] {
  return ALGORITHMS.map((algorithm) => {
    const rule = ruleFor(algorithm, spec)
    const admitted = new Array<number>(ticks).fill(0)
    const denied = new Array<number>(ticks).fill(0)
    const remaining = new Array<number>(ticks).fill(0)
    let state: State | undefined
    let i = 0
    let totalAdmitted = 0
    let totalDenied = 0
    for (let k = 0; k < ticks; k++) {
      const end = start + (k + 1) * tickMs
      for (; i < arrivals.length && (arrivals[i] as number) < end; i++) {
        const out = step(state, arrivals[i] as number, rule, 1)
        if (out.result.allowed) {
          admitted[k] = (admitted[k] as number) + 1
          totalAdmitted++
        } else {
          denied[k] = (denied[k] as number) + 1
          totalDenied++
        }
        if (out.result.allowed || out.rebased) state = out.state
      }
      // A peek (cost 0) at the tick's end: what would still pass now.
      remaining[k] = step(state, end, rule, 0).result.remaining
    }
    return { algorithm, rule, admitted, denied, remaining, totalAdmitted, totalDenied }
  })
}
