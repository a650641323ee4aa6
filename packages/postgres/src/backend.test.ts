// PostgresBackend beyond the conformance suite, on the machine's PostgreSQL: construction errors, keys as
// stored, deadlines (a lock held past one, a commit that arrives late), reconnect, the schema, the sweep.
import { type BucketConfig, FastLimit, FastlimitError } from '@fastlimit/core'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { createDatabase, freePort, type TestDatabase } from '../test/databases'
import { startDelayProxy } from '../test/proxy'
import { PostgresBackend, type PostgresPool } from './index'
import { encodeKey, MAX_RAW_KEY_BYTES } from './keys'

let db: TestDatabase
let pool: pg.Pool
beforeAll(async () => {
  db = await createDatabase()
  pool = new pg.Pool({ connectionString: db.url, max: 10 })
}, 60_000)
afterAll(async () => {
  await pool?.end()
  await db?.drop()
}, 60_000)

const HOUR: BucketConfig = { algorithm: 'fixed-window', limit: 3, windowMs: 3_600_000 }
const hex = (key: string) => `E'\\\\x${encodeKey(key).toString('hex')}'::bytea`

async function rejection(promise: Promise<unknown>): Promise<FastlimitError> {
  try {
    await promise
  } catch (err) {
    expect(err).toBeInstanceOf(FastlimitError)
    return err as FastlimitError
  }
  throw new Error('expected a rejection')
}

function configError(make: () => unknown): string {
  try {
    make()
  } catch (err) {
    expect(err).toBeInstanceOf(FastlimitError)
    expect((err as FastlimitError).code).toBe('ERR_FASTLIMIT_CONFIG')
    expect((err as Error).message).toMatch(/^\[fastlimit\] \[postgres\] /)
    return (err as Error).message
  }
  throw new Error('expected a ConfigError')
}

describe('construction', () => {
  it('refuses bad options with a ConfigError naming the option', () => {
    expect(configError(() => new PostgresBackend(pool, { tableName: 'bad-name' }))).toMatch(/tableName/)
    expect(configError(() => new PostgresBackend(pool, { tableName: 'pg_x' }))).toMatch(/tableName/)
    expect(configError(() => new PostgresBackend(pool, { tableName: 'x'.repeat(49) }))).toMatch(/tableName/)
    expect(configError(() => new PostgresBackend(pool, { schema: 'a"; DROP' }))).toMatch(/schema/)
    expect(configError(() => new PostgresBackend(pool, { cleanupIntervalMs: -1 }))).toMatch(
      /cleanupIntervalMs/,
    )
    expect(configError(() => new PostgresBackend(pool, { poolSize: 0 }))).toMatch(/poolSize/)
    expect(configError(() => new PostgresBackend(pool, { connectTimeoutMs: 1.5 }))).toMatch(
      /connectTimeoutMs/,
    )
    expect(configError(() => new PostgresBackend(pool, { clock: 5 as never }))).toMatch(/clock/)
    expect(configError(() => new PostgresBackend(pool, { durable: 'yes' as never }))).toMatch(/durable/)
    expect(configError(() => new PostgresBackend(pool, { table: 'x' } as never))).toMatch(
      /Unknown option "table"/,
    )
    expect(configError(() => new PostgresBackend(pool, null as never))).toMatch(/options must be an object/)
  })

  it('refuses a bad connection string at once, never echoing its password', () => {
    const secret = 's3cr3t-Pa55'
    const messages = [
      configError(() => new PostgresBackend(`postgres://app:${secret}@db:99999/app`)),
      configError(() => new PostgresBackend(`mysql://app:${secret}@db:3306/app`)),
      configError(() => new PostgresBackend(`postgres:///app?user=app&password=${secret}`)),
      configError(() => new PostgresBackend(`app:${secret} at db`)),
      configError(() => new PostgresBackend(`postgres://app:${secret}%zz@db/app`)),
      configError(() => new PostgresBackend('')),
    ]
    for (const m of messages) expect(m).not.toContain(secret)
    expect(messages[1]).toMatch(/"mysql:" URL/)
    expect(messages[2]).toMatch(/names no host/)
    expect(messages[4]).toMatch(/percent-escape/)
  })

  it('refuses a pg.Client (one transaction at a time) and anything else that is not a pool', () => {
    const client = new pg.Client({ connectionString: db.url })
    expect(configError(() => new PostgresBackend(client as never))).toMatch(/not a pg\.Client/)
    expect(configError(() => new PostgresBackend({} as never))).toMatch(/takes a pg\.Pool/)
    expect(configError(() => new PostgresBackend(42 as never))).toMatch(/takes a pg\.Pool/)
  })

  it('does no I/O and starts no timer at construction; the sweep timer starts, unref-ed, at the first call', async () => {
    const setInterval = vi.spyOn(globalThis, 'setInterval')
    try {
      // Nothing listens on this port: construction must not notice.
      const unreachable = new PostgresBackend(`postgres://u:p@127.0.0.1:${await freePort()}/x`, {
        connectTimeoutMs: 2000,
      })
      const backend = new PostgresBackend(pool, { tableName: 'lazy_timer' })
      expect(setInterval).not.toHaveBeenCalled()
      expect(backend.kind).toBe('postgres')
      expect((await backend.checkAndIncrement('k', HOUR, 1)).allowed).toBe(true)
      expect(setInterval).toHaveBeenCalledTimes(1)
      const timer = setInterval.mock.results[0]?.value as NodeJS.Timeout
      expect(timer.hasRef()).toBe(false)
      const down = await rejection(unreachable.checkAndIncrement('k', HOUR, 1))
      expect(down.code).toBe('ERR_FASTLIMIT_BACKEND')
      expect(down.message).toMatch(/ECONNREFUSED/)
      await unreachable.close()
      await backend.close()
    } finally {
      setInterval.mockRestore()
    }
  })

  it('never closes a pool you pass in; closes its own; calls after close reject ERR_FASTLIMIT_CLOSED', async () => {
    const mine = new PostgresBackend(pool, { tableName: 'close_test', cleanupIntervalMs: 0 })
    await mine.ready()
    await mine.close()
    await mine.close()
    expect((await pool.query('SELECT 1 AS one')).rows[0].one).toBe(1)
    expect((await rejection(mine.checkAndIncrement('k', HOUR, 1))).code).toBe('ERR_FASTLIMIT_CLOSED')

    const own = new PostgresBackend(db.url, { tableName: 'close_test', cleanupIntervalMs: 0 })
    await own.ready()
    const ownPool = own.pool as pg.Pool
    expect(ownPool.totalCount).toBeGreaterThan(0)
    await own.close()
    expect(ownPool.ended).toBe(true)
    expect(ownPool.totalCount).toBe(0)
  })
})

