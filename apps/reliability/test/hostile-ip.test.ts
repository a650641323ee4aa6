// Hostile client addresses: spoofed X-Forwarded-For with and without trusted proxies, malformed Forwarded
// headers (fuzzed), IPv6 addresses rotated inside one /56, and a million spoofed addresses against a bounded
// memory backend, through the core HTTP layer and through the three adapters on real HTTP.
import {
  compileTrust,
  createHttpLimiter,
  embeddedIPv4,
  FastLimit,
  formatIp,
  type IPv6Address,
  type IpAddress,
  parseForwarded,
  parseIp,
  resolveClientIp,
} from '@fastlimit/core'
import fc from 'fast-check'
import { afterAll, describe, expect, it } from 'vitest'
import { fakeAdapter } from './fake-adapter'
import { formatTally, Recorder } from './helpers'
import { ADAPTERS, captureWarnings, get, rawGet, startApp, startProxy } from './http-apps'

const recorder = new Recorder('hostile-ip', 'hostile')
afterAll(() => recorder.save())

// Addresses: public ones (never in a trusted range below) and proxies (always in one).
const byte = fc.integer({ min: 0, max: 255 })
const publicV4 = fc
  .tuple(fc.integer({ min: 1, max: 223 }), byte, byte, fc.integer({ min: 1, max: 254 }))
  .filter(
    ([a, b]) =>
      a !== 10 &&
      a !== 127 &&
      !(a === 172 && b >= 16 && b < 32) &&
      !(a === 192 && b === 168) &&
      !(a === 169 && b === 254),
  )
  .map((p) => p.join('.'))
const group = fc.integer({ min: 0, max: 0xffff })
const publicV6 = fc
  .tuple(fc.integer({ min: 0x2001, max: 0x3fff }), fc.array(group, { minLength: 7, maxLength: 7 }))
  .map(([first, rest]) => [first, ...rest].map((g) => g.toString(16)).join(':'))
const publicIp = fc.oneof(publicV4, publicV6)
const proxyIp = fc.oneof(
  fc.tuple(byte, byte, byte).map(([a, b, c]) => `10.${a}.${b}.${c}`),
  fc
    .array(group, { minLength: 7, maxLength: 7 })
    .map((g) => `fd00:${g.map((x) => x.toString(16)).join(':')}`),
  fc.constant('127.0.0.1'),
)
const TRUSTED = ['10.0.0.0/8', 'fd00::/8', 'loopback']
/** What an attacker may put in front of the chain: addresses, garbage, ports, brackets, 'unknown', empties. */
const junkHop = fc.oneof(
  publicIp,
  proxyIp,
  fc.constantFrom(
    'unknown',
    '_hidden',
    '',
    ' ',
    '[::1]:80',
    '1.2.3.4:5',
    '[2001:db8::1]',
    '::ffff:1.2.3.4',
    '1.2.3',
    '01.2.3.4',
    'localhost',
    '"1.2.3.4"',
  ),
  fc.string({ maxLength: 12 }),
)

function canonical(text: string): string {
  return formatIp(parseIp(text) as IpAddress)
}

