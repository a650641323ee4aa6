// Hostile configuration: rule strings, rule objects and option objects fuzzed with fast-check against
// parseRule / FastLimit / the backends. Each either works within the documented bounds or throws a
// ConfigError, never another error, never a hang.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {
  ALGORITHMS,
  ConfigError,
  FastLimit,
  MAX_SCALED,
  MAX_WINDOW_MS,
  MemoryBackend,
  parseRule,
  parseRules,
  type Rule,
  type RulesInput,
} from '@fastlimit/core'
import { RedisBackend } from '@fastlimit/redis'
import { SQLiteBackend } from '@fastlimit/sqlite'
import fc from 'fast-check'
import { afterAll, describe, expect, it } from 'vitest'
import { Recorder, round } from './helpers'
import { hostileValue, mutated, ruleObjectArb, ruleStringArb } from './hostile-values'

const recorder = new Recorder('hostile-config', 'hostile')
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-reliability-config-'))
const BUCKET_ALGORITHMS = new Set(['token-bucket', 'leaky-bucket', 'gcra'])
const NAME = /^[A-Za-z0-9_.:/+-]{1,64}$/

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true })
  recorder.save()
})

/** Every documented bound of a parsed rule. */
function checkRule(rule: Rule): void {
  expect(Object.isFrozen(rule)).toBe(true)
  expect(ALGORITHMS).toContain(rule.algorithm)
  expect(Number.isSafeInteger(rule.limit) && rule.limit >= 1).toBe(true)
  expect(Number.isSafeInteger(rule.windowMs) && rule.windowMs >= 1 && rule.windowMs <= MAX_WINDOW_MS).toBe(
    true,
  )
  if (rule.burst !== undefined) {
    expect(BUCKET_ALGORITHMS.has(rule.algorithm)).toBe(true)
    expect(Number.isSafeInteger(rule.burst) && rule.burst >= 1).toBe(true)
  }
  expect(Math.max(rule.limit, rule.burst ?? rule.limit) * rule.windowMs).toBeLessThanOrEqual(MAX_SCALED)
  expect(rule.name).toMatch(NAME)
  expect(typeof rule.id).toBe('string')
}

/** Runs `fn`: a value, or a ConfigError; anything else fails the property. Returns which. */
function parsesOrConfigError<T>(fn: () => T): { ok: true; value: T } | { ok: false } {
  try {
    return { ok: true, value: fn() }
  } catch (err) {
    if (!(err instanceof ConfigError)) throw new Error(`not a ConfigError: ${String(err)}`, { cause: err })
    expect(err.code).toBe('ERR_FASTLIMIT_CONFIG')
    expect(err.message).toMatch(/^\[fastlimit\] \[\w+\] /)
    return { ok: false }
  }
}

