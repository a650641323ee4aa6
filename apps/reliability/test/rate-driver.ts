// A steady stream of limiter calls at thousands per second that keeps counts, not calls: outcomes,
// latencies (a bounded sample) and hangs per phase, so that the heap it measures is the limiter's.
import type { Decision } from '@fastlimit/core'
import { percentile, round } from './helpers'

/** What one phase of a rate load saw. */
export interface PhaseStats {
  calls: number
  /** Decisions by `reason` (with `source` when not the backend), and rejections as `rejected:<code>`. */
  readonly outcomes: Record<string, number>
  /** Error codes of the decisions that carried one. */
  readonly errors: Record<string, number>
  maxLatencyMs: number
  /** Latencies of up to the first 20,000 calls that settled. */
  readonly latencies: number[]
  /** performance.now() of the first call decided by the backend. */
  firstBackendAt: number | undefined
  /** performance.now() of the last call decided by the policy. */
  lastPolicyAt: number | undefined
  /** Calls decided by the backend. */
  backendDecisions: number
}

export interface RateLoad {
  readonly stats: Map<string, PhaseStats>
  /** Calls not settled yet. */
  readonly pending: () => number
  /** Calls started per second so far. */
  readonly achievedRate: () => number
  /** Stops starting calls; waits up to `hangMs` for the pending ones; returns how many never settled. */
  stop(hangMs?: number): Promise<number>
}

export interface RateOptions {
  readonly ratePerSec: number
  readonly phase: () => string
  /** The identity of the `i`-th call of a phase. */
  readonly identity: (i: number, phase: string) => string
  readonly call: (identity: string) => Promise<Decision>
}

function phaseStats(): PhaseStats {
  return {
    calls: 0,
    outcomes: {},
    errors: {},
    maxLatencyMs: 0,
    latencies: [],
    firstBackendAt: undefined,
    lastPolicyAt: undefined,
    backendDecisions: 0,
  }
}

const SAMPLE = 20_000

/** Starts calls at `ratePerSec` (a timer every 5 ms; after a stall it skips rather than bursts). */
export function startRate(options: RateOptions): RateLoad {
  const stats = new Map<string, PhaseStats>()
  const t0 = performance.now()
  let issued = 0
  let started = 0
  let pending = 0
  const bump = (map: Record<string, number>, key: string) => {
    map[key] = (map[key] ?? 0) + 1
  }
  const issue = () => {
    const phase = options.phase()
    let s = stats.get(phase)
    if (s === undefined) {
      s = phaseStats()
      stats.set(phase, s)
    }
    const st = s
    const identity = options.identity(st.calls++, phase)
    const at = performance.now()
    pending++
    started++
    let promise: Promise<Decision>
    try {
      promise = options.call(identity)
    } catch (err) {
      promise = Promise.reject(err)
    }
    promise.then(
      (d) => {
        pending--
        const now = performance.now()
        const ms = now - at
        if (ms > st.maxLatencyMs) st.maxLatencyMs = ms
        if (st.latencies.length < SAMPLE) st.latencies.push(ms)
        bump(st.outcomes, d.source === 'backend' ? d.reason : `${d.source}:${d.reason}`)
        if (d.error !== undefined) bump(st.errors, d.error.code)
        if (d.source === 'backend') {
          st.backendDecisions++
          st.firstBackendAt ??= now
        } else st.lastPolicyAt = now
      },
      (err: unknown) => {
        pending--
        const code = (err as { code?: unknown } | undefined)?.code
        bump(st.outcomes, `rejected:${typeof code === 'string' ? code : String(err)}`)
      },
    )
  }
  const timer = setInterval(() => {
    const due = Math.floor(((performance.now() - t0) * options.ratePerSec) / 1000)
    let n = due - issued
    const cap = Math.ceil(options.ratePerSec / 10)
    if (n > cap) {
      issued += n - cap
      n = cap
    }
    for (let k = 0; k < n; k++) {
      issue()
      issued++
    }
  }, 5)
  return {
    stats,
    pending: () => pending,
    achievedRate: () => (started * 1000) / (performance.now() - t0),
    stop: async (hangMs = 10_000) => {
      clearInterval(timer)
      const until = performance.now() + hangMs
      while (pending > 0 && performance.now() < until) await new Promise((r) => setTimeout(r, 20))
      return pending
    },
  }
}

/** p50 / p99 / max of a phase's latencies, rounded. */
export function latencies(s: PhaseStats | undefined): { p50: number; p99: number; max: number } {
  if (s === undefined) return { p50: 0, p99: 0, max: 0 }
  return {
    p50: round(percentile(s.latencies, 50)),
    p99: round(percentile(s.latencies, 99)),
    max: round(s.maxLatencyMs),
  }
}