describe('X-Forwarded-For and Forwarded: core resolution (fast-check)', () => {
  it('with N trusted hops, the address N hops from the right is the client, whatever the client prepends', () => {
    let cases = 0
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.array(junkHop, { maxLength: 6 }),
        publicIp,
        fc.array(proxyIp, { minLength: 4, maxLength: 4 }),
        (hops, junk, client, proxies) => {
          cases++
          // client -> proxy 1 -> ... -> proxy N (the peer): each proxy appends the address it received from.
          const appended = proxies.slice(0, hops - 1)
          const header = [...junk, client, ...appended].join(', ')
          const ip = resolveClientIp(proxies[hops - 1], header, compileTrust(hops))
          expect(ip && formatIp(ip)).toBe(canonical(client))
        },
      ),
      { numRuns: 5000 },
    )
    recorder.add({
      class: 'X-Forwarded-For, trustProxy: N hops (fast-check)',
      cases,
      result: 'the N-th hop from the right, every time',
    })
  })

  it('with a trusted list, the first untrusted hop from the right is the client, whatever the client prepends', () => {
    let cases = 0
    const trust = compileTrust(TRUSTED)
    fc.assert(
      fc.property(
        fc.array(junkHop, { maxLength: 6 }),
        publicIp,
        fc.array(proxyIp, { minLength: 1, maxLength: 4 }),
        (junk, client, proxies) => {
          cases++
          const peer = proxies[proxies.length - 1] as string
          const header = [...junk, client, ...proxies.slice(0, -1)].join(',')
          const ip = resolveClientIp(peer, header, trust)
          expect(ip && formatIp(ip)).toBe(canonical(client))
        },
      ),
      { numRuns: 5000 },
    )
    recorder.add({
      class: "X-Forwarded-For, trustProxy: ['10.0.0.0/8', 'fd00::/8', 'loopback'] (fast-check)",
      cases,
      result: 'the first untrusted hop from the right, every time',
    })
  })

  it('without trust, no forwarding header ever changes the address: it is the peer', () => {
    let cases = 0
    fc.assert(
      fc.property(
        publicIp,
        fc.string({ maxLength: 60 }),
        fc.constantFrom('x-forwarded-for', 'forwarded') as fc.Arbitrary<'x-forwarded-for' | 'forwarded'>,
        (peer, header, kind) => {
          cases++
          const ip = resolveClientIp(peer, header, compileTrust(false), kind)
          expect(ip && formatIp(ip)).toBe(canonical(peer))
        },
      ),
      { numRuns: 3000 },
    )
    recorder.add({
      class: 'forwarding headers without trustProxy (fast-check)',
      cases,
      result: 'always the peer address',
    })
  })

  const forwardedJunk = fc.oneof(
    fc
      .array(
        fc.tuple(
          fc.constantFrom('for', 'FOR', 'by', 'proto', 'host', '', 'f or', 'for ', 'for\t'),
          fc.oneof(
            publicIp,
            publicIp.map((ip) => `"${ip.includes(':') ? `[${ip}]` : ip}:443"`),
            fc.constantFrom(
              'unknown',
              '_hidden',
              '"',
              '"unterminated',
              '\\"',
              '"a\\',
              '',
              '[::1]',
              '"[2001:db8::1]"',
              '"a,b"',
              '";"',
              '1.2.3.4;for=5.6.7.8',
            ),
          ),
          fc.constantFrom(';', ',', ', ', ' ;', '', ',,', '\t'),
        ),
        { maxLength: 4 },
      )
      .map((pairs) => pairs.map(([k, v, sep]) => `${k}=${v}${sep}`).join('')),
    fc.string({ unit: 'binary', maxLength: 40 }),
    fc.constantFrom(
      'for="',
      'for=\\',
      'for="\\',
      ',',
      ';',
      '=',
      'for',
      'for==1.2.3.4',
      'for="1.2.3.4',
      'for=1.2.3.4"',
      'for=[::1',
      'by=1.2.3.4;for',
    ),
  )

  it('fast-check: parseForwarded never throws, and whatever a client writes, the element the trusted proxy appended gives the client', () => {
    let cases = 0
    const seen: Record<string, number> = {}
    const trust = compileTrust(TRUSTED)
    fc.assert(
      fc.property(forwardedJunk, publicIp, proxyIp, (junk, client, peer) => {
        cases++
        expect(() => parseForwarded(junk)).not.toThrow()
        // The trusted proxy appends one well-formed element for the address it received from.
        const element = client.includes(':') ? `for="[${client}]:4711"` : `for=${client}`
        const header = junk === '' ? element : `${junk}, ${element}`
        const ip = resolveClientIp(peer, header, trust, 'forwarded')
        const got = ip === undefined ? 'none' : formatIp(ip)
        // Read from the right, the element the proxy appended is the client, whatever lies to its left.
        expect(got, `${JSON.stringify(header)} from ${peer}`).toBe(canonical(client))
        seen.client = (seen.client ?? 0) + 1
      }),
      { numRuns: 10_000 },
    )
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (text) => {
        cases++
        const out = parseForwarded(text)
        expect(Array.isArray(out)).toBe(true)
      }),
      { numRuns: 10_000 },
    )
    recorder.add({
      class: 'malformed Forwarded headers (fast-check)',
      cases,
      result: `never threw; resolved to ${formatTally(seen)}: the address the proxy appended, every time`,
    })
  })
})