describe('pools', () => {
  it('works on any pool of the same shape; durable leaves synchronous_commit to the server', async () => {
    const texts: string[] = []
    const wrap = (inner: pg.Pool): PostgresPool => ({
      connect: async () => {
        const c = await inner.connect()
        return {
          query: (config) => {
            texts.push(config.text)
            return c.query(config)
          },
          release: (err) => c.release(err),
          on: (event, listener) => c.on(event, listener),
          removeListener: (event, listener) => c.removeListener(event, listener),
        }
      },
      end: () => Promise.resolve(),
      get totalCount() {
        return inner.totalCount
      },
      get idleCount() {
        return inner.idleCount
      },
    })
    for (const durable of [false, true]) {
      texts.length = 0
      const backend = new PostgresBackend(wrap(pool), { tableName: 'wrapped', durable, cleanupIntervalMs: 0 })
      await backend.checkAndIncrement(`k-${durable}`, HOUR, 1, { deadline: Date.now() + 5000 })
      expect(await backend.peek(`k-${durable}`, HOUR)).toMatchObject({ remaining: 2 })
      const decision = texts.find((t) => t.includes('FOR UPDATE')) as string
      expect(decision).toMatch(/set_config\('lock_timeout', '\d+', true\)/)
      if (durable) expect(decision).not.toMatch(/synchronous_commit/)
      else expect(decision).toMatch(/set_config\('synchronous_commit', 'off', true\)/)
      await backend.close()
    }
    // The wrapped pool's connections all went back.
    expect(pool.idleCount).toBe(pool.totalCount)
  })
})

