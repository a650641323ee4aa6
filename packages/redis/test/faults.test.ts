// RedisBackend when Redis misbehaves, on redis-servers of its own: calls that reach Redis past their
// deadline charge nothing; reconnect() drops every call in flight at once; a master demoted behind a VIP
// is left for the new one; a full Redis says so (ERR_FASTLIMIT_STORE_FULL); the first calls on a fresh
// Cluster backend wait for its connections; WAIT follows the calls that may charge; a Proxy works.
import { type BucketConfig, FastLimit, FastlimitError } from '@fastlimit/core'
import { Cluster, Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest'
import { RedisBackend } from '../src'
import { sample, serverDeadline } from '../src/clock'
import { backendOn, closeClient, urlOf } from './helpers'
import { startProxy } from './proxy'
import { command, infoField, type StandaloneSetup, startSentinel, startStandalone } from './servers'

const LIMIT = 5
const bucket: BucketConfig = Object.freeze({ algorithm: 'gcra', limit: LIMIT, windowMs: 3_600_000 })
const other: BucketConfig = Object.freeze({ algorithm: 'fixed-window', limit: 10, windowMs: 60_000 })

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

async function rejection(promise: Promise<unknown>): Promise<FastlimitError> {
  try {
    await promise
  } catch (err) {
    expect(err).toBeInstanceOf(FastlimitError)
    return err as FastlimitError
  }
  throw new Error('expected a rejection')
}

/** Retries `call` every 20 ms until it resolves; how long that took and how many attempts failed. */
async function eventually<T>(
  call: () => Promise<T>,
  timeoutMs = 10_000,
): Promise<{ value: T; ms: number; failures: string[] }> {
  const started = performance.now()
  const failures: string[] = []
  for (;;) {
    try {
      return { value: await call(), ms: performance.now() - started, failures }
    } catch (err) {
      failures.push((err as Error).message)
      if (performance.now() - started > timeoutMs) {
        throw new Error(`still failing after ${timeoutMs} ms: ${failures.slice(-3).join(' | ')}`)
      }
      await delay(20)
    }
  }
}

async function scriptCalls(port: number): Promise<number> {
  const stats = String(await command(port, 'INFO', 'commandstats'))
  let calls = 0
  for (const m of stats.matchAll(/^cmdstat_(eval|evalsha):calls=(\d+)/gm)) calls += Number(m[2])
  return calls
}

describe('wrappers', () => {
  it('works through a Proxy (no #private fields), and says it is a redis backend', async () => {
    const backend = backendOn('standalone', { keyPrefix: 'proxied:' })
    try {
      expect(backend.kind).toBe('redis')
      const wrapped = new Proxy(backend, {})
      expect(wrapped.kind).toBe('redis')
      const limiter = new FastLimit({ backend: wrapped, onBackendError: 'throw' })
      const decisions = []
      for (let i = 0; i < LIMIT + 1; i++) decisions.push(await limiter.check('someone', `${LIMIT}/h`))
      expect(decisions.map((d) => d.allowed)).toEqual([true, true, true, true, true, false])
      expect(decisions.every((d) => d.source === 'backend')).toBe(true)
      expect((await wrapped.peek('x', bucket)).remaining).toBe(LIMIT)
      wrapped.reconnect(new Error('test'))
      await eventually(() => wrapped.checkAndIncrementAll('y', [bucket, other], 1))
      await wrapped.clear()
      await wrapped.close()
    } finally {
      await backend.close()
    }
  })
})

describe('on a Redis of its own (DEBUG SLEEP)', () => {
  let server: StandaloneSetup
  let raw: Redis
  beforeAll(async () => {
    server = await startStandalone({ config: ['enable-debug-command yes'] })
    raw = new Redis({ port: server.port, host: '127.0.0.1' })
  })
  afterAll(async () => {
    await closeClient(raw)
    await server.stop()
  })

  /**
   * Puts the server to sleep for `seconds`, on a connection of its own that is ready before (so the
   * command reaches the server before anything sent afterwards); resolves once it is asleep.
   */
  async function stall(seconds: number): Promise<{ woken: Promise<void>; awake: () => boolean }> {
    let awake = false
    const sleeper = new Redis({ port: server.port, host: '127.0.0.1', lazyConnect: true })
    await sleeper.connect()
    const woken = sleeper.call('DEBUG', 'SLEEP', String(seconds)).then(() => {
      awake = true
      sleeper.disconnect()
    })
    await delay(100)
    return { woken, awake: () => awake }
  }

  describe('deadlines', () => {
    it('a call that reaches Redis past its deadline charges nothing and rejects with ERR_FASTLIMIT_TIMEOUT', async () => {
      const backend = RedisBackend.fromUrl(server.url, { keyPrefix: 'late:' })
      try {
        await backend.peek('warm', bucket)
        const { woken } = await stall(0.8)
        const deadline = Date.now() + 200
        const errors = await Promise.all([
          rejection(backend.checkAndIncrement('a', bucket, 1, { deadline })),
          rejection(backend.checkAndIncrement('b', bucket, 3, { deadline })),
          rejection(backend.checkAndIncrementAll('c', [bucket, other], 1, { deadline })),
          rejection(backend.peek('d', bucket, { deadline })),
        ])
        for (const err of errors) {
          expect(err.code).toBe('ERR_FASTLIMIT_TIMEOUT')
          expect(err.message).toMatch(
            /^\[fastlimit\] \[redis\] (checkAndIncrement|checkAndIncrementAll|peek) was applied \d+ ms past its deadline; nothing was charged\./,
          )
        }
        await woken
        for (const key of ['a', 'b', 'c'])
          expect((await backend.peek(key, bucket)).remaining, key).toBe(LIMIT)
        expect((await backend.peek('c', other)).remaining).toBe(10)
        expect(await raw.exists('late::a', 'late::b', 'late::c')).toBe(0)
      } finally {
        await backend.close()
      }
    })

    it('a call within its deadline is answered as usual, and a deadline already passed is not sent', async () => {
      const backend = RedisBackend.fromUrl(server.url, { keyPrefix: 'in-time:' })
      try {
        const deadline = Date.now() + 10_000
        expect(await backend.checkAndIncrement('a', bucket, 2, { deadline })).toMatchObject({
          allowed: true,
          remaining: 3,
        })
        expect(
          (await backend.checkAndIncrementAll('a', [bucket, other], 1, { deadline })).map((r) => r.remaining),
        ).toEqual([2, 9])
        expect((await backend.peek('a', bucket, { deadline })).remaining).toBe(2)
        expect((await backend.checkAndIncrement('a', bucket, 1, {})).remaining).toBe(1)
        const before = await scriptCalls(server.port)
        const err = await rejection(backend.checkAndIncrement('a', bucket, 1, { deadline: Date.now() - 1 }))
        expect(err.code).toBe('ERR_FASTLIMIT_TIMEOUT')
        expect(err.message).toMatch(/was not sent: its deadline passed/)
        expect(await scriptCalls(server.port)).toBe(before)
        for (const bad of [Number.NaN, '5', Number.POSITIVE_INFINITY]) {
          const e = await rejection(backend.checkAndIncrement('a', bucket, 1, { deadline: bad as number }))
          expect(e.code).toBe('ERR_FASTLIMIT_ARGUMENT')
          expect(e.message).toMatch(/options\.deadline must be epoch milliseconds/)
        }
        expect((await backend.peek('a', bucket)).remaining).toBe(1)
      } finally {
        await backend.clear()
        await backend.close()
      }
    })

    it.each([
      ['10 minutes ahead', 600_000],
      ['10 minutes behind', -600_000],
    ])('follows the server clock: an app clock %s changes nothing', async (_what, skew) => {
      const realNow = Date.now.bind(Date)
      const spy = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + skew)
      const backend = RedisBackend.fromUrl(server.url, { keyPrefix: `skew${skew}:` })
      try {
        const r = await backend.checkAndIncrement('a', bucket, 1, { deadline: Date.now() + 1000 })
        expect(r.remaining).toBe(LIMIT - 1)
        const { woken } = await stall(0.6)
        const err = await rejection(backend.checkAndIncrement('a', bucket, 1, { deadline: Date.now() + 150 }))
        expect(err.code).toBe('ERR_FASTLIMIT_TIMEOUT')
        await woken
        expect((await backend.peek('a', bucket)).remaining).toBe(LIMIT - 1)
      } finally {
        spy.mockRestore()
        await backend.clear()
        await backend.close()
      }
    })

    it("with timeSource 'client' the deadline is compared with the server's TIME", async () => {
      // A fake clock a day in the past decides the algorithm; the deadline is real time.
      const backend = RedisBackend.fromUrl(server.url, {
        keyPrefix: 'client-time:',
        timeSource: 'client',
        clock: () => 1_700_000_000_000,
      })
      try {
        const r = await backend.checkAndIncrement('a', bucket, 1, { deadline: Date.now() + 1000 })
        expect(r).toMatchObject({ allowed: true, remaining: LIMIT - 1 })
        const { woken } = await stall(0.6)
        const err = await rejection(backend.checkAndIncrement('a', bucket, 1, { deadline: Date.now() + 150 }))
        expect(err.code).toBe('ERR_FASTLIMIT_TIMEOUT')
        await woken
        expect((await backend.peek('a', bucket)).remaining).toBe(LIMIT - 1)
      } finally {
        await backend.clear()
        await backend.close()
      }
    })

    it('samples the server clock on each new connection and again every 5 s, from the calls themselves', async () => {
      // TIME calls sent as commands: commandstats counts the one inside each script too.
      const times = async () =>
        Number(/^cmdstat_time:calls=(\d+)/m.exec(await raw.info('commandstats'))?.[1] ?? 0) -
        (await scriptCalls(server.port))
      const backend = RedisBackend.fromUrl(server.url, { keyPrefix: 'resample:' })
      const realNow = performance.now.bind(performance)
      let skip = 0
      const spy = vi.spyOn(performance, 'now').mockImplementation(() => realNow() + skip)
      try {
        const before = await times()
        await backend.checkAndIncrement('a', bucket, 1, { deadline: Date.now() + 1000 })
        // One TIME when the connection became ready (the first call waits for it).
        expect(await times()).toBe(before + 1)
        // Within 5 s, none.
        for (let i = 0; i < 5; i++) await backend.peek('a', bucket, { deadline: Date.now() + 1000 })
        expect(await times()).toBe(before + 1)
        // 6 s later (on the monotonic clock), the next call samples again; and so does a new connection.
        skip = 6000
        await backend.peek('a', bucket, { deadline: Date.now() + 1000 })
        await delay(50)
        expect(await times()).toBe(before + 2)
        backend.reconnect(new Error('test'))
        await eventually(() => backend.peek('a', bucket, { deadline: Date.now() + 1000 }))
        await delay(50)
        expect(await times()).toBe(before + 3)
      } finally {
        spy.mockRestore()
        await backend.clear()
        await backend.close()
      }
    })

    it('never puts the server deadline after the real one', async () => {
      const client = new Redis({ port: server.port, host: '127.0.0.1' })
      try {
        await client.ping()
        for (let i = 0; i < 5; i++) {
          await sample(client, client)
          const appDeadline = Date.now() + 50
          const d = serverDeadline(client.stream, client, appDeadline) as number
          expect(d).toBeTypeOf('number')
          while (Date.now() < appDeadline) await delay(5)
          const [s, us] = await client.time()
          const serverNow = Number(s) * 1000 + Math.floor(Number(us) / 1000)
          // Reached on the server once the app's deadline has passed; and not absurdly early.
          expect(serverNow).toBeGreaterThanOrEqual(d)
          expect(serverNow - d).toBeLessThan(1000)
        }
      } finally {
        await closeClient(client)
      }
    })
  })

  describe('reconnect()', () => {
    it('fails every call in flight at once; none charges when the server wakes; then serves again', async () => {
      const backend = RedisBackend.fromUrl(server.url, { keyPrefix: 'dropped:' })
      try {
        await backend.peek('warm', bucket)
        const { woken, awake } = await stall(1.5)
        // Far enough ahead that a loaded machine's pauses cannot make a call time out before reconnect()
        // fails it, and still before the server wakes (1.5 s), so what reached it cannot charge.
        const deadline = Date.now() + 1000
        const outcomes: string[] = []
        const calls = Array.from({ length: 2000 }, (_, i) =>
          backend.checkAndIncrement(`k${i % 50}`, bucket, 1, { deadline }).then(
            () => 'answered',
            (err: FastlimitError) => `${err.code}${awake() ? ' after the server woke' : ''}`,
          ),
        )
        await delay(200)
        backend.reconnect(new Error('the breaker opened'))
        outcomes.push(...(await Promise.all(calls)))
        expect(new Set(outcomes)).toEqual(new Set(['ERR_FASTLIMIT_BACKEND']))
        await woken
        // Whatever reached the server's buffers ran past its deadline: nothing was charged.
        const { value } = await eventually(() => backend.checkAndIncrement('after', bucket, 1))
        expect(value.remaining).toBe(LIMIT - 1)
        for (let i = 0; i < 50; i++) expect((await backend.peek(`k${i}`, bucket)).remaining).toBe(LIMIT)
      } finally {
        await backend.clear().catch(() => undefined)
        await backend.close()
      }
    })

    it('connects a client you passed again, even one without a retryStrategy, and never closes it', async () => {
      const client = new Redis({ port: server.port, host: '127.0.0.1', retryStrategy: null })
      const backend = new RedisBackend({ client, keyPrefix: 'passed:' })
      try {
        expect((await backend.checkAndIncrement('a', bucket, 1)).remaining).toBe(LIMIT - 1)
        backend.reconnect(new Error('test'))
        const { value } = await eventually(() => backend.checkAndIncrement('a', bucket, 1))
        expect(value.remaining).toBe(LIMIT - 2)
        expect(client.status).toBe('ready')
        await backend.clear()
        await backend.close()
        expect(await client.ping()).toBe('PONG')
      } finally {
        await closeClient(client)
      }
    })
  })

  describe('a full Redis (maxmemory, noeviction)', () => {
    it('rejects the calls that would write with ERR_FASTLIMIT_STORE_FULL, and still denies over the limit', async () => {
      const backend = RedisBackend.fromUrl(server.url, { keyPrefix: 'full:' })
      try {
        for (let i = 0; i < LIMIT; i++) await backend.checkAndIncrement('at-limit', bucket, 1)
        await raw.config('SET', 'maxmemory-policy', 'noeviction')
        await raw.set('full-filler', 'x'.repeat(400_000))
        const used = Number(infoField(await raw.info('memory'), 'used_memory'))
        await raw.config('SET', 'maxmemory', String(used - 100_000))
        const err = await rejection(backend.checkAndIncrement('fresh', bucket, 1))
        expect(err.code).toBe('ERR_FASTLIMIT_STORE_FULL')
        expect(err.message).toMatch(
          /^\[fastlimit\] \[redis\] checkAndIncrement failed: redis:\/\/127\.0\.0\.1:\d+ is full \(OOM/,
        )
        expect(err.message).toMatch(/maxmemory/)
        expect(err.cause).toBeInstanceOf(Error)
        expect((await rejection(backend.checkAndIncrementAll('fresh', [bucket, other], 1))).code).toBe(
          'ERR_FASTLIMIT_STORE_FULL',
        )
        // Reads and denials write nothing: still decided.
        expect(await backend.checkAndIncrement('at-limit', bucket, 1)).toMatchObject({ allowed: false })
        expect((await backend.peek('fresh', bucket)).remaining).toBe(LIMIT)
      } finally {
        await raw.config('SET', 'maxmemory', '0')
        await raw.del('full-filler')
        await backend.clear()
        await backend.close()
      }
    })
  })
})

describe('failover behind a virtual IP (REPLICAOF)', () => {
  it('a READONLY reply drops the connection; the next one reaches the new master, with the state it had', async () => {
    const a = await startStandalone()
    const b = await startStandalone({ config: [`replicaof 127.0.0.1 ${a.port}`] })
    const vip = await startProxy(a.port)
    const backend = RedisBackend.fromUrl(`redis://127.0.0.1:${vip.port}`, { keyPrefix: 'vip:' })
    try {
      // The replica's first full sync can take seconds on a loaded machine: wait for its link first.
      await vi.waitFor(
        async () => {
          const info = await command(b.port, 'INFO', 'replication')
          if (infoField(info, 'master_link_status') !== 'up')
            throw new Error('the replica is not in sync yet')
        },
        { timeout: 30_000, interval: 50 },
      )
      expect((await backend.checkAndIncrement('user', bucket, 2)).remaining).toBe(LIMIT - 2)
      // The replica has the write before the failover: its applied offset reaches the master's. (Not `WAIT`
      // from another connection: it counts the replicas that have that connection's writes, none, so it
      // answers 1 at once even while the replica has not applied the write yet, and B could be promoted
      // without it: a fresh state, `expected 4 to be 2`.)
      const written = Number(infoField(await command(a.port, 'INFO', 'replication'), 'master_repl_offset'))
      expect(written).toBeGreaterThan(0)
      await vi.waitFor(
        async () => {
          const info = await command(b.port, 'INFO', 'replication')
          if (!(Number(infoField(info, 'slave_repl_offset')) >= written))
            throw new Error(`the replica has not applied offset ${written} yet`)
        },
        { timeout: 10_000, interval: 20 },
      )
      expect(await command(b.port, 'HGETALL', 'vip::user')).toEqual(
        await command(a.port, 'HGETALL', 'vip::user'),
      )
      // The failover: B is promoted, A follows it, and the VIP moves to B. The backend's open connection
      // still reaches A, now a replica.
      expect(await command(b.port, 'REPLICAOF', 'NO', 'ONE')).toBe('OK')
      expect(await command(a.port, 'REPLICAOF', '127.0.0.1', String(b.port))).toBe('OK')
      vip.moveTo(b.port)
      const { value, failures } = await eventually(() => backend.checkAndIncrement('user', bucket, 1), 5000)
      expect(value.remaining).toBe(LIMIT - 3)
      expect(failures.length).toBeGreaterThan(0)
      expect(failures[0]).toMatch(/READONLY.*no longer the master/)
      // One READONLY reply: then the connection was dropped, and calls failed fast until the new one was ready.
      expect(failures.filter((f) => /READONLY/.test(f))).toHaveLength(1)
      // Written on B.
      expect(await command(b.port, 'HLEN', 'vip::user')).toBe(1)
    } finally {
      await backend.close()
      await vip.close()
      await b.stop()
      await a.stop()
    }
  })
})

describe('reconnect() on a Sentinel client', () => {
  it('while it asks the sentinels for the master, leaves the attempt alone (aborting it ended the client for good)', async () => {
    const s = await startSentinel({ replicas: 0, sentinels: 3 })
    const backend = RedisBackend.fromUrl(s.url, { keyPrefix: 'sentinel-reconnect:' })
    const client = backend.client as Redis
    const stopped: number[] = []
    try {
      expect((await backend.checkAndIncrement('a', bucket, 1)).remaining).toBe(LIMIT - 1)
      // Stopped sentinels accept connections and answer nothing: the next attempt waits on them.
      for (const sentinel of s.sentinels) {
        process.kill(sentinel.pid, 'SIGSTOP')
        stopped.push(sentinel.pid)
      }
      backend.reconnect(new Error('test'))
      await vi.waitFor(
        () => {
          if (client.status !== 'connecting') throw new Error(`status ${client.status}`)
        },
        { timeout: 5000, interval: 5 },
      )
      // The breaker opens again meanwhile: the attempt has no socket yet to drop.
      backend.reconnect(new Error('test'))
      for (const pid of stopped.splice(0)) process.kill(pid, 'SIGCONT')
      const { value } = await eventually(() => backend.checkAndIncrement('a', bucket, 1))
      expect(value.remaining).toBe(LIMIT - 2)
      expect(client.status).toBe('ready')
    } finally {
      for (const pid of stopped) process.kill(pid, 'SIGCONT')
      await backend.close()
      await s.stop()
    }
  })
})

describe('reconnect() on a Cluster', () => {
  it('drops every node and decides on the Cluster again, in every slot', async () => {
    const backend = backendOn('cluster', { keyPrefix: 'cluster-reconnect:' })
    try {
      const keys = Array.from({ length: 30 }, (_, i) => `{k${i}}`)
      for (const key of keys)
        expect((await backend.checkAndIncrement(key, bucket, 1)).remaining).toBe(LIMIT - 1)
      const nodes = (backend.client as Cluster).nodes('master')
      backend.reconnect(new Error('test'))
      expect(nodes.every((n) => (n.stream as { destroyed?: boolean }).destroyed)).toBe(true)
      for (const key of keys) {
        const { value } = await eventually(() => backend.checkAndIncrement(key, bucket, 1))
        expect(value.remaining).toBe(LIMIT - 2)
      }
    } finally {
      await backend.clear().catch(() => undefined)
      await backend.close()
    }
  })
})

describe('a fresh Cluster backend', () => {
  it.each(['url', 'client'] as const)(
    'decides its first calls on the Cluster, with the client made from a %s',
    async (mode) => {
      for (let i = 0; i < 5; i++) {
        const client =
          mode === 'client'
            ? new Cluster(inject('redis').cluster.nodes, {
                enableOfflineQueue: false,
                retryDelayOnFailover: 0,
                redisOptions: { maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false },
              })
            : undefined
        const backend =
          client === undefined
            ? RedisBackend.fromUrl(urlOf('cluster'), { keyPrefix: 'fresh:' })
            : new RedisBackend({ client, keyPrefix: 'fresh:' })
        const limiter = new FastLimit({ backend, timeoutMs: 1000, onBackendError: 'fail-open' })
        try {
          const first = await Promise.all(
            Array.from({ length: 20 }, (_, j) => limiter.check(`first-${i}-${j}`, '5/h')),
          )
          expect(first.map((d) => d.error?.message ?? d.source)).toEqual(first.map(() => 'backend'))
        } finally {
          await limiter.close()
          await backend.clear()
          await backend.close()
          if (client !== undefined) await closeClient(client)
        }
      }
    },
  )
})

describe('waitReplicas', () => {
  it('rejects a bad value with a ConfigError', () => {
    const url = 'redis://127.0.0.1:1'
    for (const bad of [
      {},
      { replicas: 0, timeoutMs: 50 },
      { replicas: 1, timeoutMs: 0 },
      { replicas: 1 },
      true,
    ]) {
      expect(() => new RedisBackend({ url, waitReplicas: bad as never })).toThrow(
        /waitReplicas must be false or/,
      )
    }
    expect(
      () => new RedisBackend({ url, waitReplicas: { replicas: 1, timeoutMs: 5, x: 1 } as never }),
    ).toThrow(/Unknown waitReplicas option "x"/)
    expect(
      () =>
        new RedisBackend({
          url,
          waitReplicas: { replicas: 1, timeoutMs: 5 },
          redisOptions: { enableAutoPipelining: true },
        }),
    ).toThrow(/waitReplicas needs a client without enableAutoPipelining/)
  })

  it('reports an admission that too few replicas acknowledged as a failure; a denial stands', async () => {
    // The Sentinel group has one replica: two never acknowledge.
    const backend = backendOn('sentinel', {
      keyPrefix: 'unreplicated:',
      waitReplicas: { replicas: 2, timeoutMs: 30 },
    })
    try {
      const err = await rejection(backend.checkAndIncrement('a', bucket, LIMIT))
      expect(err.code).toBe('ERR_FASTLIMIT_BACKEND')
      expect(err.message).toMatch(
        /^\[fastlimit\] \[redis\] checkAndIncrement was admitted by the master, but only 1 of 2 replicas acknowledged the write within 30 ms \(waitReplicas\)/,
      )
      expect((await rejection(backend.checkAndIncrementAll('b', [bucket, other], 1))).code).toBe(
        'ERR_FASTLIMIT_BACKEND',
      )
      // The master did charge 'a' (the failure says so): a denial writes nothing and stands.
      expect(await backend.checkAndIncrement('a', bucket, 1)).toMatchObject({ allowed: false, remaining: 0 })
      expect(await backend.checkAndIncrementAll('a', [bucket, other], 1)).toMatchObject([
        { allowed: false },
        { allowed: true },
      ])
    } finally {
      await backend.clear()
      await backend.close()
    }
  })

  it('sends one WAIT after the calls written together that may charge, none after a peek', async () => {
    const masterPort = inject('redis').sentinel.masterPort
    const waits = async () => {
      const m = /^cmdstat_wait:calls=(\d+)/m.exec(String(await command(masterPort, 'INFO', 'commandstats')))
      return Number(m?.[1] ?? 0)
    }
    const backend = backendOn('sentinel', {
      keyPrefix: 'waited:',
      waitReplicas: { replicas: 1, timeoutMs: 500 },
    })
    try {
      await backend.peek('warm', bucket)
      const before = await waits()
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => backend.checkAndIncrement(`k${i}`, bucket, 1)),
      )
      expect(results.every((r) => r.allowed && r.remaining === LIMIT - 1)).toBe(true)
      expect(await waits()).toBe(before + 1)
      await backend.checkAndIncrementAll('k0', [bucket, other], 1)
      expect(await waits()).toBe(before + 2)
      await backend.peek('k0', bucket)
      expect(await waits()).toBe(before + 2)
      // The replica has every write.
      const replica = Number(
        infoField(await command(masterPort, 'INFO', 'replication'), 'slave0')?.match(/port=(\d+)/)?.[1],
      )
      expect(await command(replica, 'HGET', 'waited::k0', 'fixed-window:10:60000:10')).toMatch(/,1$/)
    } finally {
      await backend.clear()
      await backend.close()
    }
  })
})