describe('X-Forwarded-For and Forwarded through the adapters (real HTTP)', () => {
  it.each(ADAPTERS)(
    '%s: without trustProxy, spoofed forwarding headers share the peer’s limit',
    async (adapter) => {
      const limiter = new FastLimit()
      const app = await startApp(adapter, { limiter, rules: '3/h' })
      try {
        const statuses: number[] = []
        const spoofs = fc.sample(publicIp, 12)
        for (const [i, ip] of spoofs.entries()) {
          const r = await get(app, '/', {
            'x-forwarded-for': ip,
            forwarded: `for=${ip.includes(':') ? `"[${ip}]"` : ip}`,
            'x-real-ip': ip,
            'true-client-ip': ip,
            'cf-connecting-ip': ip,
            'x-client-ip': `10.0.0.${i}`,
          })
          statuses.push(r.status)
        }
        expect(statuses.filter((s) => s === 200)).toHaveLength(3)
        expect(statuses.filter((s) => s === 429)).toHaveLength(9)
        expect((await limiter.peek('127.0.0.1', '3/h')).remaining).toBe(0)
        recorder.add({
          class: `${adapter}: spoofed XFF/Forwarded/X-Real-IP/... without trustProxy`,
          cases: spoofs.length,
          result: '3 of 12 admitted: all counted as the peer 127.0.0.1',
        })
      } finally {
        await app.close()
        await limiter.close()
      }
    },
  )

  it.each(ADAPTERS)(
    '%s: with trustProxy 1 or a list, exactly the right hop is charged (random spoofed prefixes)',
    async (adapter) => {
      let cases = 0
      for (const trustProxy of [1, ['loopback', '10.0.0.0/8']] as const) {
        const limiter = new FastLimit()
        const app = await startApp(adapter, { limiter, rules: '1000/h', trustProxy })
        try {
          const samples = fc.sample(fc.tuple(fc.array(junkHop, { maxLength: 4 }), publicIp), 25)
          for (const [junk, client] of samples) {
            // Behind one proxy (the test, on loopback), which appended the client's address.
            const chain = Array.isArray(trustProxy) ? [...junk, client, '10.1.2.3'] : [...junk, client]
            const before = (await limiter.peek(keyOf(client), '1000/h')).remaining
            const r = await get(app, '/', { 'x-forwarded-for': chain.join(', ') })
            expect(r.status).toBe(200)
            expect((await limiter.peek(keyOf(client), '1000/h')).remaining, `${chain.join(', ')}`).toBe(
              (before as number) - 1,
            )
            cases++
          }
        } finally {
          await app.close()
          await limiter.close()
        }
      }
      recorder.add({
        class: `${adapter}: XFF with trustProxy 1 / ['loopback', '10.0.0.0/8'], random spoofed prefixes`,
        cases,
        result: 'the real client was charged every time',
      })
    },
  )

  it.each(ADAPTERS)(
    '%s: a forwarding header repeated on several lines is read as one list (the last line cannot be dodged)',
    async (adapter) => {
      const limiter = new FastLimit()
      const xff = await startApp(adapter, { limiter, rules: '1000/h', trustProxy: 1, scope: 'xff' })
      const fwd = await startApp(adapter, {
        limiter,
        rules: '1000/h',
        trustProxy: 1,
        proxyHeader: 'forwarded',
        scope: 'fwd',
      })
      try {
        expect(await rawGet(xff, ['X-Forwarded-For: 198.51.100.66', 'X-Forwarded-For: 203.0.113.9'])).toBe(
          200,
        )
        expect((await limiter.peek('203.0.113.9', '1000/h', { scope: 'xff' })).remaining).toBe(999)
        expect((await limiter.peek('198.51.100.66', '1000/h', { scope: 'xff' })).remaining).toBe(1000)
        expect(await rawGet(fwd, ['Forwarded: for=198.51.100.66', 'Forwarded: for=203.0.113.9'])).toBe(200)
        expect((await limiter.peek('203.0.113.9', '1000/h', { scope: 'fwd' })).remaining).toBe(999)
        expect((await limiter.peek('198.51.100.66', '1000/h', { scope: 'fwd' })).remaining).toBe(1000)
        recorder.add({
          class: `${adapter}: XFF / Forwarded on two header lines, trustProxy 1`,
          cases: 2,
          result: 'the last line (the proxy’s) was used',
        })
      } finally {
        await xff.close()
        await fwd.close()
        await limiter.close()
      }
    },
  )

  it.each(ADAPTERS)(
    '%s: malformed Forwarded headers never 500 and the client the proxy appended is charged every time',
    async (adapter) => {
      const limiter = new FastLimit()
      const app = await startApp(adapter, {
        limiter,
        rules: '1000/h',
        trustProxy: ['loopback'],
        proxyHeader: 'forwarded',
      })
      const seen: Record<string, number> = {}
      try {
        const samples = fc.sample(
          fc.tuple(
            fc.oneof(
              fc.constantFrom(
                'for="',
                'for=\\',
                'for="\\',
                ',',
                ';',
                '=',
                'for',
                'for="1.2.3.4',
                'for=1.2.3.4"',
                'for=[::1',
                'by=1.2.3.4;for',
                'for=1.1.1.1;for=2.2.2.2',
                'for=unknown',
                'for=_x',
              ),
              fc.string({ maxLength: 20 }).filter((s) => /^[\x20-\x7e]*$/.test(s)),
            ),
            publicV4,
          ),
          40,
        )
        for (const [junk, client] of samples) {
          const header = `${junk}, for=${client}`
          const beforeClient = (await limiter.peek(client, '1000/h')).remaining
          const beforePeer = (await limiter.peek('127.0.0.1', '1000/h')).remaining
          const r = await get(app, '/', { forwarded: header })
          expect(r.status, header).toBe(200)
          // What the proxy appended is read whatever the client wrote to its left.
          expect((await limiter.peek(client, '1000/h')).remaining, header).toBe((beforeClient as number) - 1)
          expect((await limiter.peek('127.0.0.1', '1000/h')).remaining, header).toBe(beforePeer)
          seen.client = (seen.client ?? 0) + 1
        }
        recorder.add({
          class: `${adapter}: malformed Forwarded headers over HTTP`,
          cases: samples.length,
          result: `no 500; charged ${formatTally(seen)}`,
        })
      } finally {
        await app.close()
        await limiter.close()
      }
    },
  )
})

