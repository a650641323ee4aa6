import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ConfigError } from '../errors'
import {
  cidrContains,
  compileTrust,
  createIpMatcher,
  embeddedIPv4,
  formatIPv6,
  formatIp,
  type IpAddress,
  ipKey,
  isLocalAddress,
  parseCidr,
  parseForwarded,
  parseHop,
  parseIp,
  resolveClientIp,
} from './ip'

const text = (ip: IpAddress | undefined) => (ip === undefined ? undefined : formatIp(ip))

describe('parseIp and formatIp', () => {
  it.each([
    ['1.2.3.4', '1.2.3.4'],
    ['0.0.0.0', '0.0.0.0'],
    ['255.255.255.255', '255.255.255.255'],
    ['::ffff:1.2.3.4', '1.2.3.4'],
    ['::FFFF:1.2.3.4', '1.2.3.4'],
    ['::ffff:0102:0304', '1.2.3.4'],
    ['0:0:0:0:0:ffff:7f00:1', '127.0.0.1'],
    ['2001:db8::1', '2001:db8::1'],
    ['2001:DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['fe80::1%eth0', 'fe80::1'],
    ['fe80::1%25', 'fe80::1'],
    ['::', '::'],
    ['::1', '::1'],
    ['1::', '1::'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
    ['::2:3:4:5:6:7:8', '0:2:3:4:5:6:7:8'],
    ['1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5:6:102:304'],
    ['::1.2.3.4', '::102:304'],
    ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
  ])('%s -> %s', (input, expected) => {
    expect(text(parseIp(input))).toBe(expected)
  })

  it.each([
    '',
    ' 1.2.3.4',
    '1.2.3',
    '1.2.3.4.5',
    '01.2.3.4',
    '1.2.3.04',
    '256.1.1.1',
    '1.2.3.-1',
    '1..2.3',
    '1.2.3.4/32',
    '1.2.3.4:80',
    '[::1]',
    ':::',
    '1::2::3',
    '12345::',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7:8::',
    '::1:2:3:4:5:6:7:8',
    'g::1',
    ':1::',
    '1:',
    'fe80::1%',
    '1:2:3:4:5:6:7:1.2.3.4',
    '::1.2.3',
    'localhost',
    'unknown',
  ])('rejects %j', (input) => {
    expect(parseIp(input)).toBeUndefined()
  })

  it('formats IPv6 as RFC 5952 §4 says', () => {
    const cases: [string, string][] = [
      ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'], // §4.1 leading zeros, §4.2.1 longest
      ['2001:db8:0:0:0:0:2:1', '2001:db8::2:1'],
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // §4.2.2 one zero group stays
      ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], // §4.2.3 the longest run
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // §4.2.3 the first of equal runs
      ['2001:DB8::AB', '2001:db8::ab'], // §4.3 lower case
    ]
    for (const [input, expected] of cases) expect(text(parseIp(input))).toBe(expected)
  })

  it('round-trips any 8 groups through formatIPv6 and parseIp', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }), (groups) => {
        const parsed = parseIp(formatIPv6(groups))
        expect(parsed).toBeDefined()
        if (parsed?.version === 6) expect(parsed.groups).toEqual(groups)
        else expect(groups.slice(0, 6)).toEqual([0, 0, 0, 0, 0, 0xffff]) // IPv4-mapped
      }),
      { numRuns: 2000 },
    )
  })

  it('never throws, whatever the input', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.stringMatching(/^[0-9a-fA-F:.%]{0,50}$/)), (s) => {
        const ip = parseIp(s)
        if (ip !== undefined) expect(parseIp(formatIp(ip))).toEqual(ip)
      }),
      { numRuns: 5000 },
    )
  })
})