describe('keys', () => {
  it('encodes injectively: UTF-8 for well-formed keys, 0xFF + UTF-16LE for lone surrogates, 0xFE + SHA-256 when long', () => {
    expect(encodeKey('fl:{user-1}').toString('utf8')).toBe('fl:{user-1}')
    expect(encodeKey('a\u0000b')).toEqual(Buffer.from([0x61, 0, 0x62]))
    expect(encodeKey('\ud800')).toEqual(Buffer.from([0xff, 0x00, 0xd8]))
    // A lone surrogate never meets U+FFFD, which is what a UTF-8 encoder would have made of it.
    expect(encodeKey('\ud800').equals(encodeKey('\ufffd'))).toBe(false)
    expect(encodeKey('\ud83d\udea6')).toEqual(Buffer.from('🚦', 'utf8'))
    const long = encodeKey('x'.repeat(MAX_RAW_KEY_BYTES + 1))
    expect(long.length).toBe(33)
    expect(long[0]).toBe(0xfe)
    expect(encodeKey('x'.repeat(MAX_RAW_KEY_BYTES)).length).toBe(MAX_RAW_KEY_BYTES)
    const samples = [
      '',
      '\u0000',
      '\u0000\u0000',
      'a',
      'a\u0000',
      '\ud800',
      '\udc00',
      '\ud800\udc00',
      '\ufffd',
      'é',
      'e\u0301',
    ]
    const seen = new Set(samples.map((k) => encodeKey(k).toString('hex')))
    expect(seen.size).toBe(samples.length)
  })

  for (const encoding of ['UTF8', 'LATIN1', 'SQL_ASCII']) {
    it(`keeps NUL, lone surrogates, U+FFFD and long keys apart in a ${encoding} database`, async () => {
      const other = await createDatabase(undefined, { encoding })
      const backend = new PostgresBackend(other.url, { cleanupIntervalMs: 0 })
      try {
        const one: BucketConfig = { algorithm: 'gcra', limit: 1, windowMs: 60_000 }
        const keys = [
          'a',
          'a\u0000',
          'a\u0000b',
          '\ud800',
          '\udc00',
          '\ufffd',
          '日本語',
          'x'.repeat(5000),
          'x'.repeat(5001),
        ]
        for (const k of keys)
          expect((await backend.checkAndIncrement(k, one, 1)).allowed, JSON.stringify(k)).toBe(true)
        for (const k of keys)
          expect((await backend.checkAndIncrement(k, one, 1)).allowed, JSON.stringify(k)).toBe(false)
        const admin = new pg.Client({ connectionString: other.url })
        await admin.connect()
        try {
          const { rows } = await admin.query(`SELECT encode(key, 'hex') AS k FROM fastlimit ORDER BY key`)
          expect(rows).toHaveLength(keys.length)
          const stored = new Set(rows.map((r) => r.k))
          for (const k of keys) expect(stored.has(encodeKey(k).toString('hex'))).toBe(true)
        } finally {
          await admin.end()
        }
      } finally {
        await backend.close()
        await other.drop()
      }
    })
  }
})

describe('deadlines', () => {
  it('a row lock held by another session past the deadline: ERR_FASTLIMIT_TIMEOUT near the deadline, nothing charged', async () => {
    const backend = new PostgresBackend(pool, { tableName: 'locked', cleanupIntervalMs: 0 })
    const holder = new pg.Client({ connectionString: db.url })
    await holder.connect()
    try {
      expect((await backend.checkAndIncrement('victim', HOUR, 1)).remaining).toBe(2)
      await holder.query(`BEGIN; SELECT 1 FROM locked WHERE key = ${hex('victim')} FOR UPDATE`)
      const started = performance.now()
      const err = await rejection(
        backend.checkAndIncrement('victim', HOUR, 1, { deadline: Date.now() + 300 }),
      )
      const elapsed = performance.now() - started
      expect(err.code).toBe('ERR_FASTLIMIT_TIMEOUT')
      expect((err.cause as { code?: string }).code).toBe('55P03')
      // The server stopped the wait at the deadline (generous bound: a loaded 2-core machine).
      expect(elapsed).toBeLessThan(300 + 1500)
      const all = await rejection(
        backend.checkAndIncrementAll('victim', [HOUR, { ...HOUR, limit: 9 }], 1, {
          deadline: Date.now() + 200,
        }),
      )
      expect(all.code).toBe('ERR_FASTLIMIT_TIMEOUT')
      await holder.query('COMMIT')
      // Only the first call was charged; the connection went back to the pool in a usable state.
      expect((await backend.peek('victim', HOUR)).remaining).toBe(2)
      expect((await backend.checkAndIncrement('victim', HOUR, 1)).remaining).toBe(1)
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined)
      await holder.end()
      await backend.close()
    }
  })

  it('a decision whose commit reaches the server after the deadline charges nothing (the check on the server clock)', async () => {
    const url = new URL(db.url)
    const proxy = await startDelayProxy({ host: url.hostname, port: Number(url.port || 5432) })
    url.host = `127.0.0.1:${proxy.port}`
    const backend = new PostgresBackend(url.toString(), { tableName: 'late_commit', cleanupIntervalMs: 0 })
    try {
      await backend.ready()
      expect((await backend.checkAndIncrement('late', HOUR, 1)).remaining).toBe(2)
      // The network now holds every message that carries a COMMIT for 600 ms: the first round trip
      // (the locks) comes back in time, the second (UPDATE; COMMIT) reaches the server late.
      proxy.delay((chunk) => chunk.includes(';COMMIT\u0000'), 600)
      const err = await rejection(backend.checkAndIncrement('late', HOUR, 1, { deadline: Date.now() + 300 }))
      expect(err.code).toBe('ERR_FASTLIMIT_TIMEOUT')
      expect(err.message).toMatch(/reached the database after its deadline/)
      proxy.delay(() => false, 0)
      expect((await backend.peek('late', HOUR)).remaining).toBe(2)
      // Without a deadline, the same delay charges (the check is what refused it above).
      proxy.delay((chunk) => chunk.includes(';COMMIT\u0000'), 600)
      expect((await backend.checkAndIncrement('late', HOUR, 1)).remaining).toBe(1)
    } finally {
      await backend.close()
      await proxy.close()
    }
  })
})