/** The identity the default key gives an address: IPv4 as is (embedded in IPv6 too), other IPv6 by its /56. */
function keyOf(ip: string, subnet: number | false = 56): string {
  const parsed = parseIp(ip) as IpAddress
  if (parsed.version === 6 && embeddedIPv4(parsed.groups) >= 0) {
    return formatIp({ version: 4, value: embeddedIPv4(parsed.groups) })
  }
  if (parsed.version === 4 || subnet === false) return formatIp(parsed)
  const groups = [...parsed.groups]
  for (let i = 0; i < 8; i++) {
    const bits = subnet - i * 16
    groups[i] =
      bits >= 16
        ? (groups[i] as number)
        : bits <= 0
          ? 0
          : (groups[i] as number) & ((0xffff << (16 - bits)) & 0xffff)
  }
  return `${formatIp({ version: 6, groups })}/${subnet}`
}

describe('IPv6 rotation', () => {
  /** Random addresses inside 2001:db8:abcd:ef00::/56, written in assorted valid forms. */
  function rotated(n: number): string[] {
    return fc.sample(
      fc
        .tuple(
          fc.integer({ min: 0, max: 255 }),
          fc.array(group, { minLength: 4, maxLength: 4 }),
          fc.integer({ min: 0, max: 3 }),
        )
        .map(([low, tail, form]) => {
          const groups = [0x2001, 0xdb8, 0xabcd, 0xef00 + low, ...tail]
          const hex = groups.map((g) => g.toString(16))
          if (form === 1) return hex.map((g) => g.toUpperCase()).join(':')
          if (form === 2) return groups.map((g) => g.toString(16).padStart(4, '0')).join(':')
          if (form === 3) return `${hex.join(':')}%eth0`
          return formatIp({ version: 6, groups })
        }),
      n,
    )
  }

  it.each(ADAPTERS)(
    '%s: 40 addresses rotated inside one /56 share one limit; 20 other /56s each get their own',
    async (adapter) => {
      const limiter = new FastLimit()
      const app = await startApp(adapter, { limiter, rules: '5/h', trustProxy: ['loopback'] })
      try {
        const inside = rotated(40)
        const statuses: number[] = []
        for (const ip of inside) statuses.push((await get(app, '/', { 'x-forwarded-for': ip })).status)
        expect(statuses.filter((s) => s === 200)).toHaveLength(5)
        expect(statuses.filter((s) => s === 429)).toHaveLength(35)
        const others = Array.from(
          { length: 20 },
          (_, i) => `2001:db8:abcd:${(0xd000 + i * 0x100).toString(16)}::1`,
        )
        for (const ip of others) expect((await get(app, '/', { 'x-forwarded-for': ip })).status, ip).toBe(200)
        // IPv4-mapped IPv6 is the IPv4 client.
        for (let i = 0; i < 3; i++)
          expect((await get(app, '/', { 'x-forwarded-for': '203.0.113.5' })).status).toBe(200)
        for (let i = 0; i < 2; i++)
          expect((await get(app, '/', { 'x-forwarded-for': '::ffff:203.0.113.5' })).status).toBe(200)
        expect((await get(app, '/', { 'x-forwarded-for': '::FFFF:cb00:7105' })).status).toBe(429)
        recorder.add({
          class: `${adapter}: IPv6 rotated inside one /56 (assorted textual forms, zone ids)`,
          cases: inside.length + others.length + 6,
          result: '5 of 40 admitted inside the /56; each of 20 other /56s admitted; ::ffff:v4 = v4',
        })
      } finally {
        await app.close()
        await limiter.close()
      }
    },
  )

  it('ipv6Subnet 64 and false, and the direct (no proxy) path through the HTTP layer', async () => {
    const limiter = new FastLimit()
    const results: Record<string, number> = {}
    for (const [name, ipv6Subnet, expected] of [
      ['/56 default', 56, 5],
      ['/64', 64, 10],
      ['false', false, 40],
    ] as const) {
      // Direct: the rotating address is the connection's peer (an IPv6 client without a proxy).
      const http = createHttpLimiter(
        { limiter, rules: '5/h', ipv6Subnet, scope: `subnet-${String(ipv6Subnet)}`, headers: false },
        fakeAdapter,
      )
      let admitted = 0
      for (const [i, ip] of rotated(40).entries()) {
        // Two /64s inside the /56: 20 addresses each.
        const groups = (parseIp(ip) as IPv6Address).groups.slice()
        groups[3] = 0xef00 + (i % 2)
        const denial = await http.handle({ remote: formatIp({ version: 6, groups }), headers: {} }, {})
        if (denial === undefined) admitted++
      }
      results[name] = admitted
      expect(admitted, name).toBe(expected)
    }
    await limiter.close()
    recorder.add({
      class: 'IPv6 direct peers: ipv6Subnet 56 / 64 / false',
      cases: 120,
      result: `admitted of 40 (limit 5): ${formatTally(results)}`,
    })
  })
})

