// SQLite faults: processes SIGKILLed mid-transaction lose nothing committed and corrupt nothing; a database
// locked past busyTimeoutMs gets the error policy, not a crash, and decisions are exact once it is free.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { type BucketConfig, type Decision, FastLimit, FastlimitError, MemoryBackend } from '@fastlimit/core'
import { SQLiteBackend } from '@fastlimit/sqlite'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { Recorder, round, sleep, watchUnhandled } from './helpers'
import { killWorkers, startWorker, type Worker } from './workers'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-reliability-sqlite-'))
const recorder = new Recorder('sqlite-faults', 'fault')
const NOW = 1_700_000_000_000
const DAY = 86_400_000

afterEach(() => killWorkers())
afterAll(() => {
  killWorkers()
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
        const used = buckets.map((b) => limit - backend.peekSync('victim', b).remaining)
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
      const all = backend.checkAndIncrementAllSync('victim', buckets, left)
      expect(all.map((r) => r.allowed)).toEqual([true, true, true])
      const over = backend.checkAndIncrementAllSync('victim', buckets, 1)
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

type Policy = 'fail-open' | 'fail-closed' | 'fallback' | 'throw'
const POLICIES: Policy[] = ['fail-open', 'fail-closed', 'fallback', 'throw']

describe('SQLite: a database locked past busyTimeoutMs', () => {
  it('another process holds BEGIN EXCLUSIVE: each policy decides within busyTimeoutMs + margin, nothing is charged, exact after release', async () => {
    const file = path.join(dir, 'locked.db')
    const busyTimeoutMs = 200
    const marginMs = 800
    const backend = new SQLiteBackend(file, { busyTimeoutMs, cleanupIntervalMs: 0 })
    const unhandled = watchUnhandled()
    const errors: Record<string, number> = {}
    const limiters = new Map<Policy, FastLimit>(
      POLICIES.map((p) => [
        p,
        new FastLimit({
          backend,
          prefix: p,
          onBackendError: p === 'fallback' ? { fallback: new MemoryBackend() } : p,
          onError: (e) => {
            errors[e.code] = (errors[e.code] ?? 0) + 1
          },
        }),
      ]),
    )
    try {
      for (const l of limiters.values()) expect((await l.check('warm', '5/h')).source).toBe('backend')
      const holder = startWorker('sqlite-lock', { file })
      await holder.next('locked')
      const latencies: number[] = []
      const seen: Record<string, number> = {}
      for (const [policy, l] of limiters) {
        for (let i = 0; i < 3; i++) {
          const t = performance.now()
          let d: Decision | undefined
          let err: unknown
          try {
            d = await l.check('locked-id', '5/h')
          } catch (e) {
            err = e
          }
          latencies.push(performance.now() - t)
          if (policy === 'throw') {
            expect(err).toBeInstanceOf(FastlimitError)
            expect((err as FastlimitError).code).toBe('ERR_FASTLIMIT_BACKEND')
            expect(String(((err as FastlimitError).cause as { code?: string }).code)).toMatch(/^SQLITE_BUSY/)
            seen['throw: rejected ERR_FASTLIMIT_BACKEND'] =
              (seen['throw: rejected ERR_FASTLIMIT_BACKEND'] ?? 0) + 1
            continue
          }
          const decision = d as Decision
          expect(decision.error?.code).toBe('ERR_FASTLIMIT_BACKEND')
          expect(String((decision.error?.cause as { code?: string } | undefined)?.code)).toMatch(
            /^SQLITE_BUSY/,
          )
          if (policy === 'fail-open')
            expect(decision).toMatchObject({ allowed: true, reason: 'fail-open', source: 'policy' })
          if (policy === 'fail-closed')
            expect(decision).toMatchObject({ allowed: false, reason: 'fail-closed', source: 'policy' })
          if (policy === 'fallback')
            expect(decision).toMatchObject({ allowed: true, reason: 'ok', source: 'fallback' })
          const k = `${policy}: ${decision.source === 'fallback' ? 'fallback:' : ''}${decision.reason}`
          seen[k] = (seen[k] ?? 0) + 1
        }
      }
      const maxLatency = Math.max(...latencies)
      expect(maxLatency).toBeLessThan(busyTimeoutMs + marginMs)
      holder.child.send('release')
      await holder.next('released')
      expect(await holder.exited).toEqual({ code: 0, signal: null })
      // Nothing was charged while locked: the identity still has its whole limit, on the backend.
      const exact: string[] = []
      for (const [policy, l] of limiters) {
        const ds = await Promise.all(Array.from({ length: 10 }, () => l.check('locked-id', '5/h')))
        expect(ds.filter((d) => d.allowed).length, policy).toBe(5)
        expect(new Set(ds.map((d) => d.source))).toEqual(new Set(['backend']))
        exact.push(`${policy} 5/5`)
      }

      // A holder killed while it holds the lock does not wedge the file.
      const killed = startWorker('sqlite-lock', { file })
      await killed.next('locked')
      const during = await (limiters.get('fail-closed') as FastLimit).check('killed-holder', '5/h')
      expect(during.reason).toBe('fail-closed')
      killed.child.kill('SIGKILL')
      await killed.exited
      const ds = await Promise.all(
        Array.from({ length: 10 }, () =>
          (limiters.get('fail-closed') as FastLimit).check('killed-holder', '5/h'),
        ),
      )
      expect(ds.filter((d) => d.allowed).length).toBe(5)
      expect(backend.database.pragma('integrity_check', { simple: true })).toBe('ok')

      unhandled.stop()
      expect(unhandled.seen).toEqual([])
      recorder.add({
        fault: `sqlite: BEGIN EXCLUSIVE held by another process past busyTimeoutMs ${busyTimeoutMs}`,
        policy: POLICIES.join(', '),
        requests: latencies.length,
        outcomesDuringFault: Object.entries(seen)
          .map(([k, v]) => `${k} ${v}`)
          .join('; '),
        backendErrors: Object.entries(errors)
          .map(([k, v]) => `${k} ${v}`)
          .join(', '),
        maxLatencyDuringFaultMs: round(maxLatency),
        boundMs: busyTimeoutMs + marginMs,
        hung: 0,
        unhandledRejections: unhandled.seen.length,
        exactAfter: `${exact.join(', ')} after release; 5/5 after the holder was SIGKILLed; integrity ok`,
      })
    } finally {
      unhandled.stop()
      for (const l of limiters.values()) await l.close()
      await backend.close()
    }
  })
})
