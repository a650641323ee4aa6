// RedisBackend against real redis-servers: options, client ownership, errors (fail fast, never retried,
// NOSCRIPT handled), keys that are not UTF-8, clear() touching only its prefix, server time, expiry,
// writes shared by the calls of one tick, and ioredis auto-pipelining when the client has it on.
import net from 'node:net'
import { type BucketConfig, ConfigError, escapeIdentity, FastLimit, FastlimitError } from '@fastlimit/core'
import { Cluster, Redis } from 'ioredis'
import { createClient, createClientPool, createSentinel } from 'redis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backendOn, closeClient, rawClient, scanKeys, type Topology } from '../test/helpers'
import { type StandaloneSetup, startStandalone } from '../test/servers'
import { RedisBackend } from './redis-backend'

const bucket: BucketConfig = { algorithm: 'gcra', limit: 2, windowMs: 60_000 }

async function rejection(promise: Promise<unknown>): Promise<FastlimitError> {
  try {
    await promise
  } catch (err) {
    expect(err).toBeInstanceOf(FastlimitError)
    return err as FastlimitError
  }
  throw new Error('expected a rejection')
}

/** A loopback port with nothing listening. */
async function deadPort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((r) => server.close(() => r()))
  return port
}

describe('options', () => {
  const url = 'redis://127.0.0.1:1'
  const cases: Array<[string, unknown, RegExp]> = [
    ['no options', undefined, /takes an options object/],
    [
      'neither client nor url',
      {},
      /Give client \(an ioredis, iovalkey, node-redis or Valkey GLIDE client\) or url/,
    ],
    ['both client and url', { url, client: {} }, /Give client or url, not both/],
    ['an unknown option', { url, prefix: 'x' }, /Unknown option "prefix"/],
    ['a keyPrefix with braces', { url, keyPrefix: 'a{b}' }, /keyPrefix must be 1 to 64 printable ASCII/],
    ['an empty keyPrefix', { url, keyPrefix: '' }, /keyPrefix must be/],
    ['a keyPrefix with a space', { url, keyPrefix: 'a b' }, /keyPrefix must be/],
    ['a keyPrefix that is not a string', { url, keyPrefix: 7 }, /keyPrefix must be/],
    [
      'a bad timeSource',
      { url, timeSource: 'local' },
      /timeSource must be 'server' or 'client', got "local"/,
    ],
    ['a clock with server time', { url, clock: Date.now }, /clock is used only with timeSource: 'client'/],
    ['a clock that is not a function', { url, timeSource: 'client', clock: 5 }, /clock must be a function/],
    ['a negative expiryMarginMs', { url, expiryMarginMs: -1 }, /expiryMarginMs must be a whole number/],
    ['a fractional expiryMarginMs', { url, expiryMarginMs: 1.5 }, /expiryMarginMs/],
    [
      'a client of no known library',
      { client: { get() {} } },
      /client must be an ioredis or iovalkey Redis or Cluster, a node-redis client/,
    ],
    [
      'redisOptions with a client',
      { client: new Redis({ lazyConnect: true }), redisOptions: {} },
      /apply only to the client created from url/,
    ],
    ['clusterOptions without a cluster URL', { url, clusterOptions: {} }, /only to a Cluster URL/],
    ['a bad URL', { url: 'redis://h:port' }, /Invalid Redis URL "redis:\/\/h:port": the port "port"/],
  ]
  it.each(cases)('rejects %s with a ConfigError at construction', (_what, options, message) => {
    let caught: unknown
    try {
      new RedisBackend(options as never)
    } catch (err) {
      caught = err
    }
    expect(caught).toBeInstanceOf(ConfigError)
    expect((caught as Error).message).toMatch(/^\[fastlimit\] \[redis\] /)
    expect((caught as Error).message).toMatch(message)
  })

  it('rejects a node-redis pool and a node-redis Sentinel client, naming what to pass instead', () => {
    const pool = createClientPool({ url: 'redis://127.0.0.1:1' })
    const sentinel = createSentinel({ name: 'mymaster', sentinelRootNodes: [{ host: '127.0.0.1', port: 1 }] })
    for (const client of [pool, sentinel]) {
      expect(() => new RedisBackend({ client: client as never })).toThrow(
        /A node-redis pool or createSentinel client is not supported/,
      )
    }
  })

  it('fails the calls on a node-redis client that was never opened, saying to call connect()', async () => {
    const client = createClient({ url: 'redis://127.0.0.1:1' })
    const backend = new RedisBackend({ client })
    const err = await rejection(backend.peek('k', bucket))
    expect(err.code).toBe('ERR_FASTLIMIT_CONFIG')
    expect(err.message).toMatch(/node-redis client is not open: call `await client.connect\(\)`/)
    await backend.close()
  })

  it('rejects a client with an ioredis keyPrefix, which clear() could not scan', () => {
    const client = new Redis({ lazyConnect: true, keyPrefix: 'app:' })
    expect(() => new RedisBackend({ client })).toThrow(/ioredis keyPrefix/)
    client.disconnect()
  })
})