// A real reverse proxy connects to the app from 127.0.0.2; an attacker who reaches the app port directly
// connects from 127.0.0.3; clients of the proxy connect to it from 127.0.1.x. Linux routes all of
// 127.0.0.0/8 to loopback, so each is a distinct peer address the app really sees.
const PROXY_ADDRESS = '127.0.0.2'
const ATTACKER = '127.0.0.3'
const clientAddress = (i: number) => `127.0.1.${i + 1}`
const RECOMMENDED = { hops: 1, from: [PROXY_ADDRESS] }

describe('proxy trust that a direct client cannot spoof (a real proxy in front, the app port reachable too)', () => {
  it.each(ADAPTERS)(
    '%s: rotating X-Forwarded-For straight to the app gets the limit, not one budget per request',
    async (adapter) => {
      const admitted: Record<string, number> = {}
      for (const [name, trustProxy] of [
        ['trustProxy: 1 (believes any peer; warned)', 1],
        ["trustProxy: { hops: 1, from: ['127.0.0.2'] }", RECOMMENDED],
      ] as const) {
        const warnings = captureWarnings()
        const limiter = new FastLimit()
        const app = await startApp(adapter, { limiter, rules: '5/h', trustProxy })
        const proxy = await startProxy(app, { from: PROXY_ADDRESS })
        try {
          let ok = 0
          const spoofs = fc.sample(publicV4, { numRuns: 1000, seed: 12 })
          for (const ip of spoofs) {
            const r = await get(app, '/', { 'x-forwarded-for': ip }, { from: ATTACKER })
            if (r.status === 200) ok++
          }
          admitted[name] = ok
          // Clients of the proxy are still told apart, each with its own budget.
          for (let i = 0; i < 20; i++) {
            const r = await get(proxy, '/', {}, { from: clientAddress(i) })
            expect(r.status, `client ${clientAddress(i)} through the proxy`).toBe(200)
          }
          expect((await limiter.peek(clientAddress(0), '5/h')).remaining).toBe(4)
          if (typeof trustProxy === 'number') {
            expect(ok).toBe(1000)
            const warned = warnings.messages.filter((m) => m.includes('trustProxy'))
            expect(warned, warnings.messages.join('\n')).toHaveLength(1)
            expect(warned[0]).toMatch(/^\[fastlimit\] \[[a-z]+\] trustProxy: 1 believes/)
            expect(warned[0]).toContain('trustProxy: { hops: 1, from: [')
          } else {
            expect(ok).toBe(5)
            expect(warnings.messages.filter((m) => m.includes('trustProxy: 1'))).toEqual([])
          }
        } finally {
          warnings.stop()
          await proxy.close()
          await app.close()
          await limiter.close()
        }
      }
      recorder.add({
        class: `${adapter}: 1000 requests straight to the app, X-Forwarded-For rotated, limit 5`,
        cases: 2000,
        result: `admitted: ${formatTally(admitted)}`,
      })
    },
  )

  it.each(ADAPTERS)(
    '%s: X-Forwarded-For: 127.0.0.1 sent straight to the app does not pass an allow list',
    async (adapter) => {
      const admitted: Record<string, number> = {}
      for (const [name, trustProxy, expected] of [
        ['trustProxy: 1', 1, 100],
        ['trustProxy: { hops: 1, from: [proxy] }', RECOMMENDED, 5],
      ] as const) {
        const warnings = captureWarnings()
        const limiter = new FastLimit()
        const app = await startApp(adapter, {
          limiter,
          rules: '5/h',
          trustProxy,
          allowList: ['127.0.0.1'],
        })
        const proxy = await startProxy(app, { from: PROXY_ADDRESS })
        try {
          let ok = 0
          for (let i = 0; i < 100; i++) {
            const r = await get(app, '/', { 'x-forwarded-for': '127.0.0.1' }, { from: ATTACKER })
            if (r.status === 200) ok++
          }
          admitted[name] = ok
          expect(ok, name).toBe(expected)
          // The allow-listed host, through the proxy, is never limited.
          for (let i = 0; i < 10; i++) {
            expect((await get(proxy, '/', {}, { from: '127.0.0.1' })).status).toBe(200)
          }
        } finally {
          warnings.stop()
          await proxy.close()
          await app.close()
          await limiter.close()
        }
      }
      recorder.add({
        class: `${adapter}: allowList ['127.0.0.1'], 100 direct requests with X-Forwarded-For: 127.0.0.1, limit 5`,
        cases: 200,
        result: `admitted: ${formatTally(admitted)}`,
      })
    },
  )

  it.each(ADAPTERS)(
    '%s: behind a proxy that is not trusted, 100 clients share one budget and the app says so once, with the fix',
    async (adapter) => {
      const admitted: Record<string, number> = {}
      for (const [name, trustProxy] of [
        ['trustProxy off', false],
        ['the fix the warning gives', RECOMMENDED],
      ] as const) {
        const warnings = captureWarnings()
        const limiter = new FastLimit()
        const app = await startApp(adapter, { limiter, rules: '5/h', trustProxy })
        const proxy = await startProxy(app, { from: PROXY_ADDRESS })
        try {
          let ok = 0
          for (let i = 0; i < 100; i++) {
            if ((await get(proxy, '/', {}, { from: clientAddress(i) })).status === 200) ok++
          }
          admitted[name] = ok
          if (trustProxy === false) {
            expect(ok).toBe(5)
            expect(warnings.messages, warnings.messages.join('\n')).toHaveLength(1)
            expect(warnings.messages[0]).toMatch(
              /^\[fastlimit\] \[[a-z]+\] Requests from 127\.0\.0\.2 carry X-Forwarded-For/,
            )
            expect(warnings.messages[0]).toContain("trustProxy: { hops: 1, from: ['127.0.0.2'] }")
          } else {
            expect(ok).toBe(100)
            expect(warnings.messages).toEqual([])
          }
        } finally {
          warnings.stop()
          await proxy.close()
          await app.close()
          await limiter.close()
        }
      }
      recorder.add({
        class: `${adapter}: 100 clients behind an untrusted proxy (127.0.0.2), one request each, limit 5`,
        cases: 200,
        result: `admitted: ${formatTally(admitted)}; trust off: warned once, naming the fix`,
      })
    },
  )
})

