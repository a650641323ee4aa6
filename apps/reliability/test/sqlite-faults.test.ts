// SQLite faults: processes SIGKILLed mid-transaction lose nothing committed and corrupt nothing; a write
// lock held by another process gets the policy within timeoutMs without stalling the event loop; a full
// file system is ERR_FASTLIMIT_STORE_FULL; a file deleted or replaced is reopened, one limit again.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { type BucketConfig, type Decision, FastLimit, MemoryBackend } from '@fastlimit/core'
import { SQLiteBackend } from '@fastlimit/sqlite'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { formatTally, Recorder, round, sleep, tally, waitUntil, watchUnhandled } from './helpers'
import { admittedBy, latencySummary, outcomeOf, startLoad } from './load-driver'
import { killWorkers, startWorker, type Worker } from './workers'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-reliability-sqlite-'))
const recorder = new Recorder('sqlite-faults', 'fault')
const NOW = 1_700_000_000_000
const DAY = 86_400_000

/** tmpfs mounted by the full-disk test, unmounted in afterAll even when the test fails. */
const mounts: string[] = []

afterEach(() => killWorkers())
afterAll(() => {
  killWorkers()
  for (const m of mounts.splice(0)) {
    try {
      execFileSync('umount', [m])
    } catch {
      execFileSync('umount', ['-l', m])
    }
  }
  fs.rmSync(dir, { recursive: true, force: true })
  recorder.save()
})

describe('SQLite: processes killed mid-transaction', () => {
  it('3 rounds of 2 processes SIGKILLed while hammering one file: integrity ok, every reported commit kept, all-or-nothing intact', async () => {
    const file = path.join(dir, 'killed.db')
    const limit = 1_000_000
    const buckets: BucketConfig[] = [
      { algorithm: 'fixed-window', limit, windowMs: DAY },
      { algorithm: 'gcra', limit, windowMs: DAY },
      { algorithm: 'sliding-window', limit, windowMs: DAY },
    ]
    const config = { file, now: NOW, key: 'victim', buckets, batch: 25 }
    // Create the schema first, so both children only open it.
    await new SQLiteBackend(file, { cleanupIntervalMs: 0 }).close()
    let reportedTotal = 0
    let usedBefore = 0
    const rounds: Array<Record<string, number | string | boolean>> = []
    for (let round = 1; round <= 3; round++) {
      const workers: Worker[] = [startWorker('sqlite-hammer', config), startWorker('sqlite-hammer', config)]
      await Promise.all(workers.map((w) => w.next('progress')))
      // Kill at an arbitrary moment: almost all their time is spent inside a transaction.
      await sleep(150 + Math.floor(Math.random() * 350))
      for (const w of workers) w.child.kill('SIGKILL')
      const exits = await Promise.all(workers.map((w) => w.exited))
      expect(exits.map((e) => e.signal)).toEqual(['SIGKILL', 'SIGKILL'])
      const reported = workers.reduce((sum, w) => {
        const progress = w.messages.filter((m) => m.type === 'progress')
        return sum + Number(progress[progress.length - 1]?.admitted ?? 0)
      }, 0)
      reportedTotal += reported
      const walBytes = fs.existsSync(`${file}-wal`) ? fs.statSync(`${file}-wal`).size : 0

      const backend = new SQLiteBackend(file, { clock: () => NOW, cleanupIntervalMs: 0 })
      try {
        const integrity = backend.database.pragma('integrity_check', { simple: true })
        expect(integrity, `round ${round}: integrity_check`).toBe('ok')
        const used = buckets.map((b) => limit - backend.peekSync('victim', b)!.remaining)
        // All-or-nothing survived the kill: the three buckets were charged together or not at all.
        expect(new Set(used).size, `round ${round}: buckets agree ${used.join(', ')}`).toBe(1)
        const u = used[0] as number
        // Nothing committed and reported was lost.
        expect(u, `round ${round}: committed ${u} >= reported ${reportedTotal}`).toBeGreaterThanOrEqual(
          reportedTotal,
        )
        rounds.push({
          round,
          reportedThisRound: reported,
          usedAfterReopen: u,
          unreported: u - reportedTotal,
          walBytesAtReopen: walBytes,
          integrity: String(integrity),
        })
        expect(u).toBeGreaterThan(usedBefore)
        usedBefore = u
      } finally {
        await backend.close()
      }
    }
    // The reopened state admits exactly what is left of the limit, and not one more.
    const backend = new SQLiteBackend(file, { clock: () => NOW, cleanupIntervalMs: 0 })
    try {
      const left = limit - usedBefore
      const all = backend.checkAndIncrementAllSync('victim', buckets, left)!
      expect(all.map((r) => r.allowed)).toEqual([true, true, true])
      const over = backend.checkAndIncrementAllSync('victim', buckets, 1)!
      expect(over.some((r) => r.allowed)).toBe(false)
      expect(backend.database.pragma('integrity_check', { simple: true })).toBe('ok')
    } finally {
      await backend.close()
    }
    recorder.details.killRounds = rounds
    recorder.add({
      fault: 'sqlite: 2 processes SIGKILLed mid-transaction, 3 rounds',
      policy: 'n/a',
      requests: usedBefore,
      outcomesDuringFault: `reported ${reportedTotal}, committed ${usedBefore} (unreported ${usedBefore - reportedTotal})`,
      backendErrors: '',
      maxLatencyDuringFaultMs: null,
      boundMs: null,
      hung: 0,
      unhandledRejections: 0,
      exactAfter: `integrity ok ×3; buckets agree; then admitted exactly the ${limit - usedBefore} left`,
    })
  })
})

