// PostgreSQL faults: the server SIGKILLed and restarted mid-run (a server of our own, initdb in a temp dir on a
// free port), connections killed with pg_terminate_backend mid-run, a row lock held by another session past the
// deadline, and a full disk (a tablespace on a small tmpfs). Three error policies each; exact again after.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { type Decision, FastLimit, type FastlimitError, MemoryBackend, storageKey } from '@fastlimit/core'
import { PostgresBackend } from '@fastlimit/postgres'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createDatabase, OwnServer, type TestDatabase } from '../../../packages/postgres/test/databases'
import { closeLimiters, POLICIES, type PolicyLimiter, probeExact, runFault } from './fault-scenario'
import { Recorder, round, sleep, watchUnhandled } from './helpers'

// Two round trips and, after an outage, new connections (a fork on the server each): on this loaded
// 2-core machine a healthy decision can take a few hundred ms, which must not read as a fault.
const TIMEOUT_MS = 500
// A loaded 2-core machine may run a timer late; a hang would be seconds or forever.
const MARGIN_MS = 800
const recorder = new Recorder('postgres-faults', 'fault')
const cleanups: Array<() => Promise<unknown>> = []

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined)
  recorder.save()
}, 60_000)

/**
 * Waits until every call of the 'before' phase has settled (each does by its deadline): a slow one, on
 * this loaded machine, must not meet the fault and read as a failure of the healthy phase.
 */
const settleBefore = () => sleep(TIMEOUT_MS)

/** The three limiters of a fault, each on its own PostgresBackend (its own pool) on `url`. */
function makeLimiters(url: string, tableName = 'fastlimit'): PolicyLimiter[] {
  return POLICIES.map((policy) => {
    const backend = new PostgresBackend(url, { tableName, poolSize: 10, connectTimeoutMs: 1000 })
    const fallback = policy === 'fallback' ? new MemoryBackend({ maxKeys: 10_000 }) : undefined
    const errors: Record<string, number> = {}
    const limiter = new FastLimit({
      backend,
      prefix: policy,
      timeoutMs: TIMEOUT_MS,
      onBackendError: fallback === undefined ? (policy as 'fail-open' | 'fail-closed') : { fallback },
      onError: (err: FastlimitError) => {
        errors[err.code] = (errors[err.code] ?? 0) + 1
      },
    })
    return { policy, limiter, backend, fallback, errors }
  })
}

async function adminQuery(url: string, text: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url })
  client.on('error', () => undefined)
  await client.connect()
  try {
    return await client.query(text)
  } finally {
    await client.end().catch(() => undefined)
  }
}