describe('IPv6 addresses that embed an IPv4 address', () => {
  const v4 = (i: number) => `198.51.${100 + (i >> 8)}.${i & 255}`
  const FORMS: readonly [string, (ip: string) => string][] = [
    ['NAT64 64:ff9b::a.b.c.d', (ip) => `64:ff9b::${ip}`],
    ['IPv4-compatible ::a.b.c.d', (ip) => `::${ip}`],
    ['IPv4-translated ::ffff:0:a.b.c.d', (ip) => `::ffff:0:${ip}`],
  ]

  it.each(ADAPTERS)(
    '%s: 100 clients behind a NAT64 (or the older embeddings) each get their own limit, shared with their IPv4',
    async (adapter) => {
      const admitted: Record<string, number> = {}
      for (const [name, form] of FORMS) {
        const limiter = new FastLimit()
        const app = await startApp(adapter, { limiter, rules: '5/h', trustProxy: ['loopback'] })
        try {
          let ok = 0
          for (let i = 0; i < 100; i++) {
            if ((await get(app, '/', { 'x-forwarded-for': form(v4(i)) })).status === 200) ok++
          }
          admitted[name] = ok
          expect(ok, name).toBe(100)
          // The same client over native IPv4 shares the budget it used through the translator.
          for (let i = 0; i < 4; i++) {
            expect((await get(app, '/', { 'x-forwarded-for': v4(7) })).status).toBe(200)
          }
          expect((await get(app, '/', { 'x-forwarded-for': v4(7) })).status).toBe(429)
        } finally {
          await app.close()
          await limiter.close()
        }
      }
      recorder.add({
        class: `${adapter}: 100 IPv4 clients seen through an IPv6 embedding, limit 5 each`,
        cases: 300,
        result: `admitted of 100: ${formatTally(admitted)}; each shares its budget with its native IPv4`,
      })
    },
  )
})

