// Client IP: parsing, canonical text, CIDR matching, IPv6 subnet keys and the walk through trusted proxies.

import { ConfigError, show } from '../errors'

/** An IPv4 address as an unsigned 32-bit integer. */
export interface IPv4Address {
  readonly version: 4
  /** The address as an unsigned 32-bit integer (`1.2.3.4` is `0x01020304`). */
  readonly value: number
}

/** An IPv6 address as eight 16-bit groups. The zone id (`%eth0`), if any, is dropped. */
export interface IPv6Address {
  readonly version: 6
  /** Eight integers from 0 to 65535. */
  readonly groups: readonly number[]
}

/** A parsed IP address. IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are parsed as IPv4. */
export type IpAddress = IPv4Address | IPv6Address

/** A network: an address and a prefix length (bits). The address has its host bits cleared. */
export type Cidr =
  | { readonly version: 4; readonly value: number; readonly prefix: number }
  | { readonly version: 6; readonly groups: readonly number[]; readonly prefix: number }

/**
 * Parses dotted-quad IPv4 text between `start` and `end`: four decimal numbers from 0 to 255, no
 * leading zeros (so `010.0.0.1` is not silently octal or decimal). Returns the unsigned value, or -1.
 */
export function parseIPv4Range(text: string, start: number, end: number): number {
  const length = end - start
  if (length < 7 || length > 15) return -1
  let value = 0
  let part = 0
  let digits = 0
  let dots = 0
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i)
    if (c === 46) {
      if (digits === 0 || dots === 3) return -1
      value = value * 256 + part
      dots++
      part = 0
      digits = 0
    } else if (c >= 48 && c <= 57) {
      if (digits === 1 && part === 0) return -1 // leading zero
      part = part * 10 + (c - 48)
      if (part > 255) return -1
      digits++
    } else {
      return -1
    }
  }
  if (dots !== 3 || digits === 0) return -1
  return value * 256 + part
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48
  if (c >= 97 && c <= 102) return c - 87
  if (c >= 65 && c <= 70) return c - 55
  return -1
}

/** Parses 1 to 4 hex digits; -1 if invalid. */
function parseGroup(part: string): number {
  if (part.length === 0 || part.length > 4) return -1
  let v = 0
  for (let i = 0; i < part.length; i++) {
    const h = hexValue(part.charCodeAt(i))
    if (h < 0) return -1
    v = v * 16 + h
  }
  return v
}

/** Parses the groups of one side of `::`; the last part may be dotted IPv4 when `ipv4Last`. */
function parseParts(text: string, ipv4Last: boolean, out: number[]): boolean {
  if (text === '') return true
  const parts = text.split(':')
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] as string
    if (ipv4Last && i === parts.length - 1 && part.includes('.')) {
      const v4 = parseIPv4Range(part, 0, part.length)
      if (v4 < 0) return false
      out.push(Math.floor(v4 / 65536), v4 % 65536)
    } else {
      const g = parseGroup(part)
      if (g < 0) return false
      out.push(g)
    }
  }
  return true
}

/** Parses IPv6 text (compressed, with embedded IPv4, with a zone id) into 8 groups, or undefined. */
function parseIPv6Groups(text: string): number[] | undefined {
  const zone = text.indexOf('%')
  if (zone !== -1) {
    if (zone === text.length - 1) return undefined
    text = text.slice(0, zone)
  }
  if (text.length < 2 || text.length > 45) return undefined
  const gap = text.indexOf('::')
  if (gap === -1) {
    const groups: number[] = []
    if (!parseParts(text, true, groups) || groups.length !== 8) return undefined
    return groups
  }
  if (text.indexOf('::', gap + 1) !== -1) return undefined
  const head: number[] = []
  const tail: number[] = []
  if (!parseParts(text.slice(0, gap), false, head)) return undefined
  if (!parseParts(text.slice(gap + 2), true, tail)) return undefined
  const missing = 8 - head.length - tail.length
  if (missing < 1) return undefined
  for (let i = 0; i < missing; i++) head.push(0)
  for (const g of tail) head.push(g)
  return head
}