describe('ipKey', () => {
  it.each([
    ['203.0.113.7', 56, '203.0.113.7'],
    ['::ffff:203.0.113.7', 56, '203.0.113.7'],
    ['2001:db8:0:ab12:1:2:3:4', 56, '2001:db8:0:ab00::/56'],
    ['2001:db8:0:abff:ffff::', 56, '2001:db8:0:ab00::/56'],
    ['2001:db8:0:ab12:1:2:3:4', 64, '2001:db8:0:ab12::/64'],
    ['2001:db8:1234:ab12::1', 48, '2001:db8:1234::/48'],
    ['2001:db8:0:ab12:1:2:3:4', 60, '2001:db8:0:ab10::/60'],
    ['2001:db8:0:ab12:1:2:3:4', 1, '::/1'],
    ['ffff::1', 1, '8000::/1'],
    ['2001:db8:0:ab12:1:2:3:4', 128, '2001:db8:0:ab12:1:2:3:4'],
    ['2001:db8:0:ab12:1:2:3:4', false, '2001:db8:0:ab12:1:2:3:4'],
    ['2001:db8::1', 127, '2001:db8::/127'],
    // IPv6 that stands for an IPv4 client is keyed as that client, whatever the subnet.
    ['64:ff9b::203.0.113.7', 56, '203.0.113.7'],
    ['64:ff9b::cb00:7107', false, '203.0.113.7'],
    ['::203.0.113.7', 56, '203.0.113.7'],
    ['::ffff:0:203.0.113.7', 56, '203.0.113.7'],
    ['2002:cb00:7107:ab12::1', 56, '203.0.113.7'], // 6to4: the site's router
    ['2001:0:4136:e378:8000:63bf:34ff:8ef8', 56, '203.0.113.7'], // Teredo: the client, inverted
    // Not embeddings: loopback, unspecified, ::/104, other prefixes.
    ['::1', 56, '::/56'],
    ['::1', false, '::1'],
    ['::ffff', false, '::ffff'],
    ['::ff:ffff', false, '::ff:ffff'],
    ['64:ff9b:1::203.0.113.7', 56, '64:ff9b:1::/56'],
    ['64:ff9b::1:203.0.113.7', 56, '64:ff9b::/56'],
    ['2001:db8::203.0.113.7', 56, '2001:db8::/56'],
  ] as const)('%s /%s -> %s', (input, subnet, expected) => {
    expect(ipKey(parseIp(input) as IpAddress, subnet)).toBe(expected)
  })

  it('reads the embedded IPv4 of each form, and nothing else', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0x1000000, max: 0xffffffff }), (v4) => {
        const hi = v4 >>> 16
        const lo = v4 & 0xffff
        expect(embeddedIPv4([0x64, 0xff9b, 0, 0, 0, 0, hi, lo])).toBe(v4)
        expect(embeddedIPv4([0, 0, 0, 0, 0, 0, hi, lo])).toBe(v4)
        expect(embeddedIPv4([0, 0, 0, 0, 0xffff, 0, hi, lo])).toBe(v4)
        expect(embeddedIPv4([0x2002, hi, lo, 7, 0, 0, 0, 1])).toBe(v4)
        expect(embeddedIPv4([0x2001, 0, 1, 2, 0, 0, hi ^ 0xffff, lo ^ 0xffff])).toBe(v4)
        expect(embeddedIPv4([0x2001, 0xdb8, 0, 0, 0, 0, hi, lo])).toBe(-1)
        expect(embeddedIPv4([0x64, 0xff9b, 0, 0, 1, 0, hi, lo])).toBe(-1)
      }),
      { numRuns: 500 },
    )
  })

  it('gives every address of a /56 the same key and the next /56 another', () => {
    const a = ipKey(parseIp('2001:db8:0:ab00::1') as IpAddress)
    expect(ipKey(parseIp('2001:db8:0:abff:ffff:ffff:ffff:ffff') as IpAddress)).toBe(a)
    expect(ipKey(parseIp('2001:db8:0:ac00::1') as IpAddress)).not.toBe(a)
  })
})