const LIMIT = 5
const RULE = `${LIMIT}/h`
type Policy = 'fail-open' | 'fail-closed' | 'fallback'
const POLICIES: Policy[] = ['fail-open', 'fail-closed', 'fallback']

/** A FastLimit per policy on one backend, and the errors each heard. */
function limitersOn(backend: SQLiteBackend, timeoutMs: number) {
  return POLICIES.map((policy) => {
    const errors: Record<string, number> = {}
    const limiter = new FastLimit({
      backend,
      prefix: policy,
      timeoutMs,
      onBackendError: policy === 'fallback' ? { fallback: new MemoryBackend() } : policy,
      onError: (e) => {
        errors[e.code] = (errors[e.code] ?? 0) + 1
      },
    })
    return { policy, limiter, errors }
  })
}

/** Whether a decision is the policy's answer to a store that could not decide (`codes` its error codes). */
function isPolicy(policy: Policy, d: Decision, codes: readonly string[]): boolean {
  if (!codes.includes(d.error?.code ?? '')) return false
  if (policy === 'fail-open') return d.allowed && d.reason === 'fail-open' && d.source === 'policy'
  if (policy === 'fail-closed') return !d.allowed && d.reason === 'fail-closed' && d.source === 'policy'
  return d.source === 'fallback'
}

/** Fires `2 * LIMIT` concurrent checks on a fresh identity: how many were admitted, and by whom. */
async function probeExact(
  limiter: FastLimit,
  identity: string,
): Promise<{ admitted: number; sources: string[] }> {
  const ds = await Promise.all(Array.from({ length: 2 * LIMIT }, () => limiter.check(identity, RULE)))
  return { admitted: ds.filter((d) => d.allowed).length, sources: [...new Set(ds.map((d) => d.source))] }
}