describe('client ownership', () => {
  it.each<Topology>(['standalone', 'cluster', 'sentinel'])(
    'never closes a client passed in (%s)',
    async (topology) => {
      const client = rawClient(topology)
      const backend = new RedisBackend({ client, keyPrefix: 'ownership:' })
      try {
        expect(backend.client).toBe(client)
        expect((await backend.checkAndIncrement('k', bucket, 1)).allowed).toBe(true)
        await backend.reset('k')
        await backend.close()
        await backend.close()
        expect(client.status).toBe('ready')
        expect(await client.ping()).toBe('PONG')
        expect((await rejection(backend.peek('k', bucket))).code).toBe('ERR_FASTLIMIT_CLOSED')
      } finally {
        await closeClient(client)
      }
    },
  )

  it.each<Topology>(['standalone', 'cluster', 'sentinel'])(
    'closes the client it created (%s)',
    async (topology) => {
      const backend = backendOn(topology, { keyPrefix: 'ownership:' })
      expect(backend.client).toBeInstanceOf(topology === 'cluster' ? Cluster : Redis)
      expect((await backend.peek('k', bucket)).allowed).toBe(true)
      await Promise.all([backend.close(), backend.close()])
      expect(backend.client.status).toBe('end')
      expect((await rejection(backend.checkAndIncrement('k', bucket, 1))).code).toBe('ERR_FASTLIMIT_CLOSED')
      expect((await rejection(backend.clear())).code).toBe('ERR_FASTLIMIT_CLOSED')
    },
  )

  it('closes a client it created that never connected', async () => {
    const backend = RedisBackend.fromUrl(`redis://127.0.0.1:${await deadPort()}`)
    await backend.close()
    expect(backend.client.status).toBe('end')
  })

  it('lets two backends share one client (the scripts are defined once)', async () => {
    const client = rawClient('standalone')
    try {
      const a = new RedisBackend({ client, keyPrefix: 'share-a:' })
      const b = new RedisBackend({ client, keyPrefix: 'share-b:' })
      await a.checkAndIncrement('k', bucket, 2)
      expect((await b.peek('k', bucket)).remaining).toBe(2)
      expect((await a.peek('k', bucket)).remaining).toBe(0)
      await a.clear()
      await b.clear()
    } finally {
      await closeClient(client)
    }
  })
})