describe('CIDR', () => {
  it.each([
    ['10.0.0.0/8', '10.255.1.2', true],
    ['10.0.0.0/8', '11.0.0.0', false],
    ['10.1.2.3/8', '10.9.9.9', true], // host bits cleared
    ['172.16.0.0/12', '172.31.255.255', true],
    ['172.16.0.0/12', '172.32.0.0', false],
    ['192.168.1.7', '192.168.1.7', true],
    ['192.168.1.7', '192.168.1.8', false],
    ['0.0.0.0/0', '8.8.8.8', true],
    ['0.0.0.0/0', '::1', false],
    ['::/0', '2001:db8::1', true],
    ['::/0', '1.2.3.4', false],
    ['2001:db8::/32', '2001:db8:ffff::1', true],
    ['2001:db8::/32', '2001:db9::1', false],
    ['2001:db8:0:ab00::/56', '2001:db8:0:abcd::1', true],
    ['2001:db8:0:ab00::/56', '2001:db8:0:ac00::1', false],
    ['fe80::/10', 'febf::1', true],
    ['fe80::/10', 'fec0::1', false],
    ['::1', '::1', true],
    ['::ffff:10.0.0.0/104', '10.1.1.1', true],
    ['::ffff:10.0.0.0/104', '::ffff:10.1.1.1', true],
  ] as const)('%s contains %s: %s', (cidr, ip, expected) => {
    expect(
      cidrContains(parseCidr(cidr) as NonNullable<ReturnType<typeof parseCidr>>, parseIp(ip) as IpAddress),
    ).toBe(expected)
  })

  it.each([
    '10.0.0.0/33',
    '::/129',
    '10.0.0.0/',
    '10.0.0.0/08',
    '10.0.0/8',
    'fe80::1%eth0/64',
    '::ffff:1.2.3.4/95',
    'x',
  ])('rejects %j', (cidr) => {
    expect(parseCidr(cidr)).toBeUndefined()
  })

  it('compiles lists with range names and rejects anything else with a ConfigError', () => {
    const m = createIpMatcher(['loopback', 'private', '203.0.113.0/24'])
    for (const a of ['127.0.0.1', '::1', '10.1.1.1', '192.168.0.1', 'fd00::1', '203.0.113.9'])
      expect(m(parseIp(a) as IpAddress)).toBe(true)
    for (const a of ['8.8.8.8', '2001:db8::1', '203.0.114.1', '169.254.1.1'])
      expect(m(parseIp(a) as IpAddress)).toBe(false)
    expect(createIpMatcher(['linklocal'])(parseIp('fe80::1') as IpAddress)).toBe(true)
    expect(() => createIpMatcher(['10.0.0.0/8', 'example.com'], 'allowList', 'express')).toThrow(
      /\[fastlimit\] \[express\] allowList has "example.com"/,
    )
    expect(() => createIpMatcher(['constructor'])).toThrow(ConfigError)
    expect(() => createIpMatcher('10.0.0.0/8' as unknown as string[])).toThrow(ConfigError)
  })
})

describe('parseHop', () => {
  it.each([
    ['203.0.113.7', '203.0.113.7'],
    ['  203.0.113.7\t', '203.0.113.7'],
    ['203.0.113.7:4711', '203.0.113.7'],
    ['2001:db8::1', '2001:db8::1'],
    ['[2001:db8::1]', '2001:db8::1'],
    ['[2001:db8::1]:4711', '2001:db8::1'],
    ['::ffff:203.0.113.7', '203.0.113.7'],
    ['unknown', undefined],
    ['_hidden', undefined],
    ['', undefined],
    ['203.0.113.7:', undefined],
    ['203.0.113.7:123456', undefined],
    ['203.0.113.7:http', undefined],
    ['[2001:db8::1', undefined],
    ['[2001:db8::1]x', undefined],
    ['[2001:db8::1]:', undefined],
    ['2001:db8::1:80x', undefined],
  ])('%j -> %s', (input, expected) => {
    expect(text(parseHop(input))).toBe(expected)
  })
})

describe('isLocalAddress', () => {
  it.each([
    ['127.0.0.1', true],
    ['10.255.0.1', true],
    ['172.16.0.1', true],
    ['172.31.255.255', true],
    ['172.32.0.1', false],
    ['192.168.1.1', true],
    ['169.254.1.1', true],
    ['100.64.0.1', true],
    ['100.127.255.255', true],
    ['100.128.0.1', false],
    ['203.0.113.7', false],
    ['::1', true],
    ['fd12::1', true],
    ['fe80::1', true],
    ['2001:db8::1', false],
    ['::', false],
  ] as const)('%s -> %s', (ip, expected) => {
    expect(isLocalAddress(parseIp(ip) as IpAddress)).toBe(expected)
  })
})