describe('SQLite: another process holds the write lock', () => {
  it('BEGIN EXCLUSIVE held 3 s under a steady load with timeoutMs 100: the policy within the bound, the loop never stalls, nothing charged, exact after', async () => {
    const file = path.join(dir, 'locked.db')
    const timeoutMs = 100
    const marginMs = 600
    const holdMs = 3000
    const ratePerSec = 60
    // busyTimeoutMs at its default (1000): before, every check blocked the event loop that long.
    const backend = new SQLiteBackend(file, { cleanupIntervalMs: 0 })
    const limiters = limitersOn(backend, timeoutMs)
    const unhandled = watchUnhandled()
    const loop = monitorEventLoopDelay({ resolution: 10 })
    let phase = 'before'
    const loads = limiters.map((l) =>
      startLoad({
        ratePerSec,
        phase: () => phase,
        identity: (i, p) => `lock-${p}-${Math.floor(i / (2 * LIMIT))}`,
        call: (identity) => l.limiter.check(identity, RULE),
        hangMs: 10_000,
      }),
    )
    const recoveryMs = new Map<Policy, number>()
    let lockedAt = 0
    let releasedAt = 0
    try {
      for (const l of limiters) expect((await l.limiter.check('warm', RULE)).source).toBe('backend')
      loop.enable()
      await sleep(500)
      phase = 'locking'
      const holder = startWorker('sqlite-lock', { file })
      lockedAt = (await holder.next<{ at: number }>('locked')).at
      await sleep(50)
      phase = 'locked'
      await sleep(holdMs - 100)
      phase = 'releasing'
      holder.child.send('release')
      releasedAt = (await holder.next<{ at: number }>('released')).at
      expect(await holder.exited).toEqual({ code: 0, signal: null })
      // Each limiter decides on the file again: how long after the release.
      await Promise.all(
        limiters.map(async (l) => {
          let n = 0
          await waitUntil(
            `${l.policy} to decide on the file again`,
            async () => (await l.limiter.check(`lock-recover-${n++}`, '1000/s')).source === 'backend',
            10_000,
            5,
          )
          recoveryMs.set(l.policy, Date.now() - releasedAt)
        }),
      )
      phase = 'after'
      await sleep(1000)
    } finally {
      await Promise.all(loads.map((l) => l.stop()))
      loop.disable()
    }
    const worstStallMs = Math.max(0, loop.max / 1e6 - 10)

    const bound = timeoutMs + marginMs
    for (const [i, l] of limiters.entries()) {
      const calls = (loads[i] as (typeof loads)[number]).calls
      const problems: string[] = []
      for (const c of calls) {
        if (c.state !== 'resolved') problems.push(`${c.identity}: ${c.state} ${String(c.error)}`)
        else if (c.latencyMs > bound) problems.push(`${c.phase} ${c.identity}: ${round(c.latencyMs)} ms`)
        const d = c.decision
        if (d === undefined) continue
        const ok =
          c.phase === 'locked'
            ? isPolicy(l.policy, d, ['ERR_FASTLIMIT_TIMEOUT', 'ERR_FASTLIMIT_CIRCUIT_OPEN'])
            : c.phase === 'before' || c.phase === 'after'
              ? d.source === 'backend' && d.error === undefined
              : true
        if (!ok) problems.push(`${c.phase} ${c.identity}: unexpected ${JSON.stringify(d)}`)
      }
      expect(problems.slice(0, 10), `${l.policy}`).toEqual([])
      // Over the limit: an identity decided by the file never admits more than the limit.
      for (const [identity, e] of admittedBy(calls.filter((c) => c.decision?.source === 'backend'))) {
        expect(e.admitted, identity).toBeLessThanOrEqual(LIMIT)
      }
    }
    // Nothing refused or waited for during the lock was charged to the file afterwards.
    const lockedIds = new Set(
      loads.flatMap((load) => load.calls.filter((c) => c.phase === 'locked').map((c) => c.identity)),
    )
    for (const l of limiters) {
      for (const id of [...lockedIds].filter((x) => x.startsWith('lock-locked-')).slice(0, 5)) {
        expect((await l.limiter.peek(id, RULE)).remaining, `${l.policy} ${id}`).toBe(LIMIT)
      }
    }
    const exact: string[] = []
    for (const l of limiters) {
      expect(await probeExact(l.limiter, `lock-exact-${l.policy}`)).toEqual({
        admitted: LIMIT,
        sources: ['backend'],
      })
      exact.push(`${l.policy} ${LIMIT}/${2 * LIMIT}`)
    }
    unhandled.stop()
    expect(unhandled.seen).toEqual([])
    // Generous: a blocked loop stalled busyTimeoutMs (1000 ms) per check before; scheduling noise aside, ~0 now.
    expect(worstStallMs).toBeLessThan(500)
    expect(backend.database.pragma('integrity_check', { simple: true })).toBe('ok')
    recorder.details.lock = {
      lockedAt,
      releasedAt,
      heldMs: releasedAt - lockedAt,
      worstStallMs: round(worstStallMs),
    }

    for (const [i, l] of limiters.entries()) {
      const calls = (loads[i] as (typeof loads)[number]).calls
      const during = calls.filter((c) => c.phase === 'locked')
      recorder.add({
        fault: `sqlite: BEGIN EXCLUSIVE held ${round((releasedAt - lockedAt) / 1000)} s by another process, timeoutMs ${timeoutMs}`,
        policy: l.policy,
        requests: calls.length,
        ratePerSec,
        outcomesDuringFault:
          `${formatTally(tally(during, (c) => `${outcomeOf(c)} (${c.decision?.error?.code ?? 'no error'})`))}; ` +
          `worst event-loop stall ${round(worstStallMs)} ms; admitted over the limit 0`,
        backendErrors: formatTally(l.errors),
        maxLatencyDuringFaultMs: latencySummary(during).maxMs,
        p99LatencyDuringFaultMs: latencySummary(during).p99Ms,
        boundMs: bound,
        worstLoopStallMs: round(worstStallMs),
        admittedOverLimit: 0,
        hung: 0,
        unhandledRejections: unhandled.seen.length,
        recoveryMs: round(recoveryMs.get(l.policy) ?? -1),
        exactAfter: `${exact[i]} on a fresh id; identities of the lock uncharged; integrity ok`,
      })
    }
    for (const l of limiters) await l.limiter.close()
    await backend.close()
  })

  it('a holder SIGKILLed while it holds the lock does not wedge the file', async () => {
    const file = path.join(dir, 'killed-holder.db')
    const backend = new SQLiteBackend(file, { cleanupIntervalMs: 0 })
    const limiter = new FastLimit({
      backend,
      timeoutMs: 100,
      onBackendError: 'fail-closed',
      onError: () => undefined,
    })
    try {
      const killed = startWorker('sqlite-lock', { file })
      await killed.next('locked')
      const during = await limiter.check('killed-holder', RULE)
      expect(during).toMatchObject({ reason: 'fail-closed' })
      expect(during.error?.code).toBe('ERR_FASTLIMIT_TIMEOUT')
      killed.child.kill('SIGKILL')
      await killed.exited
      expect(await probeExact(limiter, 'killed-holder')).toEqual({ admitted: LIMIT, sources: ['backend'] })
      expect(backend.database.pragma('integrity_check', { simple: true })).toBe('ok')
    } finally {
      await limiter.close()
      await backend.close()
    }
  })
})