function fromGroups(groups: number[]): IpAddress {
  // IPv4-mapped (::ffff:a.b.c.d): the same client as a.b.c.d, so the same key.
  if (
    groups[0] === 0 &&
    groups[1] === 0 &&
    groups[2] === 0 &&
    groups[3] === 0 &&
    groups[4] === 0 &&
    groups[5] === 0xffff
  ) {
    return { version: 4, value: (groups[6] as number) * 65536 + (groups[7] as number) }
  }
  return { version: 6, groups }
}

/**
 * Parses an IP address: dotted-quad IPv4, or IPv6 in any RFC 4291 form (compressed `::`, embedded
 * IPv4, a zone id such as `%eth0`, any case). IPv4-mapped IPv6 (`::ffff:1.2.3.4`) comes back as IPv4.
 * Never throws; returns `undefined` for anything else (including brackets and ports: see {@link parseHop}).
 *
 * @example
 * ```ts
 * parseIp('::ffff:10.0.0.1') // { version: 4, value: 167772161 }
 * ```
 */
export function parseIp(text: string): IpAddress | undefined {
  if (typeof text !== 'string') return undefined
  const v4 = parseIPv4Range(text, 0, text.length)
  if (v4 >= 0) return { version: 4, value: v4 }
  if (!text.includes(':')) return undefined
  const groups = parseIPv6Groups(text)
  return groups === undefined ? undefined : fromGroups(groups)
}

/** Dotted-quad text of an unsigned 32-bit IPv4 value. */
export function formatIPv4(value: number): string {
  return `${(value >>> 24) & 255}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`
}

/** RFC 5952 text of 8 groups: lower case, no leading zeros, the longest run of 2+ zero groups as `::`. */
export function formatIPv6(groups: readonly number[]): string {
  let bestStart = -1
  let bestLength = 1
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLength) {
      bestStart = i
      bestLength = j - i
    }
    i = j
  }
  let out = ''
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      out += '::'
      i += bestLength - 1
      continue
    }
    if (out !== '' && !out.endsWith(':')) out += ':'
    out += (groups[i] as number).toString(16)
  }
  return out
}

/** The canonical text of an address: dotted quad, or RFC 5952 IPv6. */
export function formatIp(ip: IpAddress): string {
  return ip.version === 4 ? formatIPv4(ip.value) : formatIPv6(ip.groups)
}

function maskGroups(groups: readonly number[], prefix: number): number[] {
  const out = new Array<number>(8)
  for (let i = 0; i < 8; i++) {
    const bits = prefix - i * 16
    const g = groups[i] as number
    out[i] = bits >= 16 ? g : bits <= 0 ? 0 : g & ((0xffff << (16 - bits)) & 0xffff)
  }
  return out
}

function maskV4(value: number, prefix: number): number {
  return prefix === 0 ? 0 : (value & (-1 << (32 - prefix))) >>> 0
}

/**
 * The IPv4 address an IPv6 address stands for, as an unsigned 32-bit value, or -1 when it embeds none:
 * - NAT64 well-known prefix `64:ff9b::a.b.c.d` (RFC 6052): how an IPv4 client reaches an IPv6-only service
 *   through a translator (SIIT, NAT46);
 * - IPv4-translated `::ffff:0:a.b.c.d` (RFC 2765) and IPv4-compatible `::a.b.c.d` (RFC 4291, deprecated; `::`,
 *   `::1` and the rest of `::/104` are not read as IPv4);
 * - 6to4 `2002:AABB:CCDD::/48` (RFC 3056): the whole /48 of the site whose router is `AA.BB.CC.DD`;
 * - Teredo `2001:0::/32` (RFC 4380): the client's public IPv4, stored inverted in the last 32 bits.
 * (IPv4-mapped `::ffff:a.b.c.d` is already parsed as IPv4 by {@link parseIp}.)
 */
export function embeddedIPv4(groups: readonly number[]): number {
  const g0 = groups[0] as number
  const low = (groups[6] as number) * 65536 + (groups[7] as number)
  if (g0 === 0x2002) return (groups[1] as number) * 65536 + (groups[2] as number)
  if (g0 === 0x2001) return groups[1] === 0 ? ~low >>> 0 : -1
  if (groups[2] !== 0 || groups[3] !== 0 || groups[5] !== 0) return -1
  if (g0 === 0x64) return groups[1] === 0xff9b && groups[4] === 0 ? low : -1
  if (g0 !== 0 || groups[1] !== 0) return -1
  if (groups[4] === 0xffff) return low // ::ffff:0:a.b.c.d
  return groups[4] === 0 && low >= 0x1000000 ? low : -1 // ::a.b.c.d, but not ::/104 (::, ::1, ...)
}

