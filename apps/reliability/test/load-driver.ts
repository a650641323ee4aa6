// A steady, bounded stream of limiter calls: each call timed, labelled with the phase it started in,
// and watched for hangs (a call still pending after `hangMs` is recorded as hung).
import type { Decision } from '@fastlimit/core'
import { percentile, round, tally } from './helpers'

/** One call of a load. */
export interface LoadCall {
  readonly index: number
  /** The phase (`'before'`, `'outage'`, ...) current when the call started. */
  readonly phase: string
  readonly identity: string
  /** When it started, in ms since the load began. */
  readonly startedAt: number
  /** When it started, as `performance.now()`. */
  readonly at: number
  /** How long it took to settle, in ms (`-1` while pending or hung). */
  latencyMs: number
  state: 'pending' | 'resolved' | 'rejected' | 'hung'
  decision?: Decision
  error?: unknown
}

/** Options of {@link startLoad}. */
export interface LoadOptions {
  /** Calls started per second, spread evenly. */
  readonly ratePerSec: number
  /** The phase label of a call started now. */
  readonly phase: () => string
  /** The identity of the `i`-th call of a phase (`i` counts from 0 within the phase). */
  readonly identity: (i: number, phase: string) => string
  /** Makes the call. */
  readonly call: (identity: string) => Promise<Decision>
  /** A call pending longer than this is recorded as hung. @default 10_000 */
  readonly hangMs?: number
  /** Stops starting calls after this many. @default 100_000 */
  readonly maxCalls?: number
}

/** A running load; `stop()` stops starting calls and waits for every call to settle or be declared hung. */
export interface Load {
  readonly calls: LoadCall[]
  stop(): Promise<void>
}

/** Starts a load (see {@link LoadOptions}). */
export function startLoad(options: LoadOptions): Load {
  const { ratePerSec, hangMs = 10_000, maxCalls = 100_000 } = options
  const calls: LoadCall[] = []
  const settled: Array<Promise<void>> = []
  const perPhase = new Map<string, number>()
  const t0 = performance.now()
  let issued = 0
  const issue = () => {
    const phase = options.phase()
    const i = perPhase.get(phase) ?? 0
    perPhase.set(phase, i + 1)
    const identity = options.identity(i, phase)
    const startedAt = performance.now()
    const call: LoadCall = {
      index: calls.length,
      phase,
      identity,
      startedAt: startedAt - t0,
      at: startedAt,
      latencyMs: -1,
      state: 'pending',
    }
    calls.push(call)
    settled.push(
      new Promise<void>((resolve) => {
        const guard = setTimeout(() => {
          if (call.state === 'pending') call.state = 'hung'
          resolve()
        }, hangMs)
        let promise: Promise<Decision>
        try {
          promise = options.call(identity)
        } catch (err) {
          // A synchronous throw is recorded like a rejection.
          promise = Promise.reject(err)
        }
        promise.then(
          (decision) => {
            if (call.state !== 'pending') return
            call.latencyMs = performance.now() - startedAt
            call.state = 'resolved'
            call.decision = decision
            clearTimeout(guard)
            resolve()
          },
          (err: unknown) => {
            if (call.state !== 'pending') return
            call.latencyMs = performance.now() - startedAt
            call.state = 'rejected'
            call.error = err
            clearTimeout(guard)
            resolve()
          },
        )
      }),
    )
  }
  const timer = setInterval(() => {
    const due = Math.floor(((performance.now() - t0) * ratePerSec) / 1000)
    let n = due - issued
    // After a stall, catch up by at most a tenth of a second's worth of calls (skip the rest).
    const cap = Math.ceil(ratePerSec / 10)
    if (n > cap) {
      issued += n - cap
      n = cap
    }
    n = Math.min(n, maxCalls - calls.length)
    for (let k = 0; k < n; k++) {
      issue()
      issued++
    }
  }, 5)
  return {
    calls,
    stop: async () => {
      clearInterval(timer)
      await Promise.all(settled)
    },
  }
}

/** How a call came out, for tallies: the decision's reason (and source when not the backend), or the error. */
export function outcomeOf(call: LoadCall): string {
  if (call.state === 'hung') return 'HUNG'
  if (call.state === 'pending') return 'PENDING'
  if (call.state === 'rejected') {
    const code = (call.error as { code?: unknown } | undefined)?.code
    return `rejected:${typeof code === 'string' ? code : String(call.error)}`
  }
  const d = call.decision as Decision
  return d.source === 'fallback' ? `fallback:${d.reason}` : d.reason
}

/** Latency figures of calls that settled. */
export function latencySummary(calls: readonly LoadCall[]): { maxMs: number; p99Ms: number; p50Ms: number } {
  const l = calls.filter((c) => c.latencyMs >= 0).map((c) => c.latencyMs)
  return {
    maxMs: round(l.length === 0 ? 0 : Math.max(...l)),
    p99Ms: round(percentile(l, 99)),
    p50Ms: round(percentile(l, 50)),
  }
}

/** Tally of outcomes. */
export function outcomes(calls: readonly LoadCall[]): Record<string, number> {
  return tally(calls, outcomeOf)
}

/** For each identity, how many calls were admitted. */
export function admittedBy(calls: readonly LoadCall[]): Map<string, { calls: number; admitted: number }> {
  const out = new Map<string, { calls: number; admitted: number }>()
  for (const c of calls) {
    const e = out.get(c.identity) ?? { calls: 0, admitted: 0 }
    e.calls++
    if (c.decision?.allowed) e.admitted++
    out.set(c.identity, e)
  }
  return out
}