describe('calls', () => {
  let backend: RedisBackend
  beforeAll(() => {
    backend = backendOn('standalone', { keyPrefix: 'calls:' })
  })
  afterAll(async () => {
    await backend.clear()
    await backend.close()
  })

  it('rejects a bad cost or key with ERR_FASTLIMIT_ARGUMENT', async () => {
    for (const cost of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '1']) {
      expect((await rejection(backend.checkAndIncrement('k', bucket, cost as number))).code).toBe(
        'ERR_FASTLIMIT_ARGUMENT',
      )
      expect((await rejection(backend.checkAndIncrementAll('k', [bucket], cost as number))).code).toBe(
        'ERR_FASTLIMIT_ARGUMENT',
      )
    }
    expect((await rejection(backend.peek(42 as unknown as string, bucket))).code).toBe(
      'ERR_FASTLIMIT_ARGUMENT',
    )
    expect(await backend.checkAndIncrementAll('k', [], 1)).toEqual([])
  })

  it("reads the Redis server's TIME by default", async () => {
    const raw = rawClient('standalone') as Redis
    try {
      const time = async () => {
        const [s, us] = await raw.time()
        return Number(s) * 1000 + Math.floor(Number(us) / 1000)
      }
      const fixed: BucketConfig = { algorithm: 'fixed-window', limit: 5, windowMs: 10_000 }
      const before = await time()
      const r = await backend.checkAndIncrement('time', fixed, 1)
      const after = await time()
      // The window that contains the server's now ends at resetMs.
      expect(r.resetMs % 10_000).toBe(0)
      expect(r.resetMs).toBeGreaterThan(before)
      expect(r.resetMs - 10_000).toBeLessThanOrEqual(after)
      // peek of a fresh key: full, resetMs is the server's now.
      const fresh = await backend.peek('time-fresh', fixed)
      expect(fresh.resetMs).toBeGreaterThanOrEqual(after)
      expect(fresh.resetMs).toBeLessThanOrEqual(await time())
    } finally {
      await closeClient(raw)
    }
  })

  it('shares round trips: the calls of one tick go out in one write, and a lone call in its own tick', async () => {
    const client = backend.client as Redis
    expect(client.options.enableAutoPipelining).toBe(false)
    await backend.peek('warm', bucket)
    const stream = client.stream as unknown as {
      _write: (...args: unknown[]) => void
      _writev: (...args: unknown[]) => void
    }
    const writes: number[] = []
    const write = stream._write
    const writev = stream._writev
    stream._write = function (...args: unknown[]) {
      writes.push(1)
      return write.apply(this, args)
    }
    stream._writev = function (...args: unknown[]) {
      writes.push((args[0] as unknown[]).length)
      return writev.apply(this, args)
    }
    try {
      const calls = Array.from({ length: 100 }, (_, i) => backend.checkAndIncrement(`pipe:${i}`, bucket, 1))
      expect(writes).toEqual([])
      // Held until the tick ends, then written together.
      await new Promise((r) => process.nextTick(r))
      expect(writes).toEqual([100])
      expect((await Promise.all(calls)).every((r) => r.allowed)).toBe(true)
      writes.length = 0
      const lone = backend.peek('pipe:0', bucket)
      await new Promise((r) => process.nextTick(r))
      // Written before the event loop turns: no wait for other calls.
      expect(writes).toEqual([1])
      expect((await lone).remaining).toBe(1)
    } finally {
      stream._write = write
      stream._writev = writev
    }
  })

  it('joins the ioredis auto-pipeline when the client has it on', async () => {
    const piped = backendOn('standalone', {
      keyPrefix: 'calls-piped:',
      redisOptions: { enableAutoPipelining: true },
    })
    try {
      const client = piped.client as Redis
      await piped.peek('warm', bucket)
      const calls = Array.from({ length: 100 }, (_, i) => piped.checkAndIncrement(`pipe:${i}`, bucket, 1))
      // The calls are queued on one pipeline, sent together on the next turn of the event loop.
      await new Promise((r) => process.nextTick(r))
      expect(client.autoPipelineQueueSize).toBe(100)
      expect((await Promise.all(calls)).every((r) => r.allowed)).toBe(true)
      expect(await piped.checkAndIncrementAll('all', [bucket, { ...bucket, limit: 3 }], 2)).toMatchObject([
        { allowed: true, remaining: 0 },
        { allowed: true, remaining: 1 },
      ])
    } finally {
      await piped.clear()
      await piped.close()
    }
  })

  it('expires keys with the window, and never shortens a longer-lived bucket', async () => {
    const short: BucketConfig = { algorithm: 'fixed-window', limit: 3, windowMs: 1000 }
    const long: BucketConfig = { algorithm: 'fixed-window', limit: 3, windowMs: 600_000 }
    const raw = backend.client as Redis
    await backend.checkAndIncrement('ttl', long, 1)
    const first = await raw.pttl('calls::ttl')
    expect(first).toBeGreaterThan(1000)
    expect(first).toBeLessThanOrEqual(600_000 + 1000)
    await backend.checkAndIncrement('ttl', short, 1)
    expect(await raw.pttl('calls::ttl')).toBeGreaterThan(1000)
    await backend.checkAndIncrement('ttl-short', short, 1)
    const ttl = await raw.pttl('calls::ttl-short')
    expect(ttl).toBeGreaterThan(0)
    // The window's end plus at most twice the margin.
    expect(ttl).toBeLessThanOrEqual(1000 + 2 * 1000)
    // Peeks and denied calls write nothing.
    await backend.peek('ttl-peeked', short)
    await backend.checkAndIncrement('ttl-denied', short, 4)
    expect(await raw.exists('calls::ttl-peeked', 'calls::ttl-denied')).toBe(0)
  })

  it('keeps a bucket with an id of its own under that id, and reads a mutable bucket at every call', async () => {
    const raw = backend.client as Redis
    const custom = { algorithm: 'fixed-window', limit: 2, windowMs: 60_000, id: 'my-rule' } as BucketConfig
    expect((await backend.checkAndIncrement('custom', custom, 1)).remaining).toBe(1)
    expect(await raw.hkeys('calls::custom')).toEqual(['my-rule'])
    expect(await backend.peek('custom', custom)).toMatchObject({ allowed: true, limit: 2, remaining: 1 })
    expect(
      (await backend.checkAndIncrementAll('custom', [custom, bucket], 1)).map((r) => [r.limit, r.remaining]),
    ).toEqual([
      [2, 0],
      [2, 1],
    ])
    const mutable: { algorithm: 'fixed-window'; limit: number; windowMs: number } = {
      algorithm: 'fixed-window',
      limit: 5,
      windowMs: 60_000,
    }
    expect((await backend.checkAndIncrement('mutable', mutable, 1)).remaining).toBe(4)
    mutable.limit = 10
    expect((await backend.checkAndIncrement('mutable', mutable, 1)).remaining).toBe(9)
    expect((await raw.hkeys('calls::mutable')).sort()).toEqual([
      'fixed-window:10:60000:10',
      'fixed-window:5:60000:5',
    ])
  })

  it('works behind FastLimit, with identities that hold braces', async () => {
    const limiter = new FastLimit({ backend, prefix: 'app', onBackendError: 'throw' })
    for (const identity of ['user:{1}', 'user:{1}}', '{']) {
      expect((await limiter.check(identity, '2/min')).allowed).toBe(true)
      expect((await limiter.check(identity, '2/min')).allowed).toBe(true)
      expect((await limiter.check(identity, '2/min')).allowed).toBe(false)
    }
  })
})