/**
 * The rate-limit identity of an address. IPv4 addresses stand alone (`203.0.113.7`), and so do IPv6
 * addresses that embed one (NAT64 `64:ff9b::203.0.113.7`, 6to4, Teredo, ...: see {@link embeddedIPv4}),
 * keyed as that IPv4 address. Other IPv6 addresses are grouped by their `/ipv6Subnet` network
 * (`2001:db8:0:ab00::/56`), because one subscriber usually holds a whole /56 (or /48, /64) and can pick
 * any address in it. `false` (or 128) keys each IPv6 address alone.
 */
export function ipKey(ip: IpAddress, ipv6Subnet: number | false = 56): string {
  if (ip.version === 4) return formatIPv4(ip.value)
  const v4 = embeddedIPv4(ip.groups)
  if (v4 >= 0) return formatIPv4(v4)
  if (ipv6Subnet === false || ipv6Subnet === 128) return formatIPv6(ip.groups)
  return `${formatIPv6(maskGroups(ip.groups, ipv6Subnet))}/${ipv6Subnet}`
}

/**
 * Parses a CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address (a /32 or /128). Host bits are
 * cleared. An IPv4-mapped IPv6 network of prefix 96 or more is read as the IPv4 network it maps.
 * Returns `undefined` for anything else.
 */
export function parseCidr(text: string): Cidr | undefined {
  if (typeof text !== 'string') return undefined
  const slash = text.indexOf('/')
  const addressText = slash === -1 ? text : text.slice(0, slash)
  let prefix: number | undefined
  if (slash !== -1) {
    const p = text.slice(slash + 1)
    if (!/^(0|[1-9]\d{0,2})$/.test(p)) return undefined
    prefix = Number(p)
  }
  const v4 = parseIPv4Range(addressText, 0, addressText.length)
  if (v4 >= 0) {
    const bits = prefix ?? 32
    if (bits > 32) return undefined
    return { version: 4, value: maskV4(v4, bits), prefix: bits }
  }
  if (!addressText.includes(':') || addressText.includes('%')) return undefined
  const groups = parseIPv6Groups(addressText)
  if (groups === undefined) return undefined
  const bits = prefix ?? 128
  if (bits > 128) return undefined
  const ip = fromGroups(groups)
  if (ip.version === 4) {
    if (bits < 96) return undefined
    return { version: 4, value: maskV4(ip.value, bits - 96), prefix: bits - 96 }
  }
  return { version: 6, groups: maskGroups(groups, bits), prefix: bits }
}

/** Whether `ip` lies in `cidr`. */
export function cidrContains(cidr: Cidr, ip: IpAddress): boolean {
  if (cidr.version === 4) {
    return ip.version === 4 && maskV4(ip.value, cidr.prefix) === cidr.value
  }
  if (ip.version !== 6) return false
  const masked = maskGroups(ip.groups, cidr.prefix)
  for (let i = 0; i < 8; i++) if (masked[i] !== cidr.groups[i]) return false
  return true
}

/** Named address ranges accepted wherever a list of addresses is (`trustProxy`, `allowList`). */
export const IP_RANGES: Readonly<Record<'loopback' | 'linklocal' | 'private', readonly string[]>> = {
  loopback: ['127.0.0.0/8', '::1/128'],
  linklocal: ['169.254.0.0/16', 'fe80::/10'],
  private: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'],
}

/**
 * Compiles a list of addresses, CIDRs and range names (`'loopback'`, `'linklocal'`, `'private'`)
 * into a matcher.
 * @throws ConfigError naming the first entry that is none of those
 */