describe('PostgreSQL: our own server', () => {
  it('SIGKILL mid-load, 3 s down, restart on the same port (crash recovery): policy within timeoutMs, then exact again', async () => {
    const server = await OwnServer.start()
    cleanups.push(() => server.stop())
    const limiters = makeLimiters(server.url)
    try {
      await runFault({
        fault: 'postgres: SIGKILL, 3 s down, restart',
        limiters,
        recorder,
        timeoutMs: TIMEOUT_MS,
        marginMs: MARGIN_MS,
        ratePerSec: 50,
        beforeMs: 2000,
        injure: async () => {
          await settleBefore()
          await server.kill('SIGKILL')
        },
        outageMs: 3000,
        heal: async () => {
          // The killed postmaster's children may take a moment to exit and free its shared memory.
          for (let attempt = 1; ; attempt++) {
            try {
              await server.startProcess()
              return
            } catch (err) {
              if (attempt >= 10) throw err
              await sleep(500)
            }
          }
        },
        afterMs: 2000,
      })
    } finally {
      await closeLimiters(limiters)
    }
  })

  it('every server process frozen (SIGSTOP) for 3 s: policy within timeoutMs, stuck connections dropped, then exact again', async () => {
    const server = await OwnServer.start()
    cleanups.push(() => server.stop())
    const limiters = makeLimiters(server.url)
    try {
      await runFault({
        fault: 'postgres: every server process SIGSTOPped for 3 s',
        limiters,
        recorder,
        timeoutMs: TIMEOUT_MS,
        marginMs: MARGIN_MS,
        ratePerSec: 50,
        beforeMs: 1500,
        injure: async () => {
          await settleBefore()
          server.signalAll('SIGSTOP')
        },
        outageMs: 3000,
        // A call started in the outage's last timeoutMs may be answered by the thawed server in time.
        outageGraceMs: TIMEOUT_MS,
        heal: async () => server.signalAll('SIGCONT'),
        afterMs: 1500,
      })
    } finally {
      server.signalAll('SIGCONT')
      await closeLimiters(limiters)
    }
  })

  it('a full disk (a tablespace on a 3 MB tmpfs): ERR_FASTLIMIT_STORE_FULL and the policy, nothing crashes, exact once there is room', async (ctx) => {
    if (process.getuid?.() !== 0) ctx.skip('mounting a tmpfs needs root')
    const server = await OwnServer.start()
    cleanups.push(() => server.stop())
    const mount = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-pg-full-'))
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', mount])
    } catch (err) {
      fs.rmSync(mount, { recursive: true, force: true })
      ctx.skip(`cannot mount a tmpfs here: ${(err as Error).message}`)
    }
    cleanups.push(async () => {
      execFileSync('umount', ['-l', mount])
      fs.rmSync(mount, { recursive: true, force: true })
    })
    const pgUid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim())
    const pgGid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim())
    const space = path.join(mount, 'space')
    fs.mkdirSync(space)
    fs.chownSync(space, pgUid, pgGid)
    await adminQuery(server.url, `CREATE TABLESPACE tiny LOCATION '${space}'`)
    // The table as PostgresBackend would create it, placed on the small tablespace.
    await adminQuery(
      server.url,
      `CREATE TABLE fastlimit (key bytea NOT NULL, bucket bytea NOT NULL, state text NOT NULL,
         expires_at bigint NOT NULL, PRIMARY KEY (key, bucket) USING INDEX TABLESPACE tiny) TABLESPACE tiny`,
    )
    const limiters = makeLimiters(server.url)
    const unhandled = watchUnhandled()
    try {
      for (const l of limiters) expect((await l.limiter.check('warm', '5/h')).source).toBe('backend')
      // Fill what is left of the tmpfs, so the next pages the table needs cannot be allocated.
      const filler = path.join(mount, 'filler')
      try {
        execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k'], { stdio: 'ignore' })
      } catch {
        // dd stops with an error when the disk is full: that is the point.
      }
      const seen: Record<string, number> = {}
      const latencies: number[] = []
      let full = 0
      // New identities need new rows and, soon, new pages.
      for (let i = 0; i < 400 && full < 6; i++) {
        for (const l of limiters) {
          const t = performance.now()
          const d = await l.limiter.check(`fill-${i}-${'x'.repeat(400)}`, '5/h')
          latencies.push(performance.now() - t)
          if (d.error?.code === 'ERR_FASTLIMIT_STORE_FULL') {
            full++
            const cause = d.error.cause as { code?: string }
            expect(cause.code).toBe('53100')
            if (l.policy === 'fail-open') expect(d).toMatchObject({ allowed: true, reason: 'fail-open' })
            if (l.policy === 'fail-closed') expect(d).toMatchObject({ allowed: false, reason: 'fail-closed' })
            if (l.policy === 'fallback') expect(d.source).toBe('fallback')
          }
          const k = `${l.policy}: ${d.error?.code ?? d.source}`
          seen[k] = (seen[k] ?? 0) + 1
        }
      }
      expect(full, 'calls that met the full disk').toBeGreaterThan(0)
      for (const l of limiters) expect(l.errors.ERR_FASTLIMIT_STORE_FULL ?? 0).toBeGreaterThan(0)
      fs.rmSync(filler)
      // Room again: fresh identities are exact, on the backend (the breaker may need one probe).
      const exact: string[] = []
      for (const l of limiters) {
        for (let wait = 0; wait < 50; wait++) {
          if ((await l.limiter.check(`room-${wait}`, '1000/s')).source === 'backend') break
          await sleep(100)
        }
        const p = await probeExact(l.limiter, `after-full-${l.policy}`)
        expect(p).toEqual({ admitted: 5, sources: ['backend'] })
        exact.push(`${l.policy} 5/5`)
      }
      unhandled.stop()
      expect(unhandled.seen).toEqual([])
      recorder.add({
        fault: 'postgres: disk full (tablespace on a 3 MB tmpfs)',
        policy: POLICIES.join(', '),
        requests: latencies.length,
        outcomesDuringFault: Object.entries(seen)
          .map(([k, v]) => `${k} ${v}`)
          .join('; '),
        backendErrors: limiters
          .map((l) => `${l.policy}: STORE_FULL ${l.errors.ERR_FASTLIMIT_STORE_FULL ?? 0}`)
          .join(', '),
        maxLatencyDuringFaultMs: round(Math.max(...latencies)),
        boundMs: TIMEOUT_MS + MARGIN_MS,
        hung: 0,
        unhandledRejections: unhandled.seen.length,
        exactAfter: `${exact.join(', ')} once there was room`,
      })
    } finally {
      unhandled.stop()
      await closeLimiters(limiters)
    }
  })
})