describe('rules', () => {
  it('fast-check: rule strings parse within bounds or throw ConfigError, and FastLimit.check agrees', async () => {
    const limiter = new FastLimit()
    let parsed = 0
    let refused = 0
    let slowest = 0
    await fc.assert(
      fc.asyncProperty(ruleStringArb, async (text) => {
        const t = performance.now()
        const r = parsesOrConfigError(() => parseRule(text))
        slowest = Math.max(slowest, performance.now() - t)
        if (r.ok) {
          parsed++
          checkRule(r.value)
          const d = await limiter.check('fuzz', text)
          expect(d.rule.id).toBe(r.value.id)
        } else {
          refused++
          await expect(limiter.check('fuzz', text)).rejects.toBeInstanceOf(ConfigError)
        }
      }),
      { numRuns: 4000 },
    )
    await limiter.close()
    expect(parsed).toBeGreaterThan(100)
    expect(refused).toBeGreaterThan(100)
    recorder.add({
      class: 'rule strings (grammar-based + arbitrary unicode)',
      cases: parsed + refused,
      result: `${parsed} parsed within bounds, ${refused} ConfigError, 0 other errors; slowest ${round(slowest, 2)} ms`,
    })
  })

  it('fast-check: rule objects and lists (hostile field values, unknown and prototype keys) parse or throw ConfigError', async () => {
    const limiter = new FastLimit()
    let parsed = 0
    let refused = 0
    const input = fc.oneof(
      ruleObjectArb,
      fc.array(fc.oneof(ruleObjectArb, ruleStringArb), { maxLength: 4 }),
      hostileValue,
    )
    await fc.assert(
      fc.asyncProperty(input, async (rules) => {
        const r = parsesOrConfigError(() => parseRules(rules as RulesInput))
        if (r.ok) {
          parsed++
          for (const rule of r.value.rules) checkRule(rule)
          expect(new Set(r.value.rules.map((x) => x.id)).size).toBe(r.value.rules.length)
          const d = await limiter.check('fuzz', rules as RulesInput)
          expect(d.rules).toHaveLength(r.value.rules.length)
        } else {
          refused++
          await expect(limiter.check('fuzz', rules as RulesInput)).rejects.toBeInstanceOf(ConfigError)
        }
      }),
      { numRuns: 4000 },
    )
    await limiter.close()
    expect(parsed).toBeGreaterThan(100)
    recorder.add({
      class: 'rule objects and lists (hostile values, __proto__/constructor keys)',
      cases: parsed + refused,
      result: `${parsed} parsed within bounds, ${refused} ConfigError, 0 other errors`,
    })
  })

  it('a 40 KB rule string of whitespace is refused in linear time (was quadratic)', () => {
    // '1' + 20,000 × ' \t' + 'x': the rule regex backtracks over every split of the spaces between \s* and \s+.
    const text = `1${' \t'.repeat(20_000)}x`
    const t = performance.now()
    expect(() => parseRule(text)).toThrow(ConfigError)
    const ms = performance.now() - t
    recorder.details.quadraticRuleMs = round(ms)
    // Linear parsing takes well under a millisecond here; this bound has a margin of 100 times that.
    expect(ms).toBeLessThan(250)
  })

  it('a string-array rule list is refused even after a list with the same joined text was cached', async () => {
    // FastLimit.rules() caches arrays of strings under their '\n'-joined text: ['5 per\nminute'] (valid, one
    // rule) and ['5 per', 'minute'] (two invalid rules) share the key '\n5 per\nminute'.
    const limiter = new FastLimit()
    expect(() => parseRules(['5 per', 'minute'])).toThrow(ConfigError)
    await limiter.check('a', ['5 per\nminute'])
    await expect(limiter.check('b', ['5 per', 'minute'])).rejects.toBeInstanceOf(ConfigError)
  })
})