/** Writes `file` until the file system refuses: returns the bytes written. */
function fill(file: string): number {
  const fd = fs.openSync(file, 'w')
  let written = 0
  try {
    for (const size of [64 * 1024, 4096, 512, 1]) {
      const chunk = Buffer.alloc(size, 1)
      for (;;) {
        try {
          written += fs.writeSync(fd, chunk)
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
          break
        }
      }
    }
  } finally {
    fs.closeSync(fd)
  }
  return written
}

describe('SQLite: a full file system', () => {
  it.skipIf(process.getuid?.() !== 0)(
    'a 1 MB tmpfs filled up: every check is ERR_FASTLIMIT_STORE_FULL with the policy, nothing charged, exact once there is room',
    async () => {
      const mount = path.join(dir, 'tmpfs')
      fs.mkdirSync(mount)
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mount])
      mounts.push(mount)
      const backend = new SQLiteBackend(path.join(mount, 'limits.db'), { cleanupIntervalMs: 0 })
      const limiters = limitersOn(backend, 1000)
      try {
        for (const l of limiters) expect((await l.limiter.check('warm', RULE)).source).toBe('backend')
        const filler = path.join(mount, 'filler')
        fill(filler)
        const perLimiter = 300
        const seen = new Map<Policy, Decision[]>()
        let maxLatency = 0
        for (const l of limiters) {
          const ds: Decision[] = []
          for (let i = 0; i < perLimiter; i++) {
            const t = performance.now()
            ds.push(await l.limiter.check(`full-${Math.floor(i / (2 * LIMIT))}`, RULE))
            maxLatency = Math.max(maxLatency, performance.now() - t)
          }
          seen.set(l.policy, ds)
          const codes = new Set(ds.map((d) => d.error?.code))
          // The store's own error first, then the breaker's while it is open: the policy every time.
          expect(
            ds.every((d) =>
              isPolicy(l.policy, d, ['ERR_FASTLIMIT_STORE_FULL', 'ERR_FASTLIMIT_CIRCUIT_OPEN']),
            ),
            l.policy,
          ).toBe(true)
          expect(codes.has('ERR_FASTLIMIT_STORE_FULL')).toBe(true)
          expect(l.errors.ERR_FASTLIMIT_STORE_FULL).toBeGreaterThan(0)
        }
        // Room again.
        const freed = Date.now()
        fs.rmSync(filler)
        const recoveryMs = new Map<Policy, number>()
        for (const l of limiters) {
          let n = 0
          await waitUntil(
            `${l.policy} to decide on the file again`,
            async () => (await l.limiter.check(`full-recover-${n++}`, '1000/s')).source === 'backend',
            10_000,
            5,
          )
          recoveryMs.set(l.policy, Date.now() - freed)
        }
        // Nothing refused while full was charged to the file.
        for (const l of limiters) expect((await l.limiter.peek('full-0', RULE)).remaining).toBe(LIMIT)
        for (const l of limiters) {
          const ds = seen.get(l.policy) as Decision[]
          const exact = await probeExact(l.limiter, `full-exact-${l.policy}`)
          expect(exact).toEqual({ admitted: LIMIT, sources: ['backend'] })
          recorder.add({
            fault: 'sqlite: the file system full (1 MB tmpfs filled up)',
            policy: l.policy,
            requests: ds.length,
            outcomesDuringFault:
              formatTally(
                tally(
                  ds,
                  (d) =>
                    `${d.source === 'fallback' ? 'fallback:' : ''}${d.reason} (${d.error?.code ?? 'no error'})`,
                ),
              ) +
              (l.policy === 'fail-open'
                ? `; admitted by the fail-open policy ${ds.filter((d) => d.allowed).length}`
                : '; admitted over the limit 0'),
            backendErrors: formatTally(l.errors),
            maxLatencyDuringFaultMs: round(maxLatency),
            boundMs: 1000,
            admittedOverLimit:
              l.policy === 'fail-open' ? `${ds.filter((d) => d.allowed).length} by the fail-open policy` : 0,
            hung: 0,
            unhandledRejections: 0,
            recoveryMs: round(recoveryMs.get(l.policy) ?? -1),
            exactAfter: `${exact.admitted}/${2 * LIMIT} on a fresh id; refused ids uncharged`,
          })
        }
      } finally {
        for (const l of limiters) await l.limiter.close()
        await backend.close()
      }
    },
  )
})

