// A Redis that stops answering without closing anything: DEBUG SLEEP 20 and a SIGSTOPped server (a
// blackhole: the kernel still acknowledges every byte) for 30 s, under 2,000 checks per second with
// FastLimit's defaults (timeoutMs 1000, the circuit breaker). Every call is answered within timeoutMs,
// the heap stays flat (the breaker's reconnect() drops the queued commands), and nothing the limiter gave
// up on is charged when the server wakes (the deadline travels with each call). Then a 3 s stall with
// the breaker off: the refused calls that were still sent charge nothing (before: remaining 0), and a
// fallback decision is charged once.
import { type BreakerEvent, FastLimit, type FastlimitError, MemoryBackend } from '@fastlimit/core'
import { RedisBackend } from '@fastlimit/redis'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { command, type StandaloneSetup, startStandalone, stopAll } from '../../../packages/redis/test/servers'
import { formatTally, heapAfterGcMb, Recorder, round, sleep, watchUnhandled } from './helpers'
import { latencies, type PhaseStats, startRate } from './rate-driver'

const recorder = new Recorder('redis-stall', 'fault')
const RATE = 2000
// FastLimit's default timeoutMs; a loaded 2-core machine may run a timer late by this much.
const TIMEOUT_MS = 1000
const MARGIN_MS = 1000
const LIMIT = 5
const RULE = `${LIMIT}/h`

let server: StandaloneSetup | undefined

beforeAll(async () => {
  server = await startStandalone({ config: ['enable-debug-command yes'] })
})

afterAll(async () => {
  await stopAll()
  recorder.save()
})

/**
 * Sends `DEBUG SLEEP seconds` on a connection that is ready first (so the server takes it before anything
 * sent afterwards, however slow the machine); resolves with the reply once the server wakes.
 */
async function debugSleep(port: number, seconds: number): Promise<{ woken: Promise<unknown> }> {
  const sleeper = new Redis({ port, host: '127.0.0.1', lazyConnect: true })
  await sleeper.connect()
  return { woken: sleeper.call('DEBUG', 'SLEEP', String(seconds)).finally(() => sleeper.disconnect()) }
}

async function scriptCalls(port: number): Promise<number> {
  const stats = String(await command(port, 'INFO', 'commandstats'))
  let calls = 0
  for (const m of stats.matchAll(/^cmdstat_(eval|evalsha):calls=(\d+)/gm)) calls += Number(m[2])
  return calls
}

/** How many keys the identities of one phase have in Redis. */
async function phaseKeys(port: number, id: string, phase: string): Promise<number> {
  let cursor = '0'
  let n = 0
  do {
    const [next, keys] = (await command(
      port,
      'SCAN',
      cursor,
      'MATCH',
      `fastlimit::stall:{${id}-${phase}-*`,
      'COUNT',
      10_000,
    )) as [string, string[]]
    cursor = next
    n += keys.length
  } while (cursor !== '0')
  return n
}

interface Stall {
  /** Short, for identities and keys. */
  readonly id: string
  /** The fault's name in the results table. */
  readonly fault: string
  /** Stops the server from answering; resolves once it is stopped. */
  readonly injure: (s: StandaloneSetup) => Promise<void>
  readonly outageMs: number
  /** Makes it answer again; resolves when it does (the moment recovery is measured from). */
  readonly heal: (s: StandaloneSetup) => Promise<void>
}

