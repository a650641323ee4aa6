import { describe, expect, it } from 'vitest'
import { ConfigError } from './errors'
import { backendFromUrl } from './from-url'
import { FastLimit } from './limiter'
import { MemoryBackend } from './memory'

describe('backendFromUrl', () => {
  it('gives a MemoryBackend for memory:, with options', async () => {
    for (const url of ['memory:', 'memory://', ' MEMORY: ']) {
      const backend = await backendFromUrl(url, { options: { maxKeys: 10 } })
      expect(backend).toBeInstanceOf(MemoryBackend)
      const limiter = new FastLimit({ backend })
      expect((await limiter.check('u', '2/min')).remaining).toBe(1)
      await backend.close?.()
    }
    await expect(backendFromUrl('memory:whatever')).rejects.toThrow(/takes nothing after the scheme/)
  })

  it('loads the backend package only for its scheme, and passes the URL and options on', async () => {
    const loaded: string[] = []
    const made: unknown[] = []
    const importer = async (name: string) => {
      loaded.push(name)
      return {
        SQLiteBackend: class {
          constructor(file: string, options: object) {
            made.push(['sqlite', file, options])
          }
        },
        RedisBackend: { fromUrl: (url: string, options: object) => made.push(['redis', url, options]) },
        PostgresBackend: class {
          constructor(url: string, options: object) {
            made.push(['postgres', url, options])
          }
        },
      }
    }
    await backendFromUrl('sqlite:./limits.db', { importer, options: { tableName: 't' } })
    await backendFromUrl('sqlite:///var/lib/app/limits.db', { importer })
    await backendFromUrl('sqlite::memory:', { importer })
    await backendFromUrl('redis://h1:7000,h2:7001/0', { importer, options: { keyPrefix: 'app:' } })
    await backendFromUrl('rediss+sentinel://s1:26379/mymaster', { importer })
    await backendFromUrl('postgresql://app:pw@db/app', { importer })
    expect(loaded).toEqual([
      '@fastlimit/sqlite',
      '@fastlimit/sqlite',
      '@fastlimit/sqlite',
      '@fastlimit/redis',
      '@fastlimit/redis',
      '@fastlimit/postgres',
    ])
    expect(made).toEqual([
      ['sqlite', './limits.db', { tableName: 't' }],
      ['sqlite', '/var/lib/app/limits.db', {}],
      ['sqlite', ':memory:', {}],
      ['redis', 'redis://h1:7000,h2:7001/0', { keyPrefix: 'app:' }],
      ['redis', 'rediss+sentinel://s1:26379/mymaster', {}],
      ['postgres', 'postgresql://app:pw@db/app', {}],
    ])
  })

  it('names the package to install when it is missing', async () => {
    const importer = async (name: string) => {
      throw Object.assign(new Error(`Cannot find package '${name}'`), { code: 'ERR_MODULE_NOT_FOUND' })
    }
    await expect(backendFromUrl('redis://localhost:6379', { importer })).rejects.toThrow(
      /needs the package @fastlimit\/redis, which is not installed: npm install @fastlimit\/redis ioredis/,
    )
    await expect(backendFromUrl('sqlite:x.db', { importer })).rejects.toThrow(
      /npm install @fastlimit\/sqlite better-sqlite3/,
    )
  })

  it('refuses other URLs without echoing them (they may hold a password)', async () => {
    for (const url of ['mysql://user:s3cret@db/app', 'http://x', 'localhost:6379', 'nothing']) {
      const err = await backendFromUrl(url).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(ConfigError)
      expect(String((err as Error).message)).not.toMatch(/s3cret|db\/app/)
      expect(String((err as Error).message)).toMatch(/memory:.*sqlite:<path>.*redis:\/\//)
    }
    await expect(backendFromUrl('')).rejects.toThrow(/needs a URL/)
    await expect(backendFromUrl('sqlite:')).rejects.toThrow(/needs a file path/)
  })
})