/** A process deciding through FastLimit on `file`, once it has opened it. */
async function decider(file: string): Promise<Worker> {
  const w = startWorker('sqlite-decider', { file })
  await w.next('ready')
  return w
}

/** `n` checks of `identity` in the process: how many it admitted, and who decided. */
async function checks(w: Worker, identity: string, n: number): Promise<number> {
  w.child.send({ type: 'check', identity, rule: RULE, n })
  const r = await w.next<{ admitted: number; sources: string[] }>('checked')
  expect(r.sources).toEqual(['backend'])
  return r.admitted
}

describe('SQLite: the file deleted or replaced under running processes', () => {
  for (const how of [
    'deleted (with its -wal and -shm)',
    'replaced (another file renamed over it)',
  ] as const) {
    it(`${how}: the running process notices within fileCheckIntervalMs (1 s) and reopens; two processes admit the limit once`, async () => {
      const sub = path.join(dir, how.startsWith('deleted') ? 'deleted' : 'replaced')
      fs.mkdirSync(sub)
      const file = path.join(sub, 'limits.db')
      const a = await decider(file)
      expect(await checks(a, 'k', 2)).toBe(2)
      let used = 0
      const changedAt = Date.now()
      if (how.startsWith('deleted')) {
        for (const f of [file, `${file}-wal`, `${file}-shm`]) fs.rmSync(f)
      } else {
        // The replacement: a database where k has already used 2 of its limit.
        const replacement = path.join(sub, 'replacement.db')
        const r = new SQLiteBackend(replacement, { cleanupIntervalMs: 0 })
        expect((await new FastLimit({ backend: r }).check('k', RULE, { cost: 2 })).allowed).toBe(true)
        await r.close()
        used = 2
        fs.renameSync(replacement, file)
      }
      const noticedAt = (await a.next<{ at: number }>('reopened')).at
      const b = await decider(file)
      const admitted = [await checks(a, 'k', 4), await checks(b, 'k', 4), await checks(a, 'k', 2)]
      const total = admitted.reduce((x, y) => x + y, 0)
      expect(total, `admitted ${admitted.join(' + ')}`).toBe(LIMIT - used)
      const c = new SQLiteBackend(file, { cleanupIntervalMs: 0 })
      const integrity = c.database.pragma('integrity_check', { simple: true })
      await c.close()
      expect(integrity).toBe('ok')
      for (const w of [a, b]) w.child.send({ type: 'close' })
      await Promise.all([a.exited, b.exited])
      recorder.add({
        fault: `sqlite: the file ${how} under a running process`,
        policy: 'fail-closed',
        requests: 2 + 10,
        outcomesDuringFault: `noticed and reopened after ${noticedAt - changedAt} ms; then 2 processes admitted ${admitted.join(' + ')} = ${total} of ${LIMIT - used} left`,
        backendErrors: '',
        maxLatencyDuringFaultMs: null,
        boundMs: null,
        admittedOverLimit: total - (LIMIT - used),
        hung: 0,
        unhandledRejections: 0,
        recoveryMs: noticedAt - changedAt,
        exactAfter: `exact across 2 processes; integrity ok`,
      })
    })
  }
})