describe('Cluster hash slots', () => {
  it("keeps every rule of an identity in the identity's slot, whatever braces it holds", async () => {
    const backend = backendOn('cluster', { keyPrefix: 'slots:' })
    const raw = rawClient('cluster') as Cluster
    try {
      await backend.clear()
      const limiter = new FastLimit({ backend, prefix: 'app', onBackendError: 'throw' })
      const identities = ['user:{1}', '}{', '{', 'x'.repeat(500), 'plain']
      for (const identity of identities) {
        const d = await limiter.check(identity, [
          '2/min',
          { limit: 5, window: '1h', algorithm: 'sliding-log' },
        ])
        expect(d.allowed).toBe(true)
      }
      const keys = await scanKeys(raw, 'slots:*')
      expect(keys).toHaveLength(identities.length)
      for (const identity of identities) {
        const name = await escapeIdentity(identity)
        const key = `slots::app:{${name}}`
        expect(keys.map(String)).toContain(key)
        expect(await raw.cluster('KEYSLOT', key)).toBe(await raw.cluster('KEYSLOT', name))
      }
    } finally {
      await backend.clear()
      await backend.close()
      await closeClient(raw)
    }
  })
})

describe('keys with lone surrogates (no UTF-8 form)', () => {
  it.each<Topology>(['standalone', 'cluster'])(
    'stay apart and are stored as WTF-8 (%s)',
    async (topology) => {
      const backend = backendOn(topology, { keyPrefix: 'wtf8:' })
      try {
        await backend.clear()
        const one: BucketConfig = { algorithm: 'fixed-window', limit: 1, windowMs: 60_000 }
        const keys = ['\ud800', '\udc00', '\ufffd', '{\ud800}', '{\udc00}', 'a\ud83d\ude00']
        for (const key of keys) expect((await backend.checkAndIncrement(key, one, 1)).allowed, key).toBe(true)
        for (const key of keys)
          expect((await backend.checkAndIncrement(key, one, 1)).allowed, key).toBe(false)
        const stored = (await scanKeys(backend.client, 'wtf8:*')).map((k) => k.toString('hex')).sort()
        expect(stored).toContain(Buffer.from('wtf8::\xed\xa0\x80', 'latin1').toString('hex'))
        expect(stored).toContain(Buffer.from('wtf8::\xed\xb0\x80', 'latin1').toString('hex'))
        expect(stored).toHaveLength(keys.length)
        await backend.reset('{\ud800}')
        expect((await backend.peek('{\ud800}', one)).remaining).toBe(1)
        expect((await backend.peek('{\udc00}', one)).remaining).toBe(0)
        expect(
          (await backend.checkAndIncrementAll('{\udc00}', [one, { ...one, windowMs: 1000 }], 1)).map(
            (r) => r.allowed,
          ),
        ).toEqual([false, true])
      } finally {
        await backend.clear()
        await backend.close()
      }
    },
  )
})