export function createIpMatcher(
  list: readonly string[],
  subject = 'The address list',
  where = 'core',
): (ip: IpAddress) => boolean {
  if (!Array.isArray(list)) {
    throw new ConfigError(
      `[fastlimit] [${where}] ${subject} must be an array of addresses or CIDRs, got ${show(list)}: e.g. ['10.0.0.0/8', '::1'].`,
    )
  }
  const v4: { value: number; prefix: number }[] = []
  const v6: Cidr[] = []
  const add = (entry: unknown) => {
    if (typeof entry === 'string' && Object.hasOwn(IP_RANGES, entry)) {
      for (const r of IP_RANGES[entry as keyof typeof IP_RANGES]) add(r)
      return
    }
    const cidr = typeof entry === 'string' ? parseCidr(entry.trim()) : undefined
    if (cidr === undefined) {
      throw new ConfigError(
        `[fastlimit] [${where}] ${subject} has ${show(entry)}, which is not an IP address, a CIDR or one of ` +
          `'loopback', 'linklocal', 'private': write e.g. '10.0.0.0/8', '2001:db8::/32' or '203.0.113.7'.`,
      )
    }
    if (cidr.version === 4) v4.push(cidr)
    else v6.push(cidr)
  }
  for (const entry of list) add(entry)
  return (ip) => {
    if (ip.version === 4) {
      for (const c of v4) if (maskV4(ip.value, c.prefix) === c.value) return true
      return false
    }
    for (const c of v6) if (cidrContains(c, ip)) return true
    return false
  }
}

function isOws(c: number): boolean {
  return c === 32 || c === 9
}

/**
 * Parses one hop of a forwarding header: an address, optionally with a port (`203.0.113.7:4711`,
 * `[2001:db8::1]:4711`) or in brackets (`[2001:db8::1]`). Surrounding spaces are ignored. Returns
 * `undefined` for anything else, including RFC 7239 `unknown` and obfuscated identifiers (`_hidden`).
 */
export function parseHop(text: string): IpAddress | undefined {
  let start = 0
  let end = text.length
  while (start < end && isOws(text.charCodeAt(start))) start++
  while (end > start && isOws(text.charCodeAt(end - 1))) end--
  if (start === end) return undefined
  if (text.charCodeAt(start) === 91) {
    // [v6] or [v6]:port
    const close = text.indexOf(']', start)
    if (close === -1 || close > end) return undefined
    if (close + 1 !== end && !isPort(text, close + 1, end)) return undefined
    const ip = parseIp(text.slice(start + 1, close))
    return ip
  }
  const v4 = parseIPv4Range(text, start, end)
  if (v4 >= 0) return { version: 4, value: v4 }
  const colon = text.indexOf(':', start)
  if (colon !== -1 && colon < end && text.indexOf(':', colon + 1) === -1) {
    // a.b.c.d:port (one colon: not IPv6)
    if (!isPort(text, colon, end)) return undefined
    const p = parseIPv4Range(text, start, colon)
    return p >= 0 ? { version: 4, value: p } : undefined
  }
  return parseIp(start === 0 && end === text.length ? text : text.slice(start, end))
}

/** `:` followed by 1 to 5 digits, from `at` to `end`. */
function isPort(text: string, at: number, end: number): boolean {
  if (text.charCodeAt(at) !== 58) return false
  const digits = end - at - 1
  if (digits < 1 || digits > 5) return false
  for (let i = at + 1; i < end; i++) {
    const c = text.charCodeAt(i)
    if (c < 48 || c > 57) return false
  }
  return true
}

// RFC 9110 tchar, plus ':', '[' and ']' which some proxies leave unquoted in `for=`.
// Built in a pure call, so that a bundle that never reads a header drops it.
const TOKEN = /* @__PURE__ */ (() => {
  const t = new Uint8Array(128)
  for (const ch of "!#$%&'*+-.^_`|~:[]") t[ch.charCodeAt(0)] = 1
  for (let c = 48; c <= 57; c++) t[c] = 1
  for (let c = 65; c <= 90; c++) t[c] = 1
  for (let c = 97; c <= 122; c++) t[c] = 1
  return t
})()

function isToken(c: number): boolean {
  return c < 128 && TOKEN[c] === 1
}

/** Where the last `prev*Hop` call stopped: the end of the next hop to the left, or -1 when there is none. */
let cursor = -1

/**
 * The X-Forwarded-For hop that ends before `end` (the last one when `end` is the length), skipping empty
 * entries; `undefined` when there is none. Sets {@link cursor}.
 */