async function runStall(o: Stall): Promise<void> {
  const s = server as StandaloneSetup
  const backend = RedisBackend.fromUrl(s.url)
  const limiter = new FastLimit({ backend, prefix: 'stall', onBackendError: 'fail-closed' })
  const breaker: Record<string, number> = {}
  limiter.on('breaker', (e: BreakerEvent) => {
    breaker[e.state] = (breaker[e.state] ?? 0) + 1
  })
  const unhandled = watchUnhandled()
  let phase = 'before'
  try {
    expect((await limiter.check('warm', RULE)).source).toBe('backend')
    const heapBefore = heapAfterGcMb()
    const load = startRate({
      ratePerSec: RATE,
      phase: () => phase,
      identity: (i, p) => `${o.id}-${p}-${Math.floor(i / (2 * LIMIT))}`,
      call: (identity) => limiter.check(identity, RULE),
    })
    await sleep(2000)
    phase = 'injuring'
    const scriptsBefore = await scriptCalls(s.port)
    await o.injure(s)
    // Calls started in the instant the fault took hold may still have been decided by Redis.
    await sleep(100)
    phase = 'outage'
    await sleep(o.outageMs - 1500)
    // The heap near the end of the outage, when anything that piles up has piled up.
    const heapDuring = heapAfterGcMb()
    await sleep(1000)
    const rate = load.achievedRate()
    phase = 'healing'
    await o.heal(s)
    const woke = performance.now()
    while ((load.stats.get('healing')?.firstBackendAt ?? 0) === 0 && performance.now() - woke < 15_000) {
      await sleep(20)
    }
    const recoveryMs = (load.stats.get('healing')?.firstBackendAt ?? Number.NaN) - woke
    phase = 'after'
    await sleep(2000)
    const hung = await load.stop()
    const heapAfter = heapAfterGcMb()
    const outage = load.stats.get('outage') as PhaseStats
    const all = [...load.stats.values()]
    const backendDecided = (['healing', 'after'] as const).reduce(
      (n, p) => n + (load.stats.get(p)?.backendDecisions ?? 0),
      0,
    )
    // Every script the server ran from the fault on that no decision of the backend came from: sent
    // before the breaker dropped the connection, run when the server woke, past its deadline.
    const late = (await scriptCalls(s.port)) - scriptsBefore - backendDecided
    const keys = await phaseKeys(s.port, o.id, 'outage')
    // The same count finds the identities of the phase before the fault: it can see a charge.
    const keysBefore = await phaseKeys(s.port, o.id, 'before')
    const probe = await Promise.all(
      Array.from({ length: 2 * LIMIT }, () => limiter.check(`${o.id}-exact`, RULE)),
    )
    unhandled.stop()
    const worst = Math.max(...all.map((p) => p.maxLatencyMs))
    recorder.add({
      fault: o.fault,
      policy: 'fail-closed',
      requests: all.reduce((n, p) => n + p.calls, 0),
      ratePerSec: Math.round(rate),
      outcomesDuringFault: formatTally(outage.outcomes),
      backendErrors: formatTally(outage.errors),
      maxLatencyDuringFaultMs: round(outage.maxLatencyMs),
      p99LatencyDuringFaultMs: latencies(outage).p99,
      maxLatencyMs: round(worst),
      boundMs: TIMEOUT_MS + MARGIN_MS,
      hung,
      unhandledRejections: unhandled.seen.length,
      heapBeforeMb: round(heapBefore),
      heapDuringFaultMb: round(heapDuring),
      heapAfterMb: round(heapAfter),
      recoveryMs: round(recoveryMs),
      overLimit: 0,
      lateCharges: keys,
      lateScripts: late,
      breaker: formatTally(breaker),
      exactAfter: `${probe.filter((d) => d.allowed).length}/${LIMIT} on 1 fresh id`,
    })
    expect(hung, 'calls that never settled').toBe(0)
    expect(unhandled.seen).toEqual([])
    expect(Object.keys(outage.outcomes).filter((k) => k !== 'policy:fail-closed')).toEqual([])
    expect(outage.errors.ERR_FASTLIMIT_CIRCUIT_OPEN ?? 0, 'the breaker opened').toBeGreaterThan(0)
    expect(breaker.open ?? 0).toBeGreaterThan(0)
    expect(worst, 'every call answered within timeoutMs').toBeLessThan(TIMEOUT_MS + MARGIN_MS)
    // Nothing piles up while the server is stopped: a few MB at most (the issue saw +162 MB in 15 s).
    expect(heapDuring - heapBefore, 'heap growth during the outage (MB)').toBeLessThan(20)
    // No call the limiter gave up on was charged when the server woke.
    expect(keysBefore, 'identities charged before the fault').toBeGreaterThan(0)
    expect(keys, 'outage identities charged after the server woke').toBe(0)
    expect(Number.isFinite(recoveryMs), 'the limiter decided on Redis again').toBe(true)
    expect(probe.filter((d) => d.allowed)).toHaveLength(LIMIT)
    expect(new Set(probe.map((d) => d.source))).toEqual(new Set(['backend']))
  } finally {
    unhandled.stop()
    await limiter.close()
    await backend.close()
  }
}