describe('reconnect', () => {
  it('drops the calls in flight (their transactions roll back), and the backend works on', async () => {
    const backend = new PostgresBackend(pool, { tableName: 'reconnect', cleanupIntervalMs: 0 })
    const holder = new pg.Client({ connectionString: db.url })
    await holder.connect()
    try {
      await backend.checkAndIncrement('stuck', HOUR, 1)
      await holder.query(`BEGIN; SELECT 1 FROM reconnect WHERE key = ${hex('stuck')} FOR UPDATE`)
      // No deadline: without reconnect this call would wait for the lock as long as the holder keeps it.
      // The rejection is taken at once, so it is handled whenever it comes.
      const inFlight = rejection(backend.checkAndIncrement('stuck', HOUR, 1))
      await new Promise((r) => setTimeout(r, 200))
      const started = performance.now()
      backend.reconnect(new Error('breaker opened'))
      const err = await inFlight
      expect(performance.now() - started).toBeLessThan(1000)
      expect(err.code).toBe('ERR_FASTLIMIT_BACKEND')
      await holder.query('COMMIT')
      // The dropped call never committed; the pool you passed is still open and in use.
      expect((await backend.peek('stuck', HOUR)).remaining).toBe(2)
      expect((await backend.checkAndIncrement('stuck', HOUR, 1)).remaining).toBe(1)
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined)
      await holder.end()
      await backend.close()
    }
  })

  it('a connection killed (pg_terminate_backend) mid-decision: ERR_FASTLIMIT_BACKEND, nothing charged, your pool works on', async () => {
    const backend = new PostgresBackend(pool, { tableName: 'terminated', cleanupIntervalMs: 0 })
    const holder = new pg.Client({ connectionString: db.url, application_name: 'holder' })
    await holder.connect()
    try {
      await backend.checkAndIncrement('victim', HOUR, 1)
      await holder.query(`BEGIN; SELECT 1 FROM terminated WHERE key = ${hex('victim')} FOR UPDATE`)
      // The rejection is taken at once: it may come while the holder's query below is still answering.
      const inFlight = rejection(
        backend.checkAndIncrement('victim', HOUR, 1, { deadline: Date.now() + 20_000 }),
      )
      // The decision's connection, waiting for the row lock inside its transaction.
      let pid: number | undefined
      for (let i = 0; i < 100 && pid === undefined; i++) {
        const { rows } = await holder.query(
          "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        pid = rows[0]?.pid
        if (pid === undefined) await new Promise((r) => setTimeout(r, 20))
      }
      expect(pid).toBeDefined()
      await holder.query(`SELECT pg_terminate_backend(${pid})`)
      const err = await inFlight
      expect(err.code).toBe('ERR_FASTLIMIT_BACKEND')
      expect((err.cause as { code?: string }).code).toBe('57P01')
      await holder.query('COMMIT')
      expect((await backend.peek('victim', HOUR)).remaining).toBe(2)
      expect((await backend.checkAndIncrement('victim', HOUR, 1)).remaining).toBe(1)
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined)
      await holder.end()
      await backend.close()
    }
  })

  it('replaces a pool it opened itself', async () => {
    const backend = new PostgresBackend(db.url, { tableName: 'reconnect_own', cleanupIntervalMs: 0 })
    try {
      await backend.ready()
      const before = backend.pool as pg.Pool
      backend.reconnect(new Error('breaker opened'))
      expect(backend.pool).not.toBe(before)
      await new Promise((r) => setTimeout(r, 50))
      expect(before.ended).toBe(true)
      expect((await backend.checkAndIncrement('k', HOUR, 1)).allowed).toBe(true)
    } finally {
      await backend.close()
    }
  })
})