function prevXffHop(header: string, end: number): string | undefined {
  while (end > 0) {
    const comma = header.lastIndexOf(',', end - 1)
    for (let i = comma + 1; i < end; i++) {
      if (!isOws(header.charCodeAt(i))) {
        cursor = comma
        return header.slice(comma + 1, end)
      }
    }
    end = comma
  }
  cursor = -1
  return undefined
}

/** An unusable element: nothing to its left can be located either, so reading stops. */
function malformed(): null {
  cursor = -1
  return null
}

/** Unescapes the content of a quoted string (RFC 9110 quoted-pair). */
function unquote(text: string): string {
  let out = ''
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string
    if (ch === '\\') i++
    out += text[i] ?? ''
  }
  return out
}

/**
 * The `for=` value of the RFC 7239 `Forwarded` element that ends before `end`, parsed from the right:
 * a string, `null` when the element has no `for=`, two of them, or malformed syntax, and `undefined` when
 * there is no element left. Empty elements and empty pairs are skipped. Sets {@link cursor}; after a
 * malformed element it is -1, since what lies further left cannot be told apart reliably.
 *
 * Reading from the right is what makes this robust: the last elements are written by the trusted proxies
 * and are well formed, so whatever a client wrote to their left (an unterminated quote, stray commas)
 * cannot change how they are read. A quote is an opening one when the run of backslashes before it has
 * even length, which is exactly how a left-to-right reading of a well-formed quoted string ends.
 */
function prevForwardedFor(header: string, end: number): string | null | undefined {
  let i = end - 1
  while (i >= 0) {
    const c = header.charCodeAt(i)
    if (isOws(c) || c === 44 || c === 59) i--
    else break
  }
  if (i < 0) {
    cursor = -1
    return undefined
  }
  let value: string | null | undefined // undefined: no `for` yet; null: two of them
  while (true) {
    // A pair ends at i: token "=" ( token / quoted-string )
    let v: string
    if (header.charCodeAt(i) === 34) {
      let j = i - 1
      let escaped = false
      while (true) {
        if (j < 0) return malformed()
        const c = header.charCodeAt(j)
        if (c === 34) {
          let k = j - 1
          while (k >= 0 && header.charCodeAt(k) === 92) k--
          if ((j - 1 - k) % 2 === 0) break
        } else if (c === 92) {
          escaped = true
        } else if ((c < 32 && c !== 9) || c === 127) {
          return malformed()
        }
        j--
      }
      v = escaped ? unquote(header.slice(j + 1, i)) : header.slice(j + 1, i)
      i = j - 1
    } else {
      let j = i
      while (j >= 0 && isToken(header.charCodeAt(j))) j--
      if (j === i) return malformed()
      v = header.slice(j + 1, i + 1)
      i = j
    }
    if (i < 0 || header.charCodeAt(i) !== 61) return malformed()
    let j = i - 1
    while (j >= 0 && isToken(header.charCodeAt(j))) j--
    if (j === i - 1) return malformed()
    if (i - 1 - j === 3 && header.slice(j + 1, i).toLowerCase() === 'for') {
      value = value === undefined ? v : null
    }
    i = j
    // Then OWS, and ';' (another pair, or empty ones) or ',' (the element's start) or the header's start.
    while (i >= 0 && isOws(header.charCodeAt(i))) i--
    if (i < 0 || header.charCodeAt(i) === 44) break
    if (header.charCodeAt(i) !== 59) return malformed()
    while (i >= 0) {
      const c = header.charCodeAt(i)
      if (isOws(c) || c === 59) i--
      else break
    }
    if (i < 0 || header.charCodeAt(i) === 44) break
  }
  cursor = i
  return value ?? null
}

/**
 * Parses an RFC 7239 `Forwarded` header into the `for=` value of each element, left to right (the
 * last is the closest proxy's). An element without `for=`, or with two, gives `null`. Quoted strings
 * and their escapes are honoured, so a comma inside quotes does not start an element; empty elements
 * are skipped. The header is read from the right, as proxies append to it: malformed syntax stops the
 * reading there, and gives one `null` in front of the elements to its right, which are read as they
 * are whatever lies to their left (an unterminated quote cannot swallow what a trusted proxy appended).
 * Never throws.
 *
 * @example
 * ```ts
 * parseForwarded('for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711"')
 * // ['192.0.2.60', '[2001:db8:cafe::17]:4711']
 * parseForwarded('for="unterminated, for=198.51.100.7') // [null, '198.51.100.7']
 * ```
 */