describe('parseForwarded (RFC 7239)', () => {
  it.each([
    ['for=192.0.2.60;proto=http;by=203.0.113.43', ['192.0.2.60']],
    ['for="_gazonk"', ['_gazonk']],
    ['For="[2001:db8:cafe::17]:4711"', ['[2001:db8:cafe::17]:4711']],
    ['for=192.0.2.43, for=198.51.100.17', ['192.0.2.43', '198.51.100.17']],
    [
      'for=192.0.2.43,for="[2001:db8:cafe::17]",for=unknown',
      ['192.0.2.43', '[2001:db8:cafe::17]', 'unknown'],
    ],
    ['proto=https;by=1.2.3.4', [null]],
    ['for=1.1.1.1;for=2.2.2.2', [null]],
    ['for=1.1.1.1, , ,for=2.2.2.2', ['1.1.1.1', '2.2.2.2']],
    ['for="a, for=6.6.6.6", for=5.6.7.8', ['a, for=6.6.6.6', '5.6.7.8']],
    ['for="es\\"caped", for=5.6.7.8', ['es"caped', '5.6.7.8']],
    ['for=1.1.1.1 ; proto=http', ['1.1.1.1']],
    ['', []],
    [' , ', []],
    ['for=1.1.1.1;;proto=http;', ['1.1.1.1']],
    ['for="\\\\", for="a\\\\\\"b"', ['\\', 'a\\"b']],
  ] as const)('%j', (input, expected) => {
    expect(parseForwarded(input)).toEqual(expected)
  })

  it.each([
    'for=1.1.1.1 for=2.2.2.2',
    'for',
    'for=',
    '=1.1.1.1',
    'for=1.1.1.1;x="a\\',
    'for = 1.1.1.1',
    'for=a"b',
    '"',
    'for="a\\\\"b"',
    'for="a\u0001"',
  ])('treats malformed %j as one unusable hop', (input) => {
    expect(parseForwarded(input)).toEqual([null])
  })

  it.each([
    ['for="x, for=9.9.9.9, for=5.6.7.8', [null, '9.9.9.9', '5.6.7.8']],
    ['for="unterminated, for=198.51.100.7', [null, '198.51.100.7']],
    ['for=\\, for="[2001:db8::1]:80"', [null, '[2001:db8::1]:80']],
    ['"a,b", , for=1.1.1.1;proto=https', [null, '1.1.1.1']],
    ['for=1.1.1.1 for=2.2.2.2, for=3.3.3.3', [null, '3.3.3.3']],
  ] as const)('reads the well-formed elements right of malformed syntax: %j', (input, expected) => {
    expect(parseForwarded(input)).toEqual(expected)
  })

  /** One well-formed element, and what its `for=` is. */
  const elementArb = fc
    .tuple(
      fc.array(
        fc.tuple(
          fc.constantFrom('for', 'For', 'FOR', 'by', 'proto', 'host', 'x-y'),
          fc.oneof(
            fc.stringMatching(/^[A-Za-z0-9.:_[\]-]{1,12}$/),
            fc.string({ maxLength: 12 }).filter((t) => !/[\u0000-\u0008\u000a-\u001f\u007f]/.test(t)),
          ),
          fc.boolean(),
        ),
        { minLength: 1, maxLength: 3 },
      ),
      fc.constantFrom(';', ' ; ', ';;'),
    )
    .map(([pairs, sep]) => {
      let value: string | null | undefined
      const text = pairs
        .map(([name, v, quote]) => {
          if (name.toLowerCase() === 'for') value = value === undefined ? v : null
          const token = /^[A-Za-z0-9.:_[\]-]+$/.test(v)
          return `${name}=${token && !quote ? v : `"${v.replace(/[\\"]/g, (c) => `\\${c}`)}"`}`
        })
        .join(sep)
      return { text, value: value ?? null }
    })

  it('fast-check: reads any well-formed header exactly, and its last elements whatever lies left of them', () => {
    fc.assert(
      fc.property(
        fc.array(elementArb, { minLength: 1, maxLength: 4 }),
        fc.string({ maxLength: 30 }),
        fc.constantFrom(', ', ',', ' , ', ',,'),
        (elements, junk, comma) => {
          const tail = elements.map((e) => e.text).join(comma)
          const values = elements.map((e) => e.value)
          expect(parseForwarded(tail)).toEqual(values)
          const read = parseForwarded(`${junk}, ${tail}`)
          expect(read.slice(-values.length)).toEqual(values)
        },
      ),
      { numRuns: 5000 },
    )
  })
})

