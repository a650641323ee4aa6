// One fault, three policies: a steady load on three FastLimits (fail-open, fail-closed, memory fallback),
// each on its own RedisBackend created from a URL, through before / outage / healing / after phases.
// Records every call, checks each phase's decisions, and probes exactness once Redis is back.
import { type Backend, type Decision, FastLimit, type FastlimitError, MemoryBackend } from '@fastlimit/core'
import { RedisBackend, type RedisBackendOptions } from '@fastlimit/redis'
import { expect } from 'vitest'
import { command } from '../../../packages/redis/test/servers'
import {
  type Cell,
  formatTally,
  heapAfterGcMb,
  type Recorder,
  round,
  sleep,
  waitUntil,
  watchUnhandled,
} from './helpers'
import { admittedBy, type LoadCall, latencySummary, outcomes, startLoad } from './load-driver'

/** The error policies every fault is run under. */
export const POLICIES = ['fail-open', 'fail-closed', 'fallback'] as const
export type PolicyName = (typeof POLICIES)[number]

/** The rule of the load: 5 per hour, so nothing refills during a test and admissions are exact. */
export const LOAD_LIMIT = 5
export const LOAD_RULE = `${LOAD_LIMIT}/h`
/** Calls per identity within a phase: twice the limit. */
const PER_IDENTITY = 2 * LOAD_LIMIT

/** A FastLimit under one policy, and what it saw. */
export interface PolicyLimiter {
  readonly policy: PolicyName
  readonly limiter: FastLimit
  /** A RedisBackend (from {@link makeLimiters}), or another store's backend built by its test. */
  readonly backend: Backend
  readonly fallback: MemoryBackend | undefined
  /** onError calls by error code. */
  readonly errors: Record<string, number>
}

/** Creates the three limiters on `url` (each with its own connection). */
export function makeLimiters(
  url: string,
  timeoutMs: number,
  options: Omit<RedisBackendOptions, 'url' | 'client'> = {},
): PolicyLimiter[] {
  return POLICIES.map((policy) => {
    const backend = RedisBackend.fromUrl(url, options)
    const fallback = policy === 'fallback' ? new MemoryBackend({ maxKeys: 10_000 }) : undefined
    const errors: Record<string, number> = {}
    const limiter = new FastLimit({
      backend,
      prefix: policy,
      timeoutMs,
      onBackendError: fallback === undefined ? (policy as 'fail-open' | 'fail-closed') : { fallback },
      onError: (err: FastlimitError) => {
        errors[err.code] = (errors[err.code] ?? 0) + 1
      },
    })
    return { policy, limiter, backend, fallback, errors }
  })
}

/** Closes limiters and their backends. */
export async function closeLimiters(limiters: readonly PolicyLimiter[]): Promise<void> {
  for (const l of limiters) {
    await l.limiter.close()
    await l.backend.close?.()
    await l.fallback?.close()
  }
}

/** The error codes of a decision that the policy made because the store could not (or was not asked). */
export const POLICY_CODES: ReadonlySet<string> = new Set([
  'ERR_FASTLIMIT_BACKEND',
  'ERR_FASTLIMIT_TIMEOUT',
  'ERR_FASTLIMIT_CIRCUIT_OPEN',
  'ERR_FASTLIMIT_OVERLOADED',
  'ERR_FASTLIMIT_STORE_FULL',
])

/** Whether a decision is what `policy` gives on a backend failure (or an open breaker). */
export function isPolicyDecision(policy: PolicyName, d: Decision): boolean {
  const code = d.error?.code
  if (code === undefined || !POLICY_CODES.has(code)) return false
  if (policy === 'fail-open') return d.allowed && d.reason === 'fail-open' && d.source === 'policy'
  if (policy === 'fail-closed')
    return !d.allowed && d.reason === 'fail-closed' && d.source === 'policy' && d.retryAfterMs === 1000
  return d.source === 'fallback' && (d.reason === 'ok' || d.reason === 'rate-limited')
}