export function parseForwarded(header: string): (string | null)[] {
  const out: (string | null)[] = []
  if (typeof header !== 'string') return out
  let end = header.length
  while (end > 0) {
    const value = prevForwardedFor(header, end)
    if (value === undefined) break
    out.push(value)
    end = cursor
  }
  return out.reverse()
}

/**
 * Which proxies to believe: at most `hops` of them, closest to the app first, each of whose address
 * `match` accepts. Build it with {@link compileTrust}.
 */
export interface ProxyTrust {
  /** How many proxies to believe at most: `0` none, `Infinity` as many as `match` accepts in a row. */
  readonly hops: number
  /** Whether an address may be a proxy's; `undefined`: any address may (a bare number of hops). */
  readonly match: ((ip: IpAddress) => boolean) | undefined
  /**
   * Whether the setting believes a forwarding header from any peer without saying so (a bare number of hops,
   * or a range covering every address), so that a client reaching the app directly picks its own
   * address: the HTTP layer warns about it once per process.
   */
  readonly anyPeer: boolean
}

/** Trusts no proxy: the client is the connection's peer. */
export const TRUST_NONE: ProxyTrust = /* @__PURE__ */ Object.freeze({
  hops: 0,
  match: undefined,
  anyPeer: false,
})

/** The `trustProxy` setting every HTTP adapter takes; see `RateLimitCommonOptions.trustProxy`. */
export type TrustProxySetting =
  | false
  | number
  | readonly string[]
  | {
      /** How many proxies there are at most between the client and the app. */
      readonly hops?: number
      /** The addresses, CIDRs or range names those proxies connect from; `'any'`: every address. */
      readonly from: readonly string[] | 'any'
    }

/**
 * Compiles a `trustProxy` setting: `false` (none); `{ hops, from }`, at most `hops` proxies, each at
 * an address of `from` (addresses, CIDRs and the names `'loopback'`, `'linklocal'`, `'private'`, or
 * `'any'`); a list of addresses (every hop from them, however many); or a bare number of hops, which
 * believes any peer.
 * @throws ConfigError
 */
export function compileTrust(setting: unknown, where = 'core'): ProxyTrust {
  const fail = (message: string): never => {
    throw new ConfigError(`[fastlimit] [${where}] ${message}`)
  }
  const hopsOf = (value: unknown, name: string): number => {
    if (!Number.isSafeInteger(value) || (value as number) < 1 || (value as number) > 100) {
      fail(
        `${name} must be a number of proxies from 1 to 100, got ${show(value)}: e.g. trustProxy: { hops: 1, from: ['10.0.0.0/8'] } behind one load balancer.`,
      )
    }
    return value as number
  }
  if (setting === false || setting === undefined || setting === 0) return TRUST_NONE
  if (typeof setting === 'number') {
    return Object.freeze({ hops: hopsOf(setting, 'trustProxy'), match: undefined, anyPeer: true })
  }
  if (typeof setting === 'string') return compileTrust([setting], where)
  if (Array.isArray(setting)) {
    const match = createIpMatcher(setting, 'trustProxy', where)
    return Object.freeze({ hops: Number.POSITIVE_INFINITY, match, anyPeer: coversAll(setting) })
  }
  const proto = typeof setting === 'object' && setting !== null ? Object.getPrototypeOf(setting) : undefined
  if (proto !== Object.prototype && proto !== null) {
    fail(
      `trustProxy must be false, { hops, from }, a list of addresses and CIDRs, or a number of proxies, got ${show(setting)}: ` +
        `e.g. trustProxy: { hops: 1, from: ['10.0.0.0/8'] }.`,
    )
  }
  const o = setting as Record<string, unknown>
  for (const name of Object.keys(o)) {
    if (name !== 'hops' && name !== 'from')
      fail(`trustProxy takes { hops, from }, got an unknown ${show(name)}.`)
  }
  const from = o.from
  if (from === undefined) {
    fail(
      "trustProxy { hops } needs from: the addresses your proxies connect from, e.g. { hops: 1, from: ['10.0.0.0/8'] }, " +
        "or from: 'any' when nothing but your proxies can reach the app.",
    )
  }
  const hops = o.hops === undefined ? Number.POSITIVE_INFINITY : hopsOf(o.hops, 'trustProxy.hops')
  if (from === 'any') {
    if (o.hops === undefined)
      fail(
        "trustProxy { from: 'any' } needs hops: how many proxies to believe, e.g. { hops: 1, from: 'any' }.",
      )
    return Object.freeze({ hops, match: undefined, anyPeer: false })
  }
  const list = typeof from === 'string' ? [from] : from
  const match = createIpMatcher(list as readonly string[], 'trustProxy.from', where)
  return Object.freeze({ hops, match, anyPeer: coversAll(list as readonly string[]) })
}