describe('schema', () => {
  it('creates a schema and table of the given names, versioned, and refuses a table it did not create', async () => {
    const backend = new PostgresBackend(pool, {
      schema: 'Rate_Limits',
      tableName: 'State',
      cleanupIntervalMs: 0,
    })
    await backend.ready()
    const { rows } = await pool.query(
      `SELECT value FROM "Rate_Limits"."State_meta" WHERE name = 'schema_version'`,
    )
    expect(Number(rows[0].value)).toBe(1)
    await backend.close()

    await pool.query('CREATE TABLE app_users (id serial PRIMARY KEY, email text)')
    const foreign = new PostgresBackend(pool, { tableName: 'app_users', cleanupIntervalMs: 0 })
    const err = await rejection(foreign.ready())
    expect(err.code).toBe('ERR_FASTLIMIT_CONFIG')
    expect(err.message).toMatch(/did not create/)
    // A decision gets the same ConfigError (FastLimit rethrows it: a configuration to fix, not an outage).
    expect((await rejection(foreign.checkAndIncrement('k', HOUR, 1))).code).toBe('ERR_FASTLIMIT_CONFIG')
    expect((await pool.query('SELECT count(*)::int AS n FROM app_users')).rows[0].n).toBe(0)
    await foreign.close()
  })

  it('refuses a table written by a newer release', async () => {
    const backend = new PostgresBackend(pool, { tableName: 'future', cleanupIntervalMs: 0 })
    await backend.ready()
    await pool.query(`UPDATE future_meta SET value = 2 WHERE name = 'schema_version'`)
    const later = new PostgresBackend(pool, { tableName: 'future', cleanupIntervalMs: 0 })
    const err = await rejection(later.ready())
    expect(err.code).toBe('ERR_FASTLIMIT_CONFIG')
    expect(err.message).toMatch(/schema version 2, written by a newer @fastlimit\/postgres/)
    await backend.close()
    await later.close()
  })

  it('a table dropped under a running backend fails one call, then is created again', async () => {
    const backend = new PostgresBackend(pool, { tableName: 'dropped', cleanupIntervalMs: 0 })
    try {
      await backend.checkAndIncrement('k', HOUR, 1)
      await pool.query('DROP TABLE dropped')
      const err = await rejection(backend.checkAndIncrement('k', HOUR, 1))
      expect(err.code).toBe('ERR_FASTLIMIT_BACKEND')
      expect((err.cause as { code?: string }).code).toBe('42P01')
      expect((await backend.checkAndIncrement('k', HOUR, 1)).remaining).toBe(2)
    } finally {
      await backend.close()
    }
  })
})

describe('sweep and FastLimit', () => {
  it('deletes expired rows in batches and keeps live ones', async () => {
    let now = 1_700_000_000_000
    const backend = new PostgresBackend(pool, { tableName: 'sweep', cleanupIntervalMs: 0, clock: () => now })
    try {
      const short: BucketConfig = { algorithm: 'fixed-window', limit: 5, windowMs: 1000 }
      const calls = Array.from({ length: 1200 }, (_, i) => backend.checkAndIncrement(`old-${i}`, short, 1))
      await Promise.all(calls)
      await backend.checkAndIncrement('live', HOUR, 1)
      now += 120_000
      expect(await backend.sweep()).toBe(1200)
      expect(await backend.sweep()).toBe(0)
      expect((await pool.query('SELECT count(*)::int AS n FROM sweep')).rows[0].n).toBe(1)
      expect((await backend.peek('live', HOUR)).remaining).toBe(2)
    } finally {
      await backend.close()
    }
  })

  it('works under FastLimit: several rules, scopes, reset', async () => {
    const backend = new PostgresBackend(pool, { tableName: 'limiter', cleanupIntervalMs: 0 })
    const limiter = new FastLimit({ backend, timeoutMs: 2000 })
    try {
      const rules = ['2/min', '10/h']
      const ds = []
      for (let i = 0; i < 3; i++) ds.push(await limiter.check('user\u0000\ud800', rules))
      expect(ds.map((d) => d.allowed)).toEqual([true, true, false])
      expect(ds[2]?.source).toBe('backend')
      expect((await limiter.check('user\u0000\ud800', rules, { scope: 'api' })).allowed).toBe(true)
      await limiter.reset('user\u0000\ud800')
      expect((await limiter.check('user\u0000\ud800', rules)).allowed).toBe(true)
    } finally {
      await limiter.close()
      await backend.close()
    }
  })
})