function isBackendDecision(d: Decision): boolean {
  return d.source === 'backend' && d.error === undefined && (d.reason === 'ok' || d.reason === 'rate-limited')
}

/** Fires `2 * limit` concurrent checks on a fresh identity: how many were admitted, and by whom. */
export async function probeExact(
  limiter: FastLimit,
  identity: string,
  limit = LOAD_LIMIT,
): Promise<{ admitted: number; sources: string[] }> {
  const rule = `${limit}/h`
  const ds = await Promise.all(Array.from({ length: 2 * limit }, () => limiter.check(identity, rule)))
  return { admitted: ds.filter((d) => d.allowed).length, sources: [...new Set(ds.map((d) => d.source))] }
}

/** Resolves once the Redis server on `port` (just killed) refuses connections; gives up after 5 s. */
export async function waitRefused(port: number): Promise<void> {
  await waitUntil(
    'the master to refuse connections',
    async () => {
      try {
        await command(port, 'PING')
        return false
      } catch {
        return true
      }
    },
    5000,
    10,
  )
}

/** What a scenario does to Redis. */
export interface FaultOptions {
  /** The fault's name in the results table. */
  readonly fault: string
  readonly limiters: readonly PolicyLimiter[]
  readonly recorder: Recorder
  /** FastLimit's timeoutMs (the same on every limiter). */
  readonly timeoutMs: number
  /** Allowed lateness over timeoutMs for any call (a loaded 2-core machine). */
  readonly marginMs: number
  /** Calls per second on each limiter. */
  readonly ratePerSec: number
  readonly beforeMs: number
  /** Breaks Redis; resolves once the fault is in place (the process is gone, the server asleep). */
  readonly injure: () => Promise<void>
  /** Keeps the outage phase at least this long after `injure` resolved. */
  readonly outageMs: number
  /** Resolves when the outage phase may end (e.g. once a replica is promoted). @default nothing */
  readonly outageUntil?: () => Promise<void>
  /** Repairs Redis (restart, or nothing when a failover repairs it). */
  readonly heal: () => Promise<void>
  readonly afterMs: number
  /**
   * Which outage-phase calls must get the policy's result (Redis unreachable for them). The others may
   * also be decided by the backend (a Cluster's other masters).
   * @default every outage call
   */
  readonly mustFail?: (call: LoadCall) => boolean
  /**
   * Outage calls started this close to the end of the outage phase may also be decided by the backend:
   * the end is observed by polling (a promotion), and the client may have seen it first.
   * @default 0
   */
  readonly outageGraceMs?: number
  /** Identities whose fresh copies must admit exactly the limit after healing (e.g. one per Cluster slot range). */
  readonly probes?: (policy: PolicyName, round: number) => string[]
  /** How long the limiters may take to decide on Redis again after `heal`. @default 30_000 */
  readonly recoveryTimeoutMs?: number
}

/** What a scenario observed, per policy. */
export interface FaultReport {
  readonly policy: PolicyName
  readonly calls: LoadCall[]
  readonly recoveryMs: number
}

/**
 * Runs one fault under load on the three limiters and asserts what the issue asks: every call settles
 * within timeoutMs + margin with the policy's result, nothing hangs, no unhandled rejection, the heap
 * stays bounded, and once Redis is back fresh identities admit exactly the limit, without a restart.
 */
export async function runFault(o: FaultOptions): Promise<FaultReport[]> {
  const unhandled = watchUnhandled()
  try {
    return await observe(o, unhandled)
  } finally {
    unhandled.stop()
  }
}

