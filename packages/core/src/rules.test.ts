import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ALGORITHMS } from './algorithms'
import { bucketId } from './backend'
import { ConfigError, FastlimitError } from './errors'
import { MemoryBackend } from './memory'
import {
  formatWindow,
  MAX_WINDOW_MS,
  parseRule,
  parseRules,
  parseWindow,
  type Rule,
  type RuleObject,
} from './rules'

describe('parseRule', () => {
  it.each([
    ['100/min', 100, 60_000],
    ['10/s', 10, 1000],
    ['1000/day', 1000, 86_400_000],
    ['100/15m', 100, 900_000],
    ['5 per minute', 5, 60_000],
    ['5 per 15 minutes', 5, 900_000],
    [' 7 / 2h ', 7, 7_200_000],
    ['3/500ms', 3, 500],
    ['1/w', 1, 604_800_000],
    ['20/SEC', 20, 1000],
  ])('%s', (text, limit, windowMs) => {
    const rule = parseRule(text)
    expect(rule).toMatchObject({ algorithm: 'gcra', limit, windowMs })
    expect(Object.isFrozen(rule)).toBe(true)
  })

  it('takes the object form', () => {
    expect(parseRule({ limit: 10, window: '1m', algorithm: 'sliding-window', name: 'search' })).toMatchObject(
      {
        algorithm: 'sliding-window',
        limit: 10,
        windowMs: 60_000,
        name: 'search',
      },
    )
    expect(parseRule({ limit: 10, window: 1500, burst: 20 })).toMatchObject({
      windowMs: 1500,
      burst: 20,
      name: '10/1500ms',
    })
    expect(parseRule({ limit: 10, window: 'minute', burst: 10 }).burst).toBeUndefined()
    expect(parseRule({ limit: 1, windowMs: 1000 }).windowMs).toBe(1000)
  })

  it('names rules in short form and gives them stable ids', () => {
    expect(parseRule('100/15m').name).toBe('100/15m')
    expect(parseRule('100/60 minutes').name).toBe('100/1h')
    expect(parseRule('100/min').id).toBe('gcra:100:60000:100')
    expect(parseRule('100/min', 'fixed-window').id).toBe('fixed-window:100:60000:100')
  })

  it.each([
    ['0/min', /limit "0" is not a positive whole number/],
    ['-5/min', /not a positive whole number/],
    ['1.5/min', /not a positive whole number/],
    ['NaN/min', /not a positive whole number/],
    ['100/mn', /unknown unit "mn"/],
    ['100/0m', /at least 1/],
    ['100', /not a rule/],
    ['', /not a rule/],
    ['100/366d', /longer than 365 days/],
    ['9007199254740993/s', /not a positive whole number/],
  ])('rejects %j', (text, message) => {
    expect(() => parseRule(text)).toThrow(ConfigError)
    expect(() => parseRule(text)).toThrow(message)
  })

  it.each([
    [{ limit: 0, window: '1m' }, /limit must be a positive whole number, got 0/],
    [{ limit: Number.NaN, window: '1m' }, /got NaN/],
    [{ limit: 2.5, window: '1m' }, /got 2.5/],
    [{ limit: 5, window: 0 }, /at least 1/],
    [{ limit: 5, window: 0.5 }, /whole number of milliseconds/],
    [{ limit: 5, window: MAX_WINDOW_MS + 1 }, /365 days/],
    [{ limit: 5, window: '1m', burst: 0 }, /burst must be a positive whole number/],
    [{ limit: 5, window: '1m', algorithm: 'fixed-window', burst: 9 }, /burst applies only to/],
    [{ limit: 5, window: '1m', algorithm: 'nope' }, /unknown algorithm "nope"/],
    [{ limit: 5, window: '1m', name: 'has space' }, /invalid name/],
    [{ limit: 5, window: '1m', windw: 3 }, /unknown option "windw"/],
    [{ limit: 5 }, /window is missing/],
    [{ limit: 5, window: '1m', windowMs: 60000 }, /both window and windowMs/],
    [{ limit: 1_000_000, window: '365d' }, /above 2\^52.*Use at most 142808 per 365d/],
  ])('rejects %j', (input, message) => {
    expect(() => parseRule(input as never)).toThrow(message)
  })

  it('says what to do in every message', () => {
    try {
      parseRule('100/mn')
      expect.unreachable()
    } catch (err) {
      expect(err).toBeInstanceOf(FastlimitError)
      expect((err as FastlimitError).code).toBe('ERR_FASTLIMIT_CONFIG')
      expect((err as Error).message).toBe(
        '[fastlimit] [core] Rule "100/mn": unknown unit "mn". Use a unit of ms, s, m (or min), h, d or w, e.g. "100/min", "10/s", "100/15m" or "5 per minute".',
      )
    }
  })

  it('rejects values that are not rules at all', () => {
    for (const bad of [null, undefined, 42, true, [], () => 1])
      expect(() => parseRule(bad as never)).toThrow(ConfigError)
  })
})

describe('parseRules', () => {
  it('accepts one rule or several, and rejects duplicates and empty lists', () => {
    expect(parseRules('10/s').rules).toHaveLength(1)
    expect(parseRules(['10/s', '1000/day']).rules.map((r) => r.name)).toEqual(['10/1s', '1000/1d'])
    expect(() => parseRules([])).toThrow(/empty/)
    expect(() => parseRules(['10/s', '10/1s'])).toThrow(/two rules are the same/)
    expect(() =>
      parseRules([
        { limit: 1, window: '1s', name: 'a' },
        { limit: 2, window: '1s', name: 'a' },
      ]),
    ).toThrow(/two rules are named "a"/)
    const set = parseRules(['10/s'])
    expect(parseRules(set)).toBe(set)
  })
})

