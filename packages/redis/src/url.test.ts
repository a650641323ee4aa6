// URL parsing: every form, the ioredis options each one becomes, and bad URLs giving a ConfigError that
// names the wrong part (never the password, for any password, however the URL breaks).
import { ConfigError } from '@fastlimit/core'
import fc from 'fast-check'
import { Cluster, Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { createClient } from './client'
import { RedisBackend } from './redis-backend'
import { parseRedisUrl, redactUrl } from './url'

describe('parseRedisUrl', () => {
  it('reads redis://host:port', () => {
    expect(parseRedisUrl('redis://localhost:6380')).toEqual({
      topology: 'standalone',
      tls: false,
      hosts: [{ host: 'localhost', port: 6380 }],
      redacted: 'redis://localhost:6380',
    })
    expect(parseRedisUrl('redis://10.0.0.7')).toMatchObject({ hosts: [{ host: '10.0.0.7', port: 6379 }] })
    expect(parseRedisUrl('redis://cache.internal/')).toMatchObject({
      hosts: [{ host: 'cache.internal', port: 6379 }],
    })
    expect(parseRedisUrl('REDIS://[::1]:7000')).toMatchObject({ hosts: [{ host: '::1', port: 7000 }] })
  })

  it('reads rediss:// as TLS', () => {
    expect(parseRedisUrl('rediss://cache.example.com:6380')).toEqual({
      topology: 'standalone',
      tls: true,
      hosts: [{ host: 'cache.example.com', port: 6380 }],
      redacted: 'rediss://cache.example.com:6380',
    })
  })

  it('reads redis://:password@host:port/db and user:password', () => {
    expect(parseRedisUrl('redis://:s3cret@localhost:6380/2')).toEqual({
      topology: 'standalone',
      tls: false,
      hosts: [{ host: 'localhost', port: 6380 }],
      redacted: 'redis://:***@localhost:6380/2',
      password: 's3cret',
      db: 2,
    })
    expect(parseRedisUrl('redis://app:p%40ss%3Aw%2Frd@h:1/0')).toMatchObject({
      username: 'app',
      password: 'p@ss:w/rd',
      db: 0,
    })
    expect(
      parseRedisUrl(`redis://:${encodeURIComponent('Kq1@Kq2/Kq3?Kq4#Kq5%Kq6:Kq7&=+ ')}@h`),
    ).toMatchObject({ password: 'Kq1@Kq2/Kq3?Kq4#Kq5%Kq6:Kq7&=+ ' })
    // An empty password is no password.
    expect(parseRedisUrl('redis://:@h')).not.toHaveProperty('password')
  })

  it('reads redis+sentinel://h1:26379,h2:26379/mymaster', () => {
    expect(parseRedisUrl('redis+sentinel://h1:26379,h2:26380/mymaster')).toEqual({
      topology: 'sentinel',
      tls: false,
      hosts: [
        { host: 'h1', port: 26379 },
        { host: 'h2', port: 26380 },
      ],
      redacted: 'redis+sentinel://h1:26379,h2:26380/mymaster',
      masterName: 'mymaster',
    })
    expect(
      parseRedisUrl('rediss+sentinel://:pw@h1,h2:1/my%20master/3?sentinelPassword=sp&sentinelUsername=su'),
    ).toEqual({
      topology: 'sentinel',
      tls: true,
      hosts: [
        { host: 'h1', port: 26379 },
        { host: 'h2', port: 1 },
      ],
      redacted: 'rediss+sentinel://:***@h1,h2:1/my%20master/3?sentinelPassword=***',
      password: 'pw',
      masterName: 'my master',
      db: 3,
      sentinelUsername: 'su',
      sentinelPassword: 'sp',
    })
  })

  it('reads redis+cluster://n1:7000,n2:7001', () => {
    expect(parseRedisUrl('redis+cluster://n1:7000,n2:7001')).toEqual({
      topology: 'cluster',
      tls: false,
      hosts: [
        { host: 'n1', port: 7000 },
        { host: 'n2', port: 7001 },
      ],
      redacted: 'redis+cluster://n1:7000,n2:7001',
    })
    expect(parseRedisUrl('rediss+cluster://:pw@n1/0')).toMatchObject({ tls: true, password: 'pw' })
  })

  it('reads redis://n1:7000,n2:7001,n3:7002/0 (several hosts) as a Cluster', () => {
    expect(parseRedisUrl('redis://n1:7000,n2:7001,n3/0')).toEqual({
      topology: 'cluster',
      tls: false,
      hosts: [
        { host: 'n1', port: 7000 },
        { host: 'n2', port: 7001 },
        { host: 'n3', port: 6379 },
      ],
      redacted: 'redis://n1:7000,n2:7001,n3/0',
    })
    expect(parseRedisUrl('rediss://u:pw@n1,n2')).toMatchObject({
      topology: 'cluster',
      tls: true,
      username: 'u',
      password: 'pw',
    })
  })

  it('reads redis:// with a Sentinel master name (query or option) as Sentinel: the hosts are sentinels', () => {
    const expected = {
      topology: 'sentinel',
      tls: false,
      hosts: [
        { host: 's1', port: 26379 },
        { host: 's2', port: 26380 },
      ],
      masterName: 'mymaster',
      db: 0,
    }
    expect(parseRedisUrl('redis://s1,s2:26380/0?sentinelMasterName=mymaster')).toMatchObject(expected)
    expect(parseRedisUrl('redis://s1,s2:26380/0?sentinel_master=mymaster')).toMatchObject(expected)
    expect(parseRedisUrl('redis://s1,s2:26380/0', { sentinelMasterName: 'mymaster' })).toMatchObject(expected)
    expect(
      parseRedisUrl('redis://s1/0?sentinel_master=mymaster', { sentinelMasterName: 'mymaster' }),
    ).toMatchObject({ topology: 'sentinel', masterName: 'mymaster' })
    expect(
      parseRedisUrl('redis://:pw@s1/2?sentinelMasterName=m%201&sentinel_username=su&sentinel_password=sp'),
    ).toMatchObject({
      topology: 'sentinel',
      password: 'pw',
      db: 2,
      masterName: 'm 1',
      sentinelUsername: 'su',
      sentinelPassword: 'sp',
    })
    // The option agrees with a redis+sentinel:// path.
    expect(parseRedisUrl('redis+sentinel://s1/m', { sentinelMasterName: 'm' })).toMatchObject({
      masterName: 'm',
    })
  })

  it('reads valkey:// URLs as their redis:// twins', () => {
    for (const [valkey, redis] of [
      ['valkey://:pw@h:1/2', 'redis://:pw@h:1/2'],
      ['valkeys://h1,h2/0', 'rediss://h1,h2/0'],
      ['valkey+sentinel://s1/m/1', 'redis+sentinel://s1/m/1'],
      ['valkeys+cluster://n1:7000', 'rediss+cluster://n1:7000'],
      ['VALKEY://s1?sentinel_master=m', 'redis://s1?sentinel_master=m'],
    ] as const) {
      const { redacted: _v, ...v } = parseRedisUrl(valkey)
      const { redacted: _r, ...r } = parseRedisUrl(redis)
      expect(v, valkey).toEqual(r)
    }
  })

  it('rejects a master name that disagrees, is empty, or comes with a Cluster URL', () => {
    const cases: Array<[string, string | undefined, RegExp]> = [
      ['redis://s1?sentinelMasterName=a', 'b', /differs from the sentinelMasterName option "b"/],
      ['redis+sentinel://s1/a', 'b', /master name "a" differs from "b"/],
      ['redis+cluster://n1', 'm', /a Sentinel master name was given for a redis\+cluster:\/\/ URL/],
      ['redis://s1', '', /sentinelMasterName must be the name of the master group/],
      ['redis://s1?sentinel_master=', undefined, /query parameter sentinel_master must be the name/],
      ['redis://h1?sentinelPassword=x', undefined, /apply only to Sentinel, and the URL names no master/],
      ['redis://h1,h2?sentinelUsername=x', undefined, /apply only to Sentinel/],
    ]
    for (const [url, sentinelMasterName, message] of cases) {
      expect(() => parseRedisUrl(url, { sentinelMasterName }), url).toThrow(message)
    }
  })

  const bad: Array<[string, RegExp]> = [
    ['', /url must be a non-empty string/],
    ['localhost:6379', /the scheme is missing/],
    ['http://localhost:6379', /the scheme "http:" is not supported/],
    ['redis+unix://x', /the scheme "redis\+unix:" is not supported/],
    ['redis://', /the host is missing/],
    ['redis://:pw@', /the host is missing/],
    ['redis://localhost:abc', /the port "abc" of host "localhost" is not a number from 1 to 65535/],
    ['redis://localhost:0', /the port "0"/],
    ['redis://localhost:65536', /the port "65536"/],
    ['redis://localhost:', /the port ""/],
    ['redis://local host:6379', /contains a space/],
    ['redis://loc$al:6379', /the host "loc\$al" is not a host name/],
    ['redis://::1:6379', /more than one ":"/],
    ['redis://[::1:6379', /opens "\[" without closing it/],
    ['redis://[nothex]:1', /is not an IPv6 address/],
    ['redis://h/x', /the database "x" is not a whole number/],
    ['redis://h/-1', /the database "-1"/],
    ['redis://h/0/extra', /more than a database number/],
    ['redis://h1:1,h2:2/2', /Redis Cluster has only database 0/],
    ['redis://h1:1,,h2:2', /empty entry/],
    ['redis://user@h', /the user info has no password/],
    ['redis://:p@ss@h', /holds "@", "\/", "\?" or "#" that are not percent-encoded/],
    ['redis://:p/ss@h', /not percent-encoded/],
    ['redis://h/0?sentinelPassword=a@b', /not percent-encoded/],
    ['redis://:%E0%A4%A@h', /the password is not valid percent-encoding/],
    ['redis://h#frag', /a fragment/],
    ['redis://h?family=6', /the query parameter "family" is not supported/],
    ['redis+sentinel://h1,h2', /the master name is missing/],
    ['redis+sentinel://h1,h2/', /the master name is missing/],
    ['redis+sentinel://h1/m/0/x', /more than a master name and a database/],
    ['redis+sentinel://h1/m/zero', /the database "zero"/],
    ['redis+sentinel://h1:x/m', /the port "x" of host "h1"/],
    ['redis+cluster://n1:7000/2', /Redis Cluster has only database 0/],
    ['redis+cluster://n1:7000,n2:port', /the port "port" of host "n2"/],
  ]
  it.each(bad)('rejects %j naming the wrong part', (url, message) => {
    let caught: unknown
    try {
      parseRedisUrl(url)
    } catch (err) {
      caught = err
    }
    expect(caught).toBeInstanceOf(ConfigError)
    expect((caught as ConfigError).code).toBe('ERR_FASTLIMIT_CONFIG')
    expect((caught as Error).message).toMatch(/^\[fastlimit\] \[redis\] /)
    expect((caught as Error).message).toMatch(message)
  })

  it('never prints the password in an error', () => {
    expect(() => parseRedisUrl('redis://admin:hunter2@host:bad')).toThrow(/redis:\/\/admin:\*\*\*@host:bad/)
    expect(() => parseRedisUrl('redis://admin:hunter2@host:bad')).not.toThrow(/hunter2/)
    expect(redactUrl('redis://:pw@h')).toBe('redis://:***@h')
    expect(redactUrl('redis://h')).toBe('redis://h')
  })

  it('redacts up to the last "@", and secret query values to the end', () => {
    expect(redactUrl('redis://app:p@ss/w?rd#x@cache:6379/0')).toBe('redis://app:***@cache:6379/0')
    expect(redactUrl('redis://:p@ss@cache')).toBe('redis://:***@cache')
    expect(redactUrl('redis://secret@cache')).toBe('redis://***@cache')
    expect(redactUrl('redis://a/b:pw@cache')).toBe('redis://***@cache')
    expect(redactUrl('redis+sentinel://s1/m?sentinelPassword=a@b&c#d')).toBe(
      'redis+sentinel://s1/m?sentinelPassword=***',
    )
    expect(redactUrl('redis://:x@h/0?sentinel_password=y&sentinel_master=m')).toBe(
      'redis://:***@h/0?sentinel_password=***',
    )
    expect(redactUrl('user:pw@host')).toBe('user:***@host')
  })

  it('never shows any part of any password in an error, encoded or not, wherever the URL is wrong', () => {
    // Passwords made of distinct pieces ("Zq0", "Zq1", ...) joined by every delimiter a URL has.
    const password = fc
      .array(fc.constantFrom('@', '/', '?', '#', '%', ':', '&', '=', '+', ' ', '%4', '[', ']', ','), {
        minLength: 1,
        maxLength: 6,
      })
      .map((seps) => `${seps.map((sep, i) => `Zq${i}${sep}`).join('')}Zq9`)
    const url = fc.record({
      password,
      encode: fc.boolean(),
      where: fc.constantFrom('user', 'sentinel'),
      scheme: fc.constantFrom('redis', 'rediss', 'redis+sentinel', 'redis+cluster', 'http'),
      hosts: fc.constantFrom('h', 'h:1', 'h1,h2', 'h:x', '', '[::1', 'h:99999'),
      path: fc.constantFrom('', '/0', '/m', '/m/0', '/x', '/0/1/2'),
      query: fc.constantFrom('', '?sentinelMasterName=m', '?a=b', '?sentinelUsername=u'),
    })
    fc.assert(
      fc.property(url, ({ password, encode, where, scheme, hosts, path, query }) => {
        const pw = encode ? encodeURIComponent(password) : password
        const text =
          where === 'user'
            ? `${scheme}://user:${pw}@${hosts}${path}${query}`
            : `${scheme}://${hosts}${path}${query}${query === '' ? '?' : '&'}sentinelPassword=${pw}`
        expect(redactUrl(text)).not.toMatch(/Zq/)
        try {
          parseRedisUrl(text)
        } catch (err) {
          expect(err).toBeInstanceOf(ConfigError)
          expect((err as Error).message, text).not.toMatch(/Zq/)
        }
      }),
      { numRuns: 3000 },
    )
  })

  it('fromUrl takes every form: standalone, Cluster and Sentinel, plain and TLS', async () => {
    // Nothing connects: lazyConnect for Redis and Sentinel clients, and for a Cluster.
    const lazy = { redisOptions: { lazyConnect: true } }
    const lazyCluster = { clusterOptions: { lazyConnect: true } }
    const forms: Array<[string, object, 'Redis' | 'Cluster', boolean]> = [
      ['redis://h:6380/2', lazy, 'Redis', false],
      ['rediss://:pw@h', lazy, 'Redis', false],
      ['valkey://h', lazy, 'Redis', false],
      ['redis://n1:7000,n2:7001,n3:7002/0', lazyCluster, 'Cluster', false],
      ['rediss://n1,n2', lazyCluster, 'Cluster', false],
      ['redis+cluster://n1:7000', lazyCluster, 'Cluster', false],
      ['rediss+cluster://n1:7000', lazyCluster, 'Cluster', false],
      ['redis+sentinel://s1,s2/mymaster/1', lazy, 'Redis', true],
      ['rediss+sentinel://s1/mymaster', lazy, 'Redis', true],
      ['redis://s1:26379,s2/0?sentinelMasterName=mymaster', lazy, 'Redis', true],
      ['redis://s1/0?sentinel_master=mymaster', lazy, 'Redis', true],
      ['redis://s1,s2', { ...lazy, sentinelMasterName: 'mymaster' }, 'Redis', true],
    ]
    for (const [url, options, kind, sentinel] of forms) {
      const backend = RedisBackend.fromUrl(url, options)
      try {
        expect(backend.client, url).toBeInstanceOf(kind === 'Cluster' ? Cluster : Redis)
        expect(Boolean((backend.client.options as { sentinels?: unknown[] }).sentinels?.length), url).toBe(
          sentinel,
        )
      } finally {
        await backend.close()
      }
    }
  })

  it('gives the same ConfigError through the constructor and fromUrl', () => {
    expect(() => RedisBackend.fromUrl('redis://h:99999')).toThrow(ConfigError)
    expect(() => new RedisBackend({ url: 'redis+cluster://n1/5' })).toThrow(/only database 0/)
    expect(() => RedisBackend.fromUrl('redis://s1', { sentinelMasterName: '' })).toThrow(/sentinelMasterName/)
  })
})

describe('the client a URL creates', () => {
  // lazyConnect: these clients never connect.
  const lazy = { lazyConnect: true }

  it('standalone: host, port, db, auth, TLS and the fail-fast defaults', () => {
    const client = createClient(parseRedisUrl('rediss://u:p@cache:6380/4'), lazy) as Redis
    expect(client).toBeInstanceOf(Redis)
    expect(client.options).toMatchObject({
      host: 'cache',
      port: 6380,
      db: 4,
      username: 'u',
      password: 'p',
      tls: {},
      enableAutoPipelining: false,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
    })
    const delays = [1, 2, 5, 10, 100].map((n) => client.options.retryStrategy?.(n) as number)
    expect(delays[0]).toBeLessThan(200)
    for (const d of delays) expect(d).toBeLessThanOrEqual(2100)
    client.disconnect()
  })

  it('sentinel: the sentinels, the master name and their credentials', () => {
    const client = createClient(
      parseRedisUrl('redis+sentinel://:pw@s1:26379,s2:26380/primary/1?sentinelPassword=spw'),
      lazy,
    ) as Redis
    expect(client.options).toMatchObject({
      sentinels: [
        { host: 's1', port: 26379 },
        { host: 's2', port: 26380 },
      ],
      name: 'primary',
      password: 'pw',
      sentinelPassword: 'spw',
      db: 1,
      enableOfflineQueue: false,
    })
    client.disconnect()
  })

  it('sentinel from a redis:// URL and a master name: the hosts are sentinels', () => {
    const client = createClient(
      parseRedisUrl('redis://s1,s2:26380/3?sentinelMasterName=primary'),
      lazy,
    ) as Redis
    expect(client.options).toMatchObject({
      sentinels: [
        { host: 's1', port: 26379 },
        { host: 's2', port: 26380 },
      ],
      name: 'primary',
      db: 3,
    })
    client.disconnect()
  })

  it('cluster from a redis:// URL with several hosts', () => {
    const client = createClient(parseRedisUrl('redis://:pw@n1:7000,n2:7001/0'), {}, lazy) as Cluster
    expect(client).toBeInstanceOf(Cluster)
    expect(client.options.redisOptions).toMatchObject({ password: 'pw' })
    client.disconnect()
  })

  it('cluster: the startup nodes, auth for every node, and no re-sent commands', () => {
    const client = createClient(parseRedisUrl('redis+cluster://:pw@n1:7000,n2:7001'), {}, lazy) as Cluster
    expect(client).toBeInstanceOf(Cluster)
    expect(client.options).toMatchObject({
      enableAutoPipelining: false,
      enableOfflineQueue: false,
      retryDelayOnFailover: 0,
      redisOptions: { password: 'pw', maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false },
    })
    expect(client.options.redisOptions).not.toHaveProperty('enableOfflineQueue')
    client.disconnect()
  })

  it('lets redisOptions and clusterOptions override the defaults', () => {
    const client = createClient(parseRedisUrl('redis://h'), { ...lazy, connectTimeout: 1234 }) as Redis
    expect(client.options.connectTimeout).toBe(1234)
    client.disconnect()
  })
})
