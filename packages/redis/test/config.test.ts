// What a URL and a keyPrefix mean, against real servers: a database the server lacks fails every call
// (never db 0), two backends' keys never meet and clear() deletes only its own, a password with URL
// delimiters never shows in a message or a cause, and the seeds' URL forms (a comma-separated Cluster, a
// Sentinel master name in the query or an option, a Cluster node or a sentinel written as redis://).
import { inspect } from 'node:util'
import { type BucketConfig, FastLimit, FastlimitError } from '@fastlimit/core'
import { Cluster, Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { RedisBackend } from '../src'
import { closeClient, rawClient, scanKeys, urlOf } from './helpers'
import { command, type StandaloneSetup, startStandalone } from './servers'

const bucket: BucketConfig = { algorithm: 'fixed-window', limit: 5, windowMs: 60_000 }

async function rejection(promise: Promise<unknown>): Promise<FastlimitError> {
  try {
    await promise
  } catch (err) {
    expect(err).toBeInstanceOf(FastlimitError)
    return err as FastlimitError
  }
  throw new Error('expected a rejection')
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('a database the server does not have', () => {
  it('fails every call with a ConfigError naming the database, and never writes to database 0', async () => {
    const prefix = 'db99'
    const raw = rawClient('standalone') as Redis
    const backend = RedisBackend.fromUrl(`${urlOf('standalone')}/99`, { keyPrefix: prefix })
    try {
      const errors: FastlimitError[] = []
      for (let i = 0; i < 6; i++) {
        errors.push(await rejection(backend.checkAndIncrement(`k${i}`, bucket, 1)))
        // Give the client time to reconnect between calls: each new connection must fail again.
        await sleep(150)
      }
      errors.push(await rejection(backend.peek('k', bucket)))
      errors.push(await rejection(backend.reset('k')))
      errors.push(await rejection(backend.clear()))
      for (const err of errors) {
        expect(err.code).toBe('ERR_FASTLIMIT_CONFIG')
        expect(err.message).toMatch(/^\[fastlimit\] \[redis\] /)
        expect(err.message).toMatch(/database 99/)
        expect(err.message).toMatch(/DB index is out of range/)
        expect(err.message).toMatch(/databases/)
      }
      expect(await scanKeys(raw, `${prefix}*`)).toEqual([])
    } finally {
      await backend.close()
      await closeClient(raw)
    }
  })

  it('uses the database of the URL when the server has it', async () => {
    const raw = new Redis(`${urlOf('standalone')}/3`)
    const backend = RedisBackend.fromUrl(`${urlOf('standalone')}/3`, { keyPrefix: 'db3' })
    try {
      expect((await backend.checkAndIncrement('k', bucket, 1)).remaining).toBe(4)
      expect(await raw.exists('db3::k')).toBe(1)
      await backend.clear()
      expect(await raw.exists('db3::k')).toBe(0)
    } finally {
      await backend.close()
      await closeClient(raw)
    }
  })
})

describe('key prefixes', () => {
  // Pairs that overlapped when the key was keyPrefix + key: one a prefix of the other.
  const pairs: Array<[string, string]> = [
    ['rl', 'rl2'],
    ['rl:', 'rl:2:'],
    ['a', 'a:b'],
    ['app:', 'app:rl:'],
    ['x-', 'x-y'],
  ]

  it.each(pairs)('clear() under %j leaves the keys under %j, and the other way round', async (p1, p2) => {
    const one = RedisBackend.fromUrl(urlOf('standalone'), { keyPrefix: p1 })
    const two = RedisBackend.fromUrl(urlOf('standalone'), { keyPrefix: p2 })
    try {
      for (const b of [one, two]) await b.clear()
      // Keys chosen so that keyPrefix + key would be equal across the two backends, or start alike.
      const keys = ['2', '2:k', ':2:k', 'b:k', 'k', 'y', '::k', '{k}']
      for (const key of keys) {
        expect((await one.checkAndIncrement(key, bucket, 1)).remaining, `${p1} ${key}`).toBe(4)
        expect((await two.checkAndIncrement(key, bucket, 2)).remaining, `${p2} ${key}`).toBe(3)
      }
      await one.clear()
      for (const key of keys) {
        expect((await one.peek(key, bucket)).remaining, `${p1} ${key}`).toBe(5)
        expect((await two.peek(key, bucket)).remaining, `${p2} ${key}`).toBe(3)
      }
      for (const key of keys) await one.checkAndIncrement(key, bucket, 1)
      await two.clear()
      for (const key of keys) {
        expect((await one.peek(key, bucket)).remaining, `${p1} ${key}`).toBe(4)
        expect((await two.peek(key, bucket)).remaining, `${p2} ${key}`).toBe(5)
      }
    } finally {
      for (const b of [one, two]) {
        await b.clear()
        await b.close()
      }
    }
  })

  it('never maps two limiters (keyPrefix, prefix) onto one key', async () => {
    // keyPrefix + FastLimit prefix: 'a:' + 'b:x:{id}' was 'a:b:' + 'x:{id}'.
    const combos: Array<[string, string]> = [
      ['a:', 'b:x'],
      ['a:b:', 'x'],
      ['a', ':b:x'],
      ['a:b:x', 'u'],
    ]
    const backends = combos.map(([keyPrefix]) => RedisBackend.fromUrl(urlOf('standalone'), { keyPrefix }))
    try {
      for (const b of backends) await b.clear()
      const limiters = combos.map(
        ([, prefix], i) =>
          new FastLimit({ backend: backends[i] as RedisBackend, prefix, onBackendError: 'throw' }),
      )
      for (const [i, limiter] of limiters.entries()) {
        // Each limiter spends i + 1 of 5: had two shared a key, one would see the other's count.
        const d = await limiter.check('user', '5/min', { cost: i + 1 })
        expect(d.remaining, JSON.stringify(combos[i])).toBe(5 - (i + 1))
      }
      const raw = rawClient('standalone')
      try {
        const stored = (await scanKeys(raw, 'a*')).map(String).sort()
        expect(stored).toEqual(['a::b:x:{user}', 'a:b::x:{user}', 'a:::b:x:{user}', 'a:b:x::u:{user}'].sort())
      } finally {
        await closeClient(raw)
      }
    } finally {
      for (const b of backends) {
        await b.clear()
        await b.close()
      }
    }
  })

  it('rejects a keyPrefix holding "::", which could be the start of another backend\'s keys', () => {
    for (const keyPrefix of ['a::b', '::', 'a::', 'x:::']) {
      expect(() => RedisBackend.fromUrl('redis://127.0.0.1:1', { keyPrefix }), keyPrefix).toThrow(
        /keyPrefix .*"::"/,
      )
    }
  })
})

describe('a password with URL delimiters', () => {
  // Each piece is distinct, so a redaction at the wrong place shows which piece leaked.
  const PIECES = ['Kq1', 'Kq2', 'Kq3', 'Kq4', 'Kq5', 'Kq6', 'Kq7']
  const PASSWORD = 'Kq1@Kq2/Kq3?Kq4#Kq5%Kq6:Kq7'
  const ENCODED = encodeURIComponent(PASSWORD)
  let server: StandaloneSetup
  let host: string

  beforeAll(async () => {
    server = await startStandalone()
    // Set after the start: the harness checks that the server is up with a PING without password.
    await command(server.port, 'CONFIG', 'SET', 'requirepass', PASSWORD)
    host = `127.0.0.1:${server.port}`
  })
  afterAll(async () => {
    await server.stop()
  })

  /** Every text an error shows: message, stack and properties of it and of its causes. */
  function everything(err: unknown): string {
    const parts = [inspect(err, { depth: 20 })]
    let e = err as { message?: unknown; stack?: unknown; cause?: unknown } | undefined
    for (let i = 0; e && i < 10; i++) {
      parts.push(String(e.message), String(e.stack))
      e = e.cause as typeof e
    }
    return parts.join('\n')
  }

  function expectNoSecret(text: string, where: string): void {
    for (const piece of [...PIECES, ENCODED]) expect(text, `${where}: ${text}`).not.toContain(piece)
  }

  it('connects when the password is percent-encoded, as a URL requires', async () => {
    for (const url of [`redis://:${ENCODED}@${host}`, `redis://default:${ENCODED}@${host}/2`]) {
      const backend = RedisBackend.fromUrl(url, { keyPrefix: 'pw' })
      try {
        expect((await backend.checkAndIncrement('k', bucket, 1)).allowed).toBe(true)
        await backend.clear()
      } finally {
        await backend.close()
      }
    }
  })

  it('never shows it in a URL error, wherever the URL is wrong', () => {
    const urls = [
      // Not percent-encoded: "#", "/", "?" and "@" cut the URL at the wrong place.
      `redis://:${PASSWORD}@${host}`,
      `redis://user:${PASSWORD}@${host}/0`,
      `rediss://:${PASSWORD}@${host}:x`,
      `redis+sentinel://:${PASSWORD}@h1,h2/mymaster`,
      `redis+cluster://:${PASSWORD}@n1:1,n2:2/3`,
      `redis://:${PASSWORD.replace('#', '')}@${host}`,
      `redis://:${PASSWORD.replace(/[#?]/g, '')}@${host}`,
      `redis://:${PASSWORD.replace(/[#?/]/g, '')}@${host}/x`,
      // Encoded, and something else is wrong.
      `redis://:${ENCODED}@${host}:99999`,
      `redis://:${ENCODED}@${host}/db`,
      `redis://:${ENCODED}@${host}?unknown=1`,
      `redis://:${ENCODED}%@${host}`,
      `redis+sentinel://h1/m?sentinelPassword=${PASSWORD}`,
      `redis+sentinel://h1/m?sentinelPassword=${ENCODED}&x=1`,
      `redis://:${ENCODED}@${host}?sentinelPassword=${ENCODED}`,
    ]
    for (const url of urls) {
      let caught: unknown
      try {
        RedisBackend.fromUrl(url)
      } catch (err) {
        caught = err
      }
      expect(caught, url).toBeInstanceOf(FastlimitError)
      expectNoSecret(everything(caught), url)
    }
  })

  it('never shows it in a connection or script error, or in their causes', async () => {
    const wrong = encodeURIComponent(`${PASSWORD}x`)
    const cases: Array<[string, string]> = [
      ['a wrong password', `redis://:${wrong}@${host}`],
      ['a wrong user', `redis://nobody:${ENCODED}@${host}`],
      ['no server', `redis://:${ENCODED}@127.0.0.1:1`],
      ['a database out of range', `redis://:${ENCODED}@${host}/99`],
      ['a Cluster form on a standalone', `redis://:${ENCODED}@${host},127.0.0.1:1`],
    ]
    for (const [what, url] of cases) {
      const backend = RedisBackend.fromUrl(url, { keyPrefix: 'pw' })
      try {
        const errors = [
          await rejection(backend.checkAndIncrement('k', bucket, 1)),
          await rejection(backend.peek('k', bucket)),
        ]
        for (const err of errors) expectNoSecret(everything(err), what)
      } finally {
        await backend.close()
      }
    }
    // A script error on a working connection (another application's string under our key).
    const backend = RedisBackend.fromUrl(`redis://:${ENCODED}@${host}`, { keyPrefix: 'pw' })
    const raw = new Redis({ host: '127.0.0.1', port: server.port, password: PASSWORD })
    try {
      await raw.set('pw::theirs', 'a string')
      const err = await rejection(backend.checkAndIncrement('theirs', bucket, 1))
      expect(err.message).toMatch(/WRONGTYPE/)
      expectNoSecret(everything(err), 'WRONGTYPE')
    } finally {
      await raw.del('pw::theirs')
      await closeClient(raw)
      await backend.close()
    }
  })
})

describe("the seeds' URL forms", () => {
  const topologies = () => inject('redis')
  const hostsOf = (nodes: ReadonlyArray<{ host: string; port: number }>) =>
    nodes.map((n) => `${n.host}:${n.port}`).join(',')

  it('redis://h1:p1,h2:p2,h3:p3/0 is a Cluster', async () => {
    const nodes = topologies().cluster.nodes
    for (const url of [`redis://${hostsOf(nodes)}/0`, `redis://${hostsOf(nodes)}`]) {
      const backend = RedisBackend.fromUrl(url, { keyPrefix: 'forms-cluster' })
      try {
        expect(backend.client).toBeInstanceOf(Cluster)
        // Identities spread over every master.
        for (let i = 0; i < 30; i++) {
          expect((await backend.checkAndIncrement(`{user${i}}`, bucket, 1)).remaining).toBe(4)
        }
        await backend.clear()
      } finally {
        await backend.close()
      }
    }
    expect(() => RedisBackend.fromUrl(`redis://${hostsOf(nodes)}/2`)).toThrow(/only database 0/)
  })

  it('redis://sentinel:26379 with a master name (query or option) connects through Sentinel', async () => {
    const { sentinels, masterName, masterPort } = topologies().sentinel
    const first = sentinels[0] as { host: string; port: number }
    const forms: Array<[string, Record<string, string>]> = [
      [`redis://${first.host}:${first.port}/0?sentinelMasterName=${masterName}`, {}],
      [`redis://${hostsOf(sentinels)}/0?sentinel_master=${masterName}`, {}],
      [`redis://${hostsOf(sentinels)}`, { sentinelMasterName: masterName }],
    ]
    for (const [url, options] of forms) {
      const backend = RedisBackend.fromUrl(url, { keyPrefix: 'forms-sentinel', ...options })
      try {
        expect((await backend.checkAndIncrement('k', bucket, 1)).remaining, url).toBe(4)
        // The calls reach the master, not the sentinel.
        const client = backend.client as Redis
        expect(client.options.sentinels?.length, url).toBeGreaterThan(0)
        expect((client.stream as { remotePort?: number } | undefined)?.remotePort, url).toBe(masterPort)
        await backend.clear()
      } finally {
        await backend.close()
      }
    }
    expect(() =>
      RedisBackend.fromUrl(`redis://${first.host}:${first.port}?sentinelMasterName=a`, {
        sentinelMasterName: 'b',
      }),
    ).toThrow(/sentinelMasterName/)
  })

  it('a redis:// URL of one Cluster node fails every call, saying to use the Cluster form', async () => {
    const node = topologies().cluster.nodes[0] as { host: string; port: number }
    const backend = RedisBackend.fromUrl(`redis://${node.host}:${node.port}`, { keyPrefix: 'forms-node' })
    try {
      let admitted = 0
      for (let i = 0; i < 30; i++) {
        try {
          await backend.checkAndIncrement(`{user${i}}`, bucket, 1)
          admitted++
        } catch (err) {
          expect((err as FastlimitError).code).toBe('ERR_FASTLIMIT_CONFIG')
          expect((err as Error).message).toMatch(/Cluster/)
          expect((err as Error).message).toContain('redis+cluster://')
        }
      }
      expect(admitted).toBe(0)
    } finally {
      await backend.close()
    }
  })

  it('redis:// with several sentinels and no master name fails every call, saying to name the master', async () => {
    const { sentinels } = topologies().sentinel
    const backend = RedisBackend.fromUrl(`redis://${hostsOf(sentinels)}/0`, { keyPrefix: 'forms-s' })
    try {
      for (let i = 0; i < 3; i++) {
        const err = await rejection(backend.checkAndIncrement('k', bucket, 1))
        expect(err.code).toBe('ERR_FASTLIMIT_CONFIG')
        expect(err.message).toMatch(/is not a Redis Cluster/)
        expect(err.message).toContain('?sentinelMasterName=')
      }
    } finally {
      await backend.close()
    }
  })

  it('a redis:// URL of a sentinel fails every call, naming the master to add', async () => {
    const { sentinels, masterName } = topologies().sentinel
    const first = sentinels[0] as { host: string; port: number }
    const backend = RedisBackend.fromUrl(`redis://${first.host}:${first.port}/0`, { keyPrefix: 'forms-s' })
    try {
      for (let i = 0; i < 5; i++) {
        const err = await rejection(backend.checkAndIncrement('k', bucket, 1))
        expect(err.code).toBe('ERR_FASTLIMIT_CONFIG')
        expect(err.message).toMatch(/Sentinel/)
        expect(err.message).toContain(`sentinelMasterName=${masterName}`)
        await sleep(100)
      }
    } finally {
      await backend.close()
    }
  })
})