describe('clear()', () => {
  it.each<Topology>(['standalone', 'cluster'])(
    'deletes only keys under its prefix (%s)',
    async (topology) => {
      // Glob characters in the prefix are matched literally; the keys are 'c*e?r[x]\\::...'.
      const prefix = 'c*e?r[x]\\::'
      const backend = backendOn(topology, { keyPrefix: 'c*e?r[x]\\:' })
      const raw = rawClient(topology)
      const others = ['cZZeYrx\\::1', 'cleanup-other:1', 'c*e?r[x]\\:1', 'c*e?r[x]\\', `{tag}${prefix}`]
      try {
        for (const key of others) await raw.set(key, 'theirs')
        for (let i = 0; i < 50; i++) await backend.checkAndIncrement(`fl:{user${i}}`, bucket, 1)
        expect((await scanKeys(raw, `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`)).length).toBe(50)
        await backend.clear()
        expect((await scanKeys(raw, `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`)).length).toBe(0)
        for (const key of others) expect(await raw.get(key), key).toBe('theirs')
      } finally {
        for (const key of others) await raw.del(key)
        await backend.close()
        await closeClient(raw)
      }
    },
  )
})

describe('failures', () => {
  it('fails fast with ERR_FASTLIMIT_BACKEND when Redis is unreachable', async () => {
    const port = await deadPort()
    const backend = RedisBackend.fromUrl(`redis://127.0.0.1:${port}`)
    try {
      const err = await rejection(backend.checkAndIncrement('k', bucket, 1))
      expect(err.code).toBe('ERR_FASTLIMIT_BACKEND')
      expect(err.message).toMatch(/^\[fastlimit\] \[redis\] checkAndIncrement failed: .*ECONNREFUSED/)
      expect(err.message).toContain(`redis://127.0.0.1:${port} is reachable`)
      expect(err.cause).toBeInstanceOf(Error)
      expect((await rejection(backend.clear())).code).toBe('ERR_FASTLIMIT_BACKEND')
    } finally {
      await backend.close()
    }
  })

  describe('on a Redis of its own', () => {
    let server: StandaloneSetup
    let raw: Redis
    beforeAll(async () => {
      server = await startStandalone()
      raw = new Redis({ port: server.port, host: '127.0.0.1' })
    })
    afterAll(async () => {
      await closeClient(raw)
      await server.stop()
    })

    async function scriptCalls(): Promise<number> {
      const stats = await raw.info('commandstats')
      let calls = 0
      for (const m of stats.matchAll(/^cmdstat_(eval|evalsha):calls=(\d+)/gm)) calls += Number(m[2])
      return calls
    }

    it('runs a script once on an error: never retried', async () => {
      const backend = RedisBackend.fromUrl(server.url, { keyPrefix: 'failures:' })
      try {
        await backend.peek('warm', bucket)
        await raw.set('failures::theirs', 'a string, not a hash')
        await raw.config('RESETSTAT')
        const err = await rejection(backend.checkAndIncrement('theirs', bucket, 1))
        expect(err.code).toBe('ERR_FASTLIMIT_BACKEND')
        expect(err.message).toMatch(/WRONGTYPE/)
        expect(err.message).toMatch(/keyPrefix of its own/)
        expect(await scriptCalls()).toBe(1)
      } finally {
        await backend.close()
      }
    })

    it('sends the script source once per connection: the first call is EVAL, the rest EVALSHA', async () => {
      const backend = RedisBackend.fromUrl(server.url, { keyPrefix: 'source:' })
      try {
        await raw.script('FLUSH')
        await raw.config('RESETSTAT')
        // Ten calls in one write on a new connection: the first carries the source for the other nine.
        const results = await Promise.all(
          Array.from({ length: 10 }, (_, i) => backend.checkAndIncrement(`k${i}`, bucket, 1)),
        )
        expect(results.every((r) => r.allowed)).toBe(true)
        const stats = await raw.info('commandstats')
        expect(stats).toMatch(/cmdstat_eval:calls=1,/)
        expect(stats).toMatch(/cmdstat_evalsha:calls=9,.*failed_calls=0/)
      } finally {
        await backend.close()
      }
    })

    it('reloads its scripts after SCRIPT FLUSH (NOSCRIPT), keeping the state', async () => {
      const backend = RedisBackend.fromUrl(server.url, { keyPrefix: 'noscript:' })
      try {
        expect((await backend.checkAndIncrement('k', bucket, 1)).remaining).toBe(1)
        await raw.script('FLUSH')
        await raw.config('RESETSTAT')
        expect((await backend.checkAndIncrement('k', bucket, 1)).remaining).toBe(0)
        const stats = await raw.info('commandstats')
        // EVALSHA answered NOSCRIPT, then EVAL ran the script once.
        expect(stats).toMatch(/cmdstat_evalsha:calls=1,.*failed_calls=1/)
        expect(stats).toMatch(/cmdstat_eval:calls=1,/)
        expect(
          (await backend.checkAndIncrementAll('k', [bucket, { ...bucket, limit: 3 }], 1))[0]?.allowed,
        ).toBe(false)
      } finally {
        await backend.close()
      }
    })

    it('fails at once while disconnected (no offline queue), and reconnects when Redis is back', async () => {
      const backend = RedisBackend.fromUrl(server.url, { keyPrefix: 'reconnect:' })
      try {
        expect((await backend.checkAndIncrement('k', bucket, 1)).allowed).toBe(true)
        const port = server.port
        await closeClient(raw)
        await server.stop()
        // Had the call been queued until Redis returns, this would hang: Redis only returns below.
        for (let i = 0; i < 3; i++) {
          const err = await rejection(backend.checkAndIncrement('k', bucket, 1))
          expect(err.code).toBe('ERR_FASTLIMIT_BACKEND')
        }
        server = await startStandalone({ port })
        raw = new Redis({ port: server.port, host: '127.0.0.1' })
        const deadline = Date.now() + 20_000
        let result: unknown
        while (Date.now() < deadline) {
          try {
            result = await backend.checkAndIncrement('k', bucket, 1)
            break
          } catch {
            await new Promise((r) => setTimeout(r, 100))
          }
        }
        // A new, empty Redis: the key starts over.
        expect(result).toMatchObject({ allowed: true, remaining: 1 })
      } finally {
        await backend.close()
      }
    })
  })
})