async function observe(
  o: FaultOptions,
  unhandled: ReturnType<typeof watchUnhandled>,
): Promise<FaultReport[]> {
  let phase = 'before'
  // Warm up every connection and script before measuring.
  for (const l of o.limiters) {
    const warm = await l.limiter.check(`warm-${o.fault}`, LOAD_RULE)
    expect(warm.source, `${l.policy}: Redis answers before the fault`).toBe('backend')
  }
  const heapBefore = heapAfterGcMb()
  const loads = o.limiters.map((l) =>
    startLoad({
      ratePerSec: o.ratePerSec,
      phase: () => phase,
      identity: (i, p) => `${o.fault}-${p}-${Math.floor(i / PER_IDENTITY)}`,
      call: (identity) => l.limiter.check(identity, LOAD_RULE),
      hangMs: 10_000,
    }),
  )
  const t0 = performance.now()
  const recoveryMs = new Map<PolicyName, number>()
  let outageEnd = Number.POSITIVE_INFINITY
  try {
    await sleep(o.beforeMs)
    phase = 'injuring'
    // Calls of the before phase still in flight finish on a healthy Redis.
    await sleep(100)
    await o.injure()
    // Calls started in the instant the fault took hold may still have reached Redis.
    await sleep(100)
    phase = 'outage'
    const outageStart = performance.now()
    await Promise.all([sleep(o.outageMs), o.outageUntil?.()])
    outageEnd = performance.now()
    const outageMs = outageEnd - outageStart
    phase = 'healing'
    const healStart = performance.now()
    await o.heal()
    // Each limiter decides on Redis again, with no restart of anything on our side.
    await Promise.all(
      o.limiters.map(async (l) => {
        const deadline = performance.now() + (o.recoveryTimeoutMs ?? 30_000)
        let n = 0
        // Recovered once every probe decides on the store 5 rounds in a row: a store that answers
        // once and fails again (stuck pooled connections, a breaker opening anew) has not healed.
        let streak = 0
        for (;;) {
          const ids = o.probes?.(l.policy, 1000 + n) ?? [`${o.fault}-recover-${n}`]
          n++
          const ds = await Promise.all(ids.map((id) => l.limiter.check(id, '1000/s')))
          streak = ds.every((d) => d.source === 'backend') ? streak + 1 : 0
          if (streak === 1) recoveryMs.set(l.policy, performance.now() - healStart)
          if (streak >= 5) break
          if (performance.now() > deadline) {
            throw new Error(
              `${l.policy}: still not deciding on Redis ${o.recoveryTimeoutMs ?? 30_000} ms after healing`,
            )
          }
          await sleep(50)
        }
      }),
    )
    phase = 'after'
    await sleep(o.afterMs)
    o.recorder.details[`${o.fault}:outageMs`] = round(outageMs)
  } finally {
    await Promise.all(loads.map((l) => l.stop()))
  }
  const elapsed = performance.now() - t0

  const reports: FaultReport[] = []
  for (const [i, l] of o.limiters.entries()) {
    const calls = (loads[i] as (typeof loads)[number]).calls
    const problems: string[] = []
    const bound = o.timeoutMs + o.marginMs
    const hung = calls.filter((c) => c.state === 'hung' || c.state === 'pending')
    if (hung.length > 0) problems.push(`${hung.length} calls never settled`)
    const rejected = calls.filter((c) => c.state === 'rejected')
    if (rejected.length > 0)
      problems.push(`${rejected.length} calls rejected, e.g. ${String(rejected[0]?.error)}`)
    const slow = calls.filter((c) => c.latencyMs > bound)
    if (slow.length > 0) {
      problems.push(
        `${slow.length} calls took longer than ${bound} ms, e.g. ${round(slow[0]?.latencyMs ?? 0)} ms`,
      )
    }
    const grace = o.outageGraceMs ?? 0
    const mustFail = (c: LoadCall) => c.at < outageEnd - grace && (o.mustFail?.(c) ?? true)
    for (const c of calls) {
      const d = c.decision
      if (d === undefined) continue
      const ok =
        c.phase === 'before' || c.phase === 'after'
          ? isBackendDecision(d)
          : c.phase === 'outage' && mustFail(c)
            ? isPolicyDecision(l.policy, d)
            : isBackendDecision(d) || isPolicyDecision(l.policy, d)
      if (!ok && problems.length < 20) {
        problems.push(`${c.phase} call ${c.identity}: unexpected ${JSON.stringify(d)}`)
      }
    }
    // Exact counts wherever one store decided every call of an identity.
    for (const [identity, e] of admittedBy(calls)) {
      const own = calls.filter((c) => c.identity === identity)
      const phaseOf = own[0]?.phase
      const byFallback = own.every((c) => c.decision?.source === 'fallback')
      const byBackend = own.every((c) => c.decision?.source === 'backend')
      const exact =
        phaseOf === 'before' || phaseOf === 'after' || byFallback || (byBackend && phaseOf === 'outage')
      if (exact && e.admitted !== Math.min(e.calls, LOAD_LIMIT) && problems.length < 20) {
        problems.push(
          `${identity}: ${e.admitted} of ${e.calls} admitted, expected ${Math.min(e.calls, LOAD_LIMIT)}`,
        )
      }
    }
    const outageCalls = calls.filter((c) => c.phase === 'outage')
    const policyDuringOutage = outageCalls.filter((c) => c.decision && isPolicyDecision(l.policy, c.decision))
    if (policyDuringOutage.length === 0)
      problems.push('the fault was never observed: no policy decision during the outage')
    expect(problems, `${o.fault} / ${l.policy}`).toEqual([])
    reports.push({ policy: l.policy, calls, recoveryMs: recoveryMs.get(l.policy) ?? -1 })
  }

  // Exact again after healing, on fresh identities (and for a Cluster, in every slot range).
  const exactAfter = new Map<PolicyName, string>()
  for (const l of o.limiters) {
    const ids = o.probes?.(l.policy, 0) ?? [`${o.fault}-exact-${l.policy}`]
    let admitted = 0
    for (const id of ids) {
      const p = await probeExact(l.limiter, id)
      expect(p, `${o.fault} / ${l.policy}: ${id} after healing`).toEqual({
        admitted: LOAD_LIMIT,
        sources: ['backend'],
      })
      admitted += p.admitted
    }
    exactAfter.set(
      l.policy,
      `${admitted}/${ids.length * LOAD_LIMIT} on ${ids.length} fresh id${ids.length > 1 ? 's' : ''}`,
    )
  }

  // Late answers (a server waking up) arrive after the calls were decided: nothing may go unhandled.
  await sleep(300)
  unhandled.stop()
  const heapAfter = heapAfterGcMb()
  expect(unhandled.seen, `${o.fault}: unhandled rejections`).toEqual([])
  // 3 limiters × a few thousand recorded calls (kept in memory for the checks above) and no more.
  expect(heapAfter - heapBefore, `${o.fault}: heap growth (MB)`).toBeLessThan(40)

  for (const [i, l] of o.limiters.entries()) {
    const r = reports[i] as FaultReport
    const outage = r.calls.filter((c) => c.phase !== 'before' && c.phase !== 'after')
    const row: Record<string, Cell> = {
      fault: o.fault,
      policy: l.policy,
      requests: r.calls.length,
      ratePerSec: o.ratePerSec,
      seconds: round(elapsed / 1000),
      outcomesDuringFault: formatTally(outcomes(outage)),
      outcomesOverall: formatTally(outcomes(r.calls)),
      backendErrors: formatTally(l.errors),
      maxLatencyMs: latencySummary(r.calls).maxMs,
      maxLatencyDuringFaultMs: latencySummary(outage).maxMs,
      p99LatencyDuringFaultMs: latencySummary(outage).p99Ms,
      boundMs: o.timeoutMs + o.marginMs,
      hung: r.calls.filter((c) => c.state === 'hung').length,
      unhandledRejections: unhandled.seen.length,
      heapBeforeMb: round(heapBefore),
      heapAfterMb: round(heapAfter),
      recoveryMs: round(r.recoveryMs),
      exactAfter: exactAfter.get(l.policy) ?? '',
    }
    o.recorder.add(row)
  }
  return reports
}