describe('options', () => {
  it('fast-check: FastLimit options (hostile backends, prefixes, policies, timeouts, unknown keys) construct and work, or throw ConfigError', async () => {
    let built = 0
    let refused = 0
    const backendArb = fc.oneof(
      fc.constant(undefined),
      fc.constant('memory'),
      fc.constant('broken'),
      hostileValue,
      fc.constant({ checkAndIncrement: () => 1 }),
    )
    const optionsArb = mutated(fc.constant({}), {
      backend: backendArb,
      prefix: fc.oneof(
        fc.constantFrom(
          'fl',
          'a',
          'app:rl',
          'x'.repeat(64),
          'x'.repeat(65),
          '',
          ' ',
          'a b',
          '{a}',
          'a}',
          'é',
          '\n',
        ),
        hostileValue,
      ),
      algorithm: fc.oneof(
        fc.constantFrom(...ALGORITHMS),
        fc.constantFrom('GCRA', 'token_bucket', '__proto__', 'constructor'),
        hostileValue,
      ),
      onBackendError: fc.oneof(
        fc.constantFrom('fail-open', 'fail-closed', 'throw', 'ignore', 'FAIL-OPEN'),
        fc.constant('fallback'),
        fc.constant({ fallback: {} }),
        hostileValue,
      ),
      timeoutMs: fc.oneof(
        fc.constantFrom(1, 200, 2 ** 31 - 1, 2 ** 31, 0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY),
        hostileValue,
      ),
      onError: fc.oneof(
        fc.constant(() => undefined),
        hostileValue,
      ),
    })
    await fc.assert(
      fc.asyncProperty(optionsArb, async (raw) => {
        const { backend, onBackendError, ...rest } = raw
        const options: Record<string, unknown> = { ...rest }
        if ('backend' in raw) {
          options.backend =
            backend === 'memory'
              ? new MemoryBackend()
              : backend === 'broken'
                ? { ...new MemoryBackend() }
                : backend
        }
        if ('onBackendError' in raw) {
          options.onBackendError =
            onBackendError === 'fallback' ? { fallback: new MemoryBackend() } : onBackendError
        }
        const r = parsesOrConfigError(() => new FastLimit(options))
        if (r.ok) {
          built++
          // A backend needs only checkAndIncrement now: one answering garbage fails each call, which the
          // policy answers (fail-open admits, fail-closed refuses, a fallback decides), or which rejects
          // with ERR_FASTLIMIT_BACKEND under 'throw'.
          const decided = await r.value.check('id', '2/s').then(
            (d) => ({ d }),
            (err: unknown) => ({ err }),
          )
          if ('d' in decided) {
            const refusedByPolicy = decided.d.source === 'policy' && onBackendError === 'fail-closed'
            expect(decided.d.allowed).toBe(!refusedByPolicy)
          } else {
            expect(r.value.backend.checkAndIncrement).toBeTypeOf('function')
            expect(decided.err).toMatchObject({ code: 'ERR_FASTLIMIT_BACKEND' })
            expect(onBackendError).toBe('throw')
          }
          await r.value.close()
        } else refused++
      }),
      { numRuns: 3000 },
    )
    recorder.add({
      class: 'FastLimit option objects',
      cases: built + refused,
      result: `${built} built and decided, ${refused} ConfigError, 0 other errors`,
    })
  })

  it('fast-check: MemoryBackend and SQLiteBackend options construct or throw ConfigError', async () => {
    let built = 0
    let refused = 0
    const existing = path.join(dir, 'existing.db')
    fs.writeFileSync(path.join(dir, 'not-a-db.db'), 'hello, I am not SQLite')
    const memoryArb = mutated(fc.constant({ maxKeys: 1000, cleanupIntervalMs: 0 }), {
      maxKeys: fc.oneof(fc.constantFrom(1, 10, 2 ** 30, 2 ** 30 + 1, 0, -1, 1.5, Number.NaN), hostileValue),
      cleanupIntervalMs: fc.oneof(fc.constantFrom(0, 1, 60_000, 2 ** 31 - 1, 2 ** 31, -1), hostileValue),
      clock: fc.oneof(fc.constant(Date.now), hostileValue),
    })
    const sqlitePathArb = fc.oneof(
      fc.constantFrom(
        ':memory:',
        existing,
        path.join(dir, 'not-a-db.db'),
        dir,
        path.join(dir, 'missing', 'x.db'),
        '',
        path.join(dir, 'é ✓.db'),
      ),
      // Hostile values that are not paths; hostile text only as a file name inside the temp directory
      // (a relative string would create files wherever the suite runs).
      hostileValue.filter((v) => typeof v !== 'string'),
      fc.string({ maxLength: 12 }).map((s) => path.join(dir, `fuzz-${s.replace(/[/\\]/g, '_')}`)),
    )
    const sqliteArb = mutated(fc.constant({ cleanupIntervalMs: 0 }), {
      tableName: fc.oneof(
        fc.constantFrom('fastlimit', 'a_b', '1abc', 'sqlite_x', 'a-b', 'x'.repeat(61), 'drop table x;--'),
        hostileValue,
      ),
      busyTimeoutMs: fc.oneof(fc.constantFrom(0, 1, 1000, 2 ** 31, -1), hostileValue),
      cleanupIntervalMs: fc.oneof(fc.constantFrom(0, 1000, -5), hostileValue),
      clock: fc.oneof(fc.constant(Date.now), hostileValue),
    })
    await fc.assert(
      fc.asyncProperty(memoryArb, sqlitePathArb, sqliteArb, async (memOptions, file, sqlOptions) => {
        const m = parsesOrConfigError(() => new MemoryBackend(memOptions as never))
        if (m.ok) {
          built++
          await m.value.close()
        } else refused++
        const s = parsesOrConfigError(() => new SQLiteBackend(file as string, sqlOptions as never))
        if (s.ok) {
          built++
          expect(s.value.checkAndIncrementSync('k', parseRule('1/s'), 1)?.allowed).toBe(true)
          await s.value.clear()
          await s.value.close()
        } else refused++
      }),
      { numRuns: 400 },
    )
    recorder.add({
      class: 'MemoryBackend + SQLiteBackend options and paths',
      cases: built + refused,
      result: `${built} built, ${refused} ConfigError, 0 other errors`,
    })
  })

  it('SQLiteBackend refuses a path holding a NUL byte instead of opening a truncated one', () => {
    const target = path.join(dir, 'tenant-a.db')
    // `${tenant}.db` with tenant 'tenant-a.db\0': SQLite sees a C string and opens tenant-a.db.
    let backend: SQLiteBackend | undefined
    try {
      expect(() => {
        backend = new SQLiteBackend(`${target}\0.db`, { cleanupIntervalMs: 0 })
      }).toThrow(ConfigError)
    } finally {
      void backend?.close()
      recorder.details.nulPathOpened = fs.existsSync(target)
    }
  })

  it('fast-check: RedisBackend options and URLs construct or throw ConfigError (clients created lazily, never connected)', async () => {
    let built = 0
    let refused = 0
    // Loopback only, ports nothing listens on; lazyConnect so that no connection is ever attempted.
    const host = fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom('127.0.0.1', 'localhost', '[::1]') },
      { weight: 1, arbitrary: fc.constantFrom('', ':', 'a b', '%zz', 'é', '127.0.0.1:1', '[::1', '::1') },
    )
    const port = fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom('1', '9') },
      { weight: 1, arbitrary: fc.constantFrom('0', '65536', '-1', 'x', '', '00009', '1.5') },
    )
    const scheme = fc.oneof(
      {
        weight: 6,
        arbitrary: fc.constantFrom('redis', 'rediss', 'redis+sentinel', 'rediss+cluster', 'redis+cluster'),
      },
      { weight: 1, arbitrary: fc.constantFrom('http', 'REDIS', '', 'redis+foo') },
    )
    const url = fc.oneof(
      {
        weight: 6,
        arbitrary: fc.constantFrom(
          'redis://127.0.0.1:9',
          'rediss://127.0.0.1:9/2',
          'redis+sentinel://127.0.0.1:9,localhost:1/mymaster',
          'rediss+sentinel://127.0.0.1:9/m/3?sentinelPassword=x',
          'redis+cluster://127.0.0.1:9,127.0.0.1:1',
          'redis://:pw@127.0.0.1:9',
          'redis://u:p%40@[::1]:9/15',
        ),
      },
      {
        weight: 8,
        arbitrary: fc
          .tuple(
            scheme,
            fc.constantFrom('', 'user@', ':pw@', 'u:p%40@', '@', ':%zz@'),
            fc.array(fc.tuple(host, port), { minLength: 1, maxLength: 3 }),
            fc.constantFrom(
              '',
              '/0',
              '/15',
              '/16',
              '/x',
              '/mymaster',
              '/mymaster/2',
              '?sentinelPassword=p',
              '?foo=1',
              '#x',
            ),
          )
          .map(
            ([s, auth, hosts, tail]) =>
              `${s}://${auth}${hosts.map(([h, p]) => (p === '' ? h : `${h}:${p}`)).join(',')}${tail}`,
          ),
      },
      { weight: 1, arbitrary: fc.string({ maxLength: 30 }) },
      { weight: 1, arbitrary: hostileValue },
    )
    const options = mutated(fc.constant({ keyPrefix: 'fuzz:' }), {
      keyPrefix: fc.oneof(fc.constantFrom('fastlimit:', 'a', '', '{x}', 'a b', 'x'.repeat(65)), hostileValue),
      timeSource: fc.oneof(fc.constantFrom('server', 'client', 'SERVER'), hostileValue),
      clock: fc.oneof(fc.constant(Date.now), hostileValue),
      expiryMarginMs: fc.oneof(fc.constantFrom(0, 1000, 86_400_000, 86_400_001, -1, 1.5), hostileValue),
      client: hostileValue,
    })
    await fc.assert(
      fc.asyncProperty(url, options, async (u, o) => {
        // Several hosts in a redis:// URL are a Cluster too.
        const cluster =
          typeof u === 'string' && (/^rediss?\+cluster:/i.test(u) || /^rediss?:\/\/[^/?#]*,/i.test(u))
        const lazy = cluster
          ? { clusterOptions: { lazyConnect: true } }
          : { redisOptions: { lazyConnect: true } }
        const all = { ...o, url: u, ...lazy } as never
        const r = parsesOrConfigError(() => new RedisBackend(all))
        if (r.ok) {
          built++
          expect(r.value.client.status).toBe('wait')
          await r.value.close()
        } else refused++
      }),
      { numRuns: 1500 },
    )
    expect(built).toBeGreaterThan(0)
    recorder.add({
      class: 'RedisBackend URLs and options',
      cases: built + refused,
      result: `${built} built (lazily, closed unconnected), ${refused} ConfigError, 0 other errors`,
    })
  })
})