describe('a Redis that stops answering, under 2,000 checks per second', () => {
  it('DEBUG SLEEP 20: decisions within timeoutMs, the heap flat, nothing charged late, back on Redis on wake', async () => {
    let sleeping: Promise<unknown> = Promise.resolve()
    await runStall({
      id: 'sleep20',
      fault: `standalone: DEBUG SLEEP 20 at ${RATE}/s`,
      injure: async (s) => {
        sleeping = (await debugSleep(s.port, 20)).woken
        await sleep(100)
      },
      outageMs: 19_000,
      heal: async () => {
        expect(await sleeping).toBe('OK')
      },
    })
  }, 90_000)

  it('SIGSTOP for 30 s (a blackhole): decisions within timeoutMs, the heap flat, nothing charged late, back on SIGCONT', async () => {
    let stoppedAt = 0
    await runStall({
      id: 'sigstop30',
      fault: `standalone: SIGSTOP 30 s (blackhole) at ${RATE}/s`,
      injure: async (s) => {
        process.kill(s.server.pid, 'SIGSTOP')
        stoppedAt = performance.now()
      },
      outageMs: 29_500,
      heal: async (s) => {
        await sleep(Math.max(0, 30_000 - (performance.now() - stoppedAt)))
        process.kill(s.server.pid, 'SIGCONT')
      },
    })
  }, 90_000)
})

describe('late charges', () => {
  it('a 3 s stall with the breaker off: refused calls that reached Redis late charge nothing, a fallback charges once', async () => {
    const s = server as StandaloneSetup
    const raw = new Redis({ port: s.port, host: '127.0.0.1' })
    const closedBackend = RedisBackend.fromUrl(s.url)
    const fallbackBackend = RedisBackend.fromUrl(s.url)
    const memory = new MemoryBackend()
    const errors: string[] = []
    const onError = (err: FastlimitError) => {
      errors.push(err.code)
    }
    const common = { timeoutMs: 200, breaker: false as const, onError }
    const closed = new FastLimit({
      backend: closedBackend,
      prefix: 'late',
      onBackendError: 'fail-closed',
      ...common,
    })
    const withFallback = new FastLimit({
      backend: fallbackBackend,
      prefix: 'late-fb',
      onBackendError: { fallback: memory },
      ...common,
    })
    try {
      for (let i = 0; i < 2; i++) expect((await closed.check('victim', RULE)).allowed).toBe(true)
      expect((await withFallback.check('victim', RULE)).source).toBe('backend')
      const sleeping = (await debugSleep(s.port, 3)).woken
      await sleep(100)
      // 25 refused checks over 2.5 s, each sent to the sleeping server and given up on after 200 ms.
      const refused = []
      for (let i = 0; i < 25; i++) {
        refused.push(closed.check('victim', RULE))
        await sleep(100)
      }
      const fallbackDecisions = await Promise.all(
        Array.from({ length: 3 }, () => withFallback.check('victim', RULE)),
      )
      const ds = await Promise.all(refused)
      expect(ds.every((d) => !d.allowed && d.reason === 'fail-closed')).toBe(true)
      expect(fallbackDecisions.map((d) => [d.source, d.allowed])).toEqual([
        ['fallback', true],
        ['fallback', true],
        ['fallback', true],
      ])
      expect(await sleeping).toBe('OK')
      // Every late call has reached the server and been answered `late` by now.
      expect(await raw.ping()).toBe('PONG')
      const remaining = (await closed.peek('victim', RULE)).remaining
      const redisRemaining = (await withFallback.peek('victim', RULE)).remaining
      const memoryRemaining = (
        await memory.peek('late-fb:{victim}', { algorithm: 'gcra', limit: 5, windowMs: 3_600_000 })
      ).remaining
      recorder.add({
        fault: 'late charge: DEBUG SLEEP 3, breaker off',
        policy: 'fail-closed / fallback',
        requests: 28,
        outcomesDuringFault: formatTally({ 'policy:fail-closed': 25, 'fallback:ok': 3 }),
        backendErrors: formatTally(
          errors.reduce<Record<string, number>>((m, c) => {
            m[c] = (m[c] ?? 0) + 1
            return m
          }, {}),
        ),
        overLimit: 0,
        lateCharges: LIMIT - 2 - (remaining as number) + (LIMIT - 1 - (redisRemaining as number)),
        exactAfter: `fail-closed victim remaining ${remaining} of 3; fallback victim: Redis ${redisRemaining} of 4, memory ${memoryRemaining} of 2`,
      })
      // Before: remaining 0 (the refused calls were charged when Redis woke).
      expect(remaining, 'fail-closed: remaining after the stall').toBe(LIMIT - 2)
      // Charged once: by the fallback, never again by Redis.
      expect(redisRemaining).toBe(LIMIT - 1)
      expect(memoryRemaining).toBe(LIMIT - 3)
      expect(errors.filter((c) => c !== 'ERR_FASTLIMIT_TIMEOUT')).toEqual([])
    } finally {
      await closed.close()
      await withFallback.close()
      await closedBackend.close()
      await fallbackBackend.close()
      raw.disconnect()
    }
  })
})