describe('Forwarded: the last elements are read whatever the client wrote to their left', () => {
  it.each(ADAPTERS)(
    '%s: 100 clients sending an unterminated quote through the proxy are each keyed as themselves',
    async (adapter) => {
      const limiter = new FastLimit()
      const app = await startApp(adapter, {
        limiter,
        rules: '5/h',
        trustProxy: [PROXY_ADDRESS],
        proxyHeader: 'forwarded',
      })
      const proxy = await startProxy(app, { from: PROXY_ADDRESS, header: 'forwarded' })
      try {
        let ok = 0
        for (let i = 0; i < 100; i++) {
          const junk = ['for="unterminated', 'for="1.2.3.4', 'for=\\', 'proto=https;for', '"'][
            i % 5
          ] as string
          if ((await get(proxy, '/', { forwarded: junk }, { from: clientAddress(i) })).status === 200) ok++
        }
        expect(ok).toBe(100)
        // Requests through the proxy without a Forwarded header of their own are not refused either.
        let plain = 0
        for (let i = 100; i < 110; i++) {
          if ((await get(proxy, '/', {}, { from: clientAddress(i) })).status === 200) plain++
        }
        expect(plain).toBe(10)
        expect((await limiter.peek(PROXY_ADDRESS, '5/h')).remaining).toBe(5)
        recorder.add({
          class: `${adapter}: Forwarded with an unterminated quote from 100 clients, through a real proxy, limit 5`,
          cases: 110,
          result: `${ok} of 100 admitted, each keyed as itself; then ${plain} of 10 header-less requests`,
        })
      } finally {
        await proxy.close()
        await app.close()
        await limiter.close()
      }
    },
  )
})
