// Timestamps and lines: every accepted form, and what is refused.
import { describe, expect, it } from 'vitest'
import { clfParser, clfTime, detectFormat, jsonParser, parseTimestamp, Simulation } from './index'

const T = Date.UTC(2000, 9, 10, 20, 55, 36)

describe('parseTimestamp', () => {
  it.each([
    ['10/Oct/2000:13:55:36 -0700', T],
    ['10/Oct/2000:21:55:36 +0100', T],
    ['10/Oct/2000:20:55:36 +0000', T],
    ['10/Oct/2000:20:55:36.250 +0000', T + 250],
    ['2000-10-10T20:55:36Z', T],
    ['2000-10-10T20:55:36.5Z', T + 500],
    ['2000-10-10T22:55:36+02:00', T],
    ['2000-10-10 20:55:36', T],
    ['2000-10-10T20:55:36,123Z', T + 123],
    [T / 1000, T],
    [T / 1000 + 0.25, T + 250],
    [T, T],
    [T * 1000, T],
    [T * 1e6, T],
    [String(T), T],
  ])('%s', (input, expected) => {
    expect(parseTimestamp(input)).toBe(expected)
  })

  it.each([
    ['yesterday'],
    ['2000-10-10'],
    ['10/Foo/2000:20:55:36 +0000'],
    ['32/Oct/2000:20:55:36 +0000'],
    [-1],
    [null],
    [Number.NaN],
    [''],
  ])('refuses %s', (input) => {
    expect(parseTimestamp(input)).toBeUndefined()
  })

  it('clfTime is the CLF form only', () => {
    expect(clfTime('2000-10-10T20:55:36Z')).toBeUndefined()
  })
})

describe('line parsers', () => {
  const combined =
    '203.0.113.9 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif?a=\\"b\\" HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)" 0.003'

  it('reads every field of a combined log line', () => {
    const get = (key: Parameters<typeof clfParser>[0]) => clfParser(key)(combined)
    expect(get('ip')).toEqual({ ok: true, timeMs: T, key: '203.0.113.9' })
    expect(get('user')).toMatchObject({ key: 'frank' })
    expect(get('method')).toMatchObject({ key: 'GET' })
    expect(get('path')).toMatchObject({ key: '/apache_pb.gif?a=\\"b\\"' })
    expect(get('status')).toMatchObject({ key: '200' })
    expect(get('referer')).toMatchObject({ key: 'http://www.example.com/start.html' })
    expect(get('agent')).toMatchObject({ key: 'Mozilla/4.08 [en] (Win98; I ;Nav)' })
    expect(get('ident')).toEqual({ ok: false, reason: 'no ident' })
    expect(clfParser('agent')('203.0.113.9 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 -')).toEqual(
      {
        ok: false,
        reason: 'no agent',
      },
    )
  })

  it('reads JSON lines by a named or dotted field, with a named time field', () => {
    const p = jsonParser('req.client', 'meta.at')
    expect(p('{"meta":{"at":"2000-10-10T20:55:36Z"},"req":{"client":42}}')).toEqual({
      ok: true,
      timeMs: T,
      key: '42',
    })
    expect(jsonParser('req.client')('{"req.client":"x","@timestamp":971211336}')).toEqual({
      ok: true,
      timeMs: T,
      key: 'x',
    })
    expect(jsonParser('ip')('{"ip":"a"}')).toEqual({
      ok: false,
      reason: 'no time field (time, timestamp, @timestamp, ts, date, datetime; or --time)',
    })
  })

  it('tells JSON lines from CLF', () => {
    expect(detectFormat('  {"a":1}')).toBe('json')
    expect(detectFormat(combined)).toBe('clf')
  })
})

describe('Simulation', () => {
  it('replays on every algorithm, keeps a bounded timeline, and refuses a bad rule', () => {
    const sim = new Simulation('3/s')
    for (let i = 0; i < 10; i++) sim.add(T + i * 10, 'a')
    // Ten days later: the timeline's intervals widen instead of growing past 4096.
    sim.add(T + 10 * 86_400_000, 'b')
    const r = sim.result()
    expect(r.algorithms['fixed-window']).toMatchObject({ admitted: 4, denied: 7 })
    expect(r.algorithms.gcra).toMatchObject({ admitted: 4, denied: 7, clientsDenied: 1 })
    expect(r.algorithms.gcra?.timeline.length).toBeLessThanOrEqual(4096)
    expect(r.binMs).toBeGreaterThan(1000)
    expect(r.algorithms.gcra?.timeline.reduce((s, p) => s + p.admitted + p.denied, 0)).toBe(11)

    const big = new Simulation('1000000/s')
    expect(big.algorithms).toHaveLength(6)
    expect(() => new Simulation('3/fortnight')).toThrow(/unknown unit/)
  })
})
