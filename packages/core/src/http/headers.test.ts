import { describe, expect, it } from 'vitest'
import { ConfigError } from '../errors'
import { type Decision, FastLimit } from '../limiter'
import { MemoryBackend } from '../memory'
import { parseRules } from '../rules'
import { fakeClock } from '../testing'
import { delaySeconds, RateLimitHeaders, retryAfterValue } from './headers'

const T0 = 1_700_000_040_000 // a whole minute, so fixed windows start here

function setup(rules: Parameters<FastLimit['rules']>[0]) {
  const clock = fakeClock(T0)
  const limiter = new FastLimit({ backend: new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }) })
  return { clock, limiter, set: limiter.rules(rules) }
}

describe('RateLimitHeaders', () => {
  it('writes draft-7 byte for byte: RateLimit-Policy and one RateLimit dictionary', async () => {
    const { clock, limiter, set } = setup('3/min')
    const h = new RateLimitHeaders(set, 'draft-7')
    const seen: Record<string, string>[] = []
    for (let i = 0; i < 4; i++) seen.push(h.toObject(await limiter.check('a', set), clock.now()))
    expect(seen).toEqual([
      { 'ratelimit-policy': '3;w=60', ratelimit: 'limit=3, remaining=2, reset=20' },
      { 'ratelimit-policy': '3;w=60', ratelimit: 'limit=3, remaining=1, reset=40' },
      { 'ratelimit-policy': '3;w=60', ratelimit: 'limit=3, remaining=0, reset=60' },
      // denied: reset is the retry-after delay (draft-07 §4)
      { 'ratelimit-policy': '3;w=60', ratelimit: 'limit=3, remaining=0, reset=20' },
    ])
    clock.advance(19_001)
    expect(h.toObject(await limiter.check('a', set), clock.now())).toEqual({
      'ratelimit-policy': '3;w=60',
      ratelimit: 'limit=3, remaining=0, reset=1',
    })
  })

  it('writes draft-6 byte for byte: four fields', async () => {
    const { clock, limiter, set } = setup({ limit: 10, window: '1h', algorithm: 'fixed-window' })
    const h = new RateLimitHeaders(set, 'draft-6')
    clock.advance(1500)
    expect(h.toObject(await limiter.check('a', set, { cost: 4 }), clock.now())).toEqual({
      'ratelimit-policy': '10;w=3600',
      'ratelimit-limit': '10',
      'ratelimit-remaining': '6',
      'ratelimit-reset': String(Math.ceil((Math.ceil(T0 / 3_600_000) * 3_600_000 - clock.now()) / 1000)),
    })
  })

  it('writes draft-8 byte for byte: named policies with q, w, r and t', async () => {
    const { clock, limiter, set } = setup([
      { limit: 10, window: '1s', name: 'burst' },
      { limit: 1000, window: '1d', name: 'daily', algorithm: 'fixed-window' },
    ])
    const h = new RateLimitHeaders(set, 'draft-8')
    expect(h.policy).toBe('"burst";q=10;w=1, "daily";q=1000;w=86400')
    const d = await limiter.check('a', set)
    expect(d.rule.name).toBe('burst')
    expect(h.toObject(d, clock.now())).toEqual({
      'ratelimit-policy': '"burst";q=10;w=1, "daily";q=1000;w=86400',
      ratelimit: '"burst";r=9;t=1',
    })
  })

  it('reports the most restrictive of several rules', async () => {
    const { clock, limiter, set } = setup(['5/s', { limit: 7, window: '1m', algorithm: 'fixed-window' }])
    const h = new RateLimitHeaders(set, 'draft-7')
    expect(h.policy).toBe('5;w=1, 7;w=60')
    const out: string[] = []
    for (let i = 0; i < 4; i++) {
      out.push(h.toObject(await limiter.check('a', set), clock.now()).ratelimit as string)
      clock.advance(1000)
    }
    // the per-second rule has more left at first; then the per-minute one runs lower
    expect(out[0]).toBe('limit=5, remaining=4, reset=1')
    expect(out[2]).toBe('limit=7, remaining=4, reset=58')
    expect(out[3]).toBe('limit=7, remaining=3, reset=57')
  })

  it('adds legacy X-RateLimit-* with an epoch-seconds reset, alone or beside a draft', async () => {
    const { clock, limiter, set } = setup('2/10s')
    const d = await limiter.check('a', set)
    expect(new RateLimitHeaders(set, 'legacy').toObject(d, clock.now())).toEqual({
      'x-ratelimit-limit': '2',
      'x-ratelimit-remaining': '1',
      'x-ratelimit-reset': String(T0 / 1000 + 5),
    })
    expect(Object.keys(new RateLimitHeaders(set, 'draft-6', true).toObject(d, clock.now()))).toEqual([
      'ratelimit-policy',
      'ratelimit-limit',
      'ratelimit-remaining',
      'ratelimit-reset',
      'x-ratelimit-limit',
      'x-ratelimit-remaining',
      'x-ratelimit-reset',
    ])
    expect(new RateLimitHeaders(set, false).toObject(d, clock.now())).toEqual({})
    expect(new RateLimitHeaders(set, false, true).toObject(d, clock.now())['x-ratelimit-remaining']).toBe('1')
  })

  it('shows burst as a policy parameter and the capacity as the limit', async () => {
    const { clock, limiter, set } = setup({ limit: 10, window: '1s', burst: 50 })
    const h = new RateLimitHeaders(set, 'draft-7')
    expect(h.toObject(await limiter.check('a', set), clock.now())).toEqual({
      'ratelimit-policy': '10;w=1;burst=50',
      ratelimit: 'limit=50, remaining=49, reset=1',
    })
  })

  it('rounds windows and resets up to whole seconds and never goes negative', () => {
    const set = parseRules([{ limit: 3, window: 1500 }])
    const rule = set.rules[0] as Decision['rule']
    const h = new RateLimitHeaders(set, 'draft-6')
    const base = {
      allowed: true,
      reason: 'ok',
      source: 'backend',
      limit: 3,
      remaining: 3,
      retryAfterMs: 0,
      cost: 1,
      rule,
      rules: [],
    } as const
    const at = (resetMs: number) =>
      h.toObject({ ...base, resetMs } as unknown as Decision, 10_000)['ratelimit-reset']
    expect(h.policy).toBe('3;w=2')
    expect(at(10_000)).toBe('0')
    expect(at(9_000)).toBe('0') // a reset in the past (clock skew) is 0, never negative
    expect(at(10_001)).toBe('1')
    expect(at(11_000)).toBe('1')
    expect(at(11_001)).toBe('2')
    // a cost that can never pass: no retry to point at, so reset is the bucket's own
    const never = {
      ...base,
      allowed: false,
      reason: 'cost-exceeds-limit',
      retryAfterMs: Infinity,
      resetMs: 12_500,
    }
    expect(h.toObject(never as unknown as Decision, 10_000)['ratelimit-reset']).toBe('3')
  })

  it('rejects an unknown format', () => {
    expect(() => new RateLimitHeaders(parseRules('1/s'), 'draft-9' as 'draft-7')).toThrow(ConfigError)
  })
})

describe('retry-after', () => {
  it('is whole seconds rounded up, and absent when the request can never pass', () => {
    expect(retryAfterValue(1)).toBe('1')
    expect(retryAfterValue(1000)).toBe('1')
    expect(retryAfterValue(1001)).toBe('2')
    expect(retryAfterValue(59_999)).toBe('60')
    expect(retryAfterValue(Number.POSITIVE_INFINITY)).toBeUndefined()
    expect(retryAfterValue(Number.NaN)).toBeUndefined()
    expect(delaySeconds(-5)).toBe(0)
  })
})