/** Whether a list holds a network of prefix 0 (every IPv4 or every IPv6 address). */
function coversAll(list: readonly unknown[]): boolean {
  for (const entry of list) {
    if (typeof entry === 'string' && parseCidr(entry.trim())?.prefix === 0) return true
  }
  return false
}

/** Which header carries the chain of client addresses. */
export type ProxyHeader = 'x-forwarded-for' | 'forwarded'

/**
 * Finds the client's address: the connection's peer, unless that peer is a trusted proxy, in which
 * case the forwarding header is read right to left, skipping trusted hops (at most `trust.hops`), and
 * the first untrusted hop is the client. The walk stops at the last trusted address when a hop is
 * malformed, missing, `unknown` or obfuscated, so a client can never choose its own address. Only as
 * many hops as the walk needs are read, from the right, so nothing a client puts to their left changes
 * how they are read. Never throws.
 *
 * @param remote the connection's peer address; `undefined` for a Unix socket, which is trusted as a
 *   local proxy when any proxy is trusted
 * @param header the raw value of the forwarding header (`undefined` if absent)
 * @returns the client's address, or `undefined` when there is none to find
 */
export function resolveClientIp(
  remote: string | undefined,
  header: string | undefined,
  trust: ProxyTrust,
  kind: ProxyHeader = 'x-forwarded-for',
): IpAddress | undefined {
  const peer = remote === undefined ? undefined : parseIp(remote)
  if (trust.hops === 0) return peer
  // A peer with an address that is not an IP: nothing to walk from.
  if (peer === undefined && remote !== undefined) return undefined
  return walkProxies(peer, header, trust, kind)
}

/**
 * {@link resolveClientIp} from a parsed peer (`undefined`: a Unix socket, trusted as a local proxy).
 * @internal
 */
export function walkProxies(
  peer: IpAddress | undefined,
  header: string | undefined,
  trust: ProxyTrust,
  kind: ProxyHeader,
): IpAddress | undefined {
  if (header === undefined || header === '') return peer
  const match = trust.match
  const hops = trust.hops
  let current = peer
  let trusted = 0
  let end = header.length
  while (trusted < hops && (current === undefined || match === undefined || match(current)) && end > 0) {
    const hop = kind === 'forwarded' ? prevForwardedFor(header, end) : prevXffHop(header, end)
    end = cursor
    const next = hop === null || hop === undefined ? undefined : parseHop(hop)
    if (next === undefined) break
    current = next
    trusted++
  }
  return current
}

/**
 * Whether an address is one a proxy of your own would usually connect from: loopback, private
 * (RFC 1918, `fc00::/7`), shared (`100.64.0.0/10`) or link-local.
 */
export function isLocalAddress(ip: IpAddress): boolean {
  if (ip.version === 4) return isLocalIPv4(ip.value)
  const g0 = ip.groups[0] as number
  if ((g0 & 0xfe00) === 0xfc00 || (g0 & 0xffc0) === 0xfe80) return true
  for (let i = 0; i < 7; i++) if (ip.groups[i] !== 0) return false
  return ip.groups[7] === 1
}

/** {@link isLocalAddress} of an unsigned 32-bit IPv4 value. */
export function isLocalIPv4(v: number): boolean {
  const a = v >>> 24
  const ab = v >>> 16
  return a === 10 || a === 127 || v >>> 20 === 0xac1 || ab === 0xc0a8 || ab === 0xa9fe || v >>> 22 === 0x191
}