describe('resolveClientIp', () => {
  const loopback = compileTrust(['loopback'])
  const resolve = (
    remote: string | undefined,
    header: string | undefined,
    trust: Parameters<typeof compileTrust>[0],
    kind: 'x-forwarded-for' | 'forwarded' = 'x-forwarded-for',
  ) => text(resolveClientIp(remote, header, compileTrust(trust), kind))

  it('ignores forwarding headers unless a proxy is trusted', () => {
    expect(resolve('203.0.113.7', '6.6.6.6', false)).toBe('203.0.113.7')
    expect(resolve('::ffff:203.0.113.7', '6.6.6.6', 0)).toBe('203.0.113.7')
    expect(resolve('203.0.113.7', '6.6.6.6', ['10.0.0.0/8'])).toBe('203.0.113.7')
  })

  it('walks right to left through a number of hops', () => {
    expect(resolve('10.0.0.1', '6.6.6.6, 198.51.100.9', 1)).toBe('198.51.100.9')
    expect(resolve('10.0.0.1', '6.6.6.6, 198.51.100.9, 10.0.0.2', 2)).toBe('198.51.100.9')
    expect(resolve('10.0.0.1', '198.51.100.9', 3)).toBe('198.51.100.9') // fewer hops than trusted
    expect(resolve('10.0.0.1', undefined, 1)).toBe('10.0.0.1')
    expect(resolve('10.0.0.1', '', 1)).toBe('10.0.0.1')
  })

  it('believes hops only from the addresses given with them', () => {
    const lb = { hops: 1, from: ['10.0.0.0/8'] }
    expect(resolve('10.0.0.1', '6.6.6.6, 198.51.100.9', lb)).toBe('198.51.100.9')
    // A client that reaches the app directly is its own address, whatever it sends.
    expect(resolve('203.0.113.5', '127.0.0.1', lb)).toBe('203.0.113.5')
    // A client inside the trusted range is not skipped past: one hop is one hop.
    expect(resolve('10.0.0.1', '6.6.6.6, 10.9.9.9', lb)).toBe('10.9.9.9')
    expect(resolve('10.0.0.1', '6.6.6.6, 10.9.9.9', ['10.0.0.0/8'])).toBe('6.6.6.6')
    // Two hops: the second proxy must be in from too, else it is the client.
    const two = { hops: 2, from: ['10.0.0.0/8', '192.0.2.0/24'] }
    expect(resolve('10.0.0.1', '6.6.6.6, 198.51.100.9, 192.0.2.4', two)).toBe('198.51.100.9')
    expect(resolve('10.0.0.1', '6.6.6.6, 198.51.100.9, 203.0.113.4', two)).toBe('203.0.113.4')
    expect(resolve('10.0.0.1', '198.51.100.9', two)).toBe('198.51.100.9')
    // from: 'any' with hops: the old number, said on purpose.
    expect(resolve('203.0.113.5', '6.6.6.6, 198.51.100.9', { hops: 1, from: 'any' })).toBe('198.51.100.9')
    // from without hops: a list.
    expect(resolve('10.0.0.1', '6.6.6.6, 198.51.100.9, 10.2.2.2', { from: ['10.0.0.0/8'] })).toBe(
      '198.51.100.9',
    )
    expect(resolve('10.0.0.1', '6.6.6.6, 198.51.100.9', { hops: 1, from: 'private' } as never)).toBe(
      '198.51.100.9',
    )
  })

  it('walks right to left through trusted addresses', () => {
    expect(resolve('127.0.0.1', '6.6.6.6, 2001:db8::5, 127.0.0.2', ['loopback'])).toBe('2001:db8::5')
    expect(resolve('10.1.1.1', '6.6.6.6, 198.51.100.9, 10.2.2.2', ['10.0.0.0/8'])).toBe('198.51.100.9')
    expect(resolve('10.1.1.1', '10.3.3.3, 10.2.2.2', ['10.0.0.0/8'])).toBe('10.3.3.3') // all trusted
    expect(resolve('10.1.1.1', '6.6.6.6,,198.51.100.9', ['10.0.0.0/8'])).toBe('198.51.100.9')
  })

  it('stops at the last trusted address on a malformed, unknown or obfuscated hop', () => {
    expect(resolve('127.0.0.1', '6.6.6.6, garbage, 127.0.0.2', ['loopback'])).toBe('127.0.0.2')
    expect(resolve('127.0.0.1', '6.6.6.6, garbage', 1)).toBe('127.0.0.1')
    expect(resolve('127.0.0.1', 'for=6.6.6.6, for=unknown', ['loopback'], 'forwarded')).toBe('127.0.0.1')
    expect(resolve('127.0.0.1', 'for=6.6.6.6, for=_hidden', ['loopback'], 'forwarded')).toBe('127.0.0.1')
    expect(resolve('127.0.0.1', 'for=6.6.6.6, proto=http', ['loopback'], 'forwarded')).toBe('127.0.0.1')
    // Malformed syntax left of what the proxy appended does not matter: its element is read.
    expect(resolve('127.0.0.1', 'for="6.6.6.6, for=5.6.7.8', ['loopback'], 'forwarded')).toBe('5.6.7.8')
    expect(resolve('127.0.0.1', 'for="6.6.6.6, for=127.0.0.5', ['loopback'], 'forwarded')).toBe('127.0.0.5')
  })

  it('reads RFC 7239 Forwarded with quotes and ports', () => {
    expect(
      resolve(
        '127.0.0.1',
        'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https',
        ['loopback'],
        'forwarded',
      ),
    ).toBe('2001:db8:cafe::17')
    expect(resolve('127.0.0.1', 'for="198.51.100.9:1234"', 1, 'forwarded')).toBe('198.51.100.9')
    // An X-Forwarded-For value is not valid Forwarded syntax: nothing is believed.
    expect(resolve('127.0.0.1', '198.51.100.9', 1, 'forwarded')).toBe('127.0.0.1')
  })

  it('trusts a peer without an address (a Unix socket) as a local proxy', () => {
    expect(resolve(undefined, '198.51.100.9', 1)).toBe('198.51.100.9')
    expect(resolve(undefined, '6.6.6.6, 198.51.100.9', ['10.0.0.0/8'])).toBe('198.51.100.9')
    expect(resolve(undefined, undefined, 1)).toBeUndefined()
    expect(resolve(undefined, '198.51.100.9', false)).toBeUndefined()
    expect(resolve('not-an-ip', '198.51.100.9', 1)).toBeUndefined()
    expect(resolve('', '198.51.100.9', 1)).toBeUndefined()
  })

  const hopArb = fc.oneof(
    fc.ipV4(),
    fc.ipV6(),
    fc.constantFrom('127.0.0.1', '10.0.0.1', '::1', 'unknown', '', ' ', 'garbage', '[::1]:80', '1.2.3.4:80'),
    fc.string({ maxLength: 12 }),
  )
  const trustArb = fc.oneof(
    fc.integer({ min: 0, max: 5 }),
    fc.constant(['loopback']),
    fc.constant(['10.0.0.0/8', '::1']),
    fc.constant(['0.0.0.0/0']),
    fc.record({ hops: fc.integer({ min: 1, max: 4 }), from: fc.constant(['loopback', '10.0.0.0/8']) }),
  )

  it('never throws and never returns a hop that is not behind trusted hops only (XFF fuzz)', () => {
    fc.assert(
      fc.property(hopArb, fc.array(hopArb, { maxLength: 8 }), trustArb, (peer, hops, setting) => {
        const trust = compileTrust(setting)
        const header = hops.join(',')
        const got = resolveClientIp(peer, header, trust, 'x-forwarded-for')
        if (got === undefined) return
        // The chain as the app sees it: the peer, then the header's entries from the right.
        const chain = [
          peer,
          ...header
            .split(',')
            .filter((h) => h.trim() !== '')
            .reverse(),
        ].map((h) => parseHop(h))
        const isTrusted = (i: number) => {
          const ip = chain[i]
          if (ip === undefined) return false
          return i < trust.hops && (trust.match === undefined || trust.match(ip))
        }
        let ok = false
        for (let i = 0; i < chain.length && !ok; i++) {
          const hop = chain[i]
          if (hop !== undefined && formatIp(hop) === formatIp(got)) {
            let allTrusted = true
            for (let j = 0; j < i; j++) if (!isTrusted(j)) allTrusted = false
            ok = allTrusted
          }
          if (hop === undefined) break
        }
        expect(ok).toBe(true)
      }),
      { numRuns: 3000 },
    )
  })

  it('never lets anything left of the trusted proxy through (Forwarded and XFF fuzz)', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ maxLength: 40 }), fc.stringMatching(/^[a-z=";,\\ [\]:0-9.]{0,40}$/)),
        fc.constantFrom<'forwarded' | 'x-forwarded-for'>('forwarded', 'x-forwarded-for'),
        (spoof, kind) => {
          // The client sends `spoof`; the one trusted proxy (127.0.0.1) appends the client's real address.
          const header = kind === 'forwarded' ? `${spoof}, for=198.51.100.9` : `${spoof}, 198.51.100.9`
          expect(text(resolveClientIp('127.0.0.1', header, loopback, kind))).toBe('198.51.100.9')
          expect(text(resolveClientIp('127.0.0.1', header, compileTrust(1), kind))).toBe('198.51.100.9')
          const recommended = compileTrust({ hops: 1, from: ['loopback'] })
          expect(text(resolveClientIp('127.0.0.1', header, recommended, kind))).toBe('198.51.100.9')
        },
      ),
      { numRuns: 5000 },
    )
  })

  it('says which settings believe any peer without saying so', () => {
    expect(compileTrust(1).anyPeer).toBe(true)
    expect(compileTrust(['0.0.0.0/0']).anyPeer).toBe(true)
    expect(compileTrust({ hops: 1, from: ['10.0.0.0/8', '::/0'] }).anyPeer).toBe(true)
    expect(compileTrust({ hops: 1, from: 'any' }).anyPeer).toBe(false)
    expect(compileTrust({ hops: 1, from: ['private'] }).anyPeer).toBe(false)
    expect(compileTrust(['loopback']).anyPeer).toBe(false)
    expect(compileTrust(false).anyPeer).toBe(false)
  })

  it('rejects bad trustProxy settings with a ConfigError', () => {
    for (const bad of [
      -1,
      1.5,
      101,
      'yes',
      { hops: 1 },
      { hops: 0, from: ['loopback'] },
      { hops: 1.5, from: ['loopback'] },
      { from: 'any' },
      { hops: 1, from: ['nope'] },
      { hops: 1, from: 42 },
      { hops: 1, from: [], extra: 1 },
      new Map(),
      [42],
      ['10.0.0.0/33'],
      true,
    ]) {
      expect(() => compileTrust(bad, 'koa')).toThrow(ConfigError)
    }
    expect(() => compileTrust({ hops: 1 }, 'koa')).toThrow(/needs from/)
    expect(() => compileTrust({ from: 'any' }, 'koa')).toThrow(/needs hops/)
    expect(() => compileTrust(-1, 'koa')).toThrow(/^\[fastlimit\] \[koa\] trustProxy/)
    expect(compileTrust('loopback').match?.(parseIp('::1') as IpAddress)).toBe(true)
  })
})