describe('rule ids: one bucket per distinct rule', () => {
  it('gives rules that differ only by name separate buckets: 5 logins do not use up a password-reset limit', async () => {
    const login = parseRule({ limit: 5, window: '15m', name: 'login' })
    const reset = parseRule({ limit: 5, window: '15m', name: 'password-reset' })
    expect(login.id).not.toBe(reset.id)
    const backend = new MemoryBackend({ cleanupIntervalMs: 0 })
    for (let i = 0; i < 5; i++) expect(backend.checkAndIncrementSync('ip', login, 1).allowed).toBe(true)
    expect(backend.checkAndIncrementSync('ip', login, 1).allowed).toBe(false)
    expect(backend.checkAndIncrementSync('ip', reset, 1)).toMatchObject({ allowed: true, remaining: 4 })
    await backend.close()
  })

  it('keeps the plain configuration as the id of an unnamed rule (and of one named as the default)', () => {
    expect(parseRule('100/min').id).toBe('gcra:100:60000:100')
    expect(parseRule({ limit: 100, window: '1m', name: '100/1m' }).id).toBe('gcra:100:60000:100')
    expect(parseRule({ limit: 100, window: '1m', name: 'api' }).id).toBe('gcra:100:60000:100:api')
    expect(bucketId({ algorithm: 'gcra', limit: 100, windowMs: 60_000 })).toBe('gcra:100:60000:100')
  })

  // Adversarial pairs: names that spell another rule's configuration or its id, names with the
  // separator, names that are prefixes of each other, the default name written out, equal fields.
  const nameArb = (rule: { limit: number; windowMs: number }) =>
    fc.oneof(
      fc.constant(undefined),
      fc.constant(`${rule.limit}/${formatWindow(rule.windowMs)}`),
      fc.constantFrom(
        'a',
        'a:',
        ':a',
        'a:b',
        '1',
        '100',
        '100:100',
        'gcra',
        'gcra:1:1:1',
        '60000:100',
        'x',
        'x:',
      ),
      fc.stringMatching(/^[A-Za-z0-9_.:/+-]{1,12}$/),
      fc
        .tuple(fc.constantFrom(...ALGORITHMS), fc.nat(3), fc.nat(3))
        .map(([a, l, w]) => `${a}:${l + 1}:${w + 1}`),
    )
  const ruleArb: fc.Arbitrary<RuleObject> = fc
    .record({
      algorithm: fc.constantFrom(...ALGORITHMS),
      limit: fc.integer({ min: 1, max: 4 }),
      windowMs: fc.constantFrom(1, 2, 1000, 60_000),
      burst: fc.option(fc.integer({ min: 1, max: 5 }), { nil: undefined }),
    })
    .chain((r) =>
      nameArb(r).map((name) => ({
        algorithm: r.algorithm,
        limit: r.limit,
        windowMs: r.windowMs,
        ...(r.burst !== undefined && ['gcra', 'token-bucket', 'leaky-bucket'].includes(r.algorithm)
          ? { burst: r.burst }
          : {}),
        ...(name === undefined ? {} : { name }),
      })),
    )
  const fields = (r: Rule) => [r.algorithm, r.limit, r.windowMs, r.burst ?? r.limit, r.name]

  it('two rules share an id exactly when every field is equal, name included (property)', () => {
    fc.assert(
      fc.property(ruleArb, ruleArb, (a, b) => {
        const x = parseRule(a)
        const y = parseRule(b)
        const same = JSON.stringify(fields(x)) === JSON.stringify(fields(y))
        expect(x.id === y.id).toBe(same)
        // And a plain BucketConfig of the same configuration shares the unnamed rule's state only.
        const plain = bucketId({
          algorithm: x.algorithm,
          limit: x.limit,
          windowMs: x.windowMs,
          burst: x.burst,
        })
        expect(plain === x.id).toBe(x.name === `${x.limit}/${formatWindow(x.windowMs)}`)
      }),
      { numRuns: 5000 },
    )
  })

  it('rules that differ in any field never share state in MemoryBackend (property)', () => {
    const backend = new MemoryBackend({ cleanupIntervalMs: 0 })
    let key = 0
    fc.assert(
      fc.property(ruleArb, ruleArb, (a, b) => {
        const x = parseRule(a)
        const y = parseRule(b)
        const k = String(key++)
        // Fill x, then y must be untouched unless it is the same rule.
        while (backend.checkAndIncrementSync(k, x, 1).allowed) {}
        const fresh = backend.peekSync(k, y).remaining === (y.burst ?? y.limit)
        expect(fresh).toBe(JSON.stringify(fields(x)) !== JSON.stringify(fields(y)))
      }),
      { numRuns: 2000 },
    )
  })
})

describe('windows', () => {
  it('parses and formats durations', () => {
    expect(parseWindow('15 minutes')).toBe(900_000)
    expect(parseWindow('day')).toBe(86_400_000)
    expect(formatWindow(90_000)).toBe('90s')
    expect(formatWindow(1500)).toBe('1500ms')
    expect(() => parseWindow('fortnight')).toThrow(/unknown unit "fortnight"/)
  })
})