describe("PostgreSQL: the machine's server, a database of our own", () => {
  let db: TestDatabase
  beforeAll(async () => {
    db = await createDatabase()
    cleanups.push(() => db.drop())
  }, 60_000)

  it('connections killed with pg_terminate_backend every 50 ms for 1.5 s mid-load: policy within timeoutMs, then exact again', async () => {
    const limiters = makeLimiters(db.url)
    let killing: Promise<void> | undefined
    let stop = false
    let killed = 0
    try {
      await runFault({
        fault: 'postgres: pg_terminate_backend every 50 ms',
        limiters,
        recorder,
        timeoutMs: TIMEOUT_MS,
        marginMs: MARGIN_MS,
        ratePerSec: 50,
        beforeMs: 1500,
        injure: async () => {
          await settleBefore()
          const admin = new pg.Client({ connectionString: db.url })
          admin.on('error', () => undefined)
          await admin.connect()
          killing = (async () => {
            try {
              while (!stop) {
                // Only this run's database: nothing else on the server is touched.
                const r = await admin.query(
                  'SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity ' +
                    'WHERE datname = current_database() AND pid <> pg_backend_pid()',
                )
                killed += r.rows[0].n as number
                await sleep(50)
              }
            } finally {
              await admin.end().catch(() => undefined)
            }
          })()
          await sleep(60)
        },
        outageMs: 1500,
        // Calls between two kills may well be decided by the database: only the policy or the backend is required.
        mustFail: () => false,
        heal: async () => {
          stop = true
          await killing
        },
        afterMs: 1500,
      })
      recorder.details['pg_terminate_backend:killed'] = killed
      expect(killed).toBeGreaterThan(0)
    } finally {
      stop = true
      await killing
      await closeLimiters(limiters)
    }
  })

  it('a row lock held by another session for 2.5 s: each policy decides within timeoutMs + margin, nothing is charged late, exact after', async () => {
    const limiters = makeLimiters(db.url, 'locked')
    const holder = new pg.Client({ connectionString: db.url })
    holder.on('error', () => undefined)
    await holder.connect()
    const unhandled = watchUnhandled()
    try {
      for (const l of limiters) expect((await l.limiter.check('locked-id', '5/h')).source).toBe('backend')
      // The rows of 'locked-id' under each limiter's prefix, locked as a long transaction elsewhere would.
      const keys = await Promise.all(
        limiters.map(
          async (l) =>
            `E'\\\\x${Buffer.from(await storageKey(l.policy, 'locked-id')).toString('hex')}'::bytea`,
        ),
      )
      const locked = await holder.query(
        `BEGIN; SELECT key FROM locked WHERE key IN (${keys.join(',')}) FOR UPDATE`,
      )
      expect((locked as unknown as pg.QueryResult[])[1]?.rowCount).toBe(3)
      const lockedAt = performance.now()
      const latencies: number[] = []
      const seen: Record<string, number> = {}
      // Each limiter tries 4 more calls (the limit is 5, one is spent): all must get the policy, none charged.
      await Promise.all(
        limiters.map(async (l) => {
          for (let i = 0; i < 4; i++) {
            const t = performance.now()
            const d: Decision = await l.limiter.check('locked-id', '5/h')
            latencies.push(performance.now() - t)
            expect(d.error?.code, `${l.policy}: ${JSON.stringify(d)}`).toBe('ERR_FASTLIMIT_TIMEOUT')
            const k = `${l.policy}: ${d.source === 'fallback' ? 'fallback:' : ''}${d.reason}`
            seen[k] = (seen[k] ?? 0) + 1
          }
        }),
      )
      // Keep the lock well past every deadline, then release it: late calls must not apply now.
      await sleep(Math.max(0, 2500 - (performance.now() - lockedAt)))
      await holder.query('COMMIT')
      await sleep(300)
      const exact: string[] = []
      for (const l of limiters) {
        const ds = await Promise.all(Array.from({ length: 10 }, () => l.limiter.check('locked-id', '5/h')))
        // One was spent before the lock; the 12 calls during it charged nothing.
        expect(ds.filter((d) => d.allowed).length, l.policy).toBe(4)
        expect(new Set(ds.map((d) => d.source))).toEqual(new Set(['backend']))
        exact.push(`${l.policy} 4/4 left`)
      }
      unhandled.stop()
      expect(unhandled.seen).toEqual([])
      const maxLatency = Math.max(...latencies)
      expect(maxLatency).toBeLessThan(TIMEOUT_MS + MARGIN_MS)
      recorder.add({
        fault: 'postgres: row lock held by another session for 2.5 s',
        policy: POLICIES.join(', '),
        requests: latencies.length,
        outcomesDuringFault: Object.entries(seen)
          .map(([k, v]) => `${k} ${v}`)
          .join('; '),
        backendErrors: limiters
          .map(
            (l) =>
              `${l.policy}: ${Object.entries(l.errors)
                .map(([k, v]) => `${k} ${v}`)
                .join(' ')}`,
          )
          .join(', '),
        maxLatencyDuringFaultMs: round(maxLatency),
        boundMs: TIMEOUT_MS + MARGIN_MS,
        hung: 0,
        unhandledRejections: unhandled.seen.length,
        exactAfter: `${exact.join(', ')} after release: nothing charged late`,
      })
    } finally {
      unhandled.stop()
      await holder.query('ROLLBACK').catch(() => undefined)
      await holder.end().catch(() => undefined)
      await closeLimiters(limiters)
    }
  })
})
