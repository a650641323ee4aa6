// Redis URLs -> connection settings: redis://, rediss://, redis+sentinel:// and redis+cluster://, with a
// ConfigError that names the part that is wrong (and never prints the password).
import { ConfigError } from '@fastlimit/core'

/** How the Redis behind a URL is deployed. */
export type RedisTopology = 'standalone' | 'sentinel' | 'cluster'

/** One `host:port` of a URL. */
export interface RedisAddress {
  readonly host: string
  readonly port: number
}

/** What {@link parseRedisUrl} reads from a URL. */
export interface RedisUrl {
  readonly topology: RedisTopology
  /** `rediss`: connect with TLS. */
  readonly tls: boolean
  /** The server (standalone), the sentinels, or the cluster's startup nodes. */
  readonly hosts: readonly RedisAddress[]
  readonly username?: string
  readonly password?: string
  /** The database number (standalone and Sentinel). */
  readonly db?: number
  /** The master group name (Sentinel). */
  readonly masterName?: string
  /** Credentials of the sentinels themselves, from `?sentinelUsername=&sentinelPassword=`. */
  readonly sentinelUsername?: string
  readonly sentinelPassword?: string
}

const SCHEMES: Readonly<Record<string, { topology: RedisTopology; tls: boolean; port: number }>> = {
  redis: { topology: 'standalone', tls: false, port: 6379 },
  rediss: { topology: 'standalone', tls: true, port: 6379 },
  'redis+sentinel': { topology: 'sentinel', tls: false, port: 26379 },
  'rediss+sentinel': { topology: 'sentinel', tls: true, port: 26379 },
  'redis+cluster': { topology: 'cluster', tls: false, port: 6379 },
  'rediss+cluster': { topology: 'cluster', tls: true, port: 6379 },
}

const FORMS =
  'redis://[:password@]host[:port][/db], rediss://... (TLS), ' +
  'redis+sentinel://host1:26379,host2:26379/mastername[/db] or redis+cluster://host1:7000,host2:7001'

/** The URL with its password replaced by `***`, for error messages. */
export function redactUrl(url: string): string {
  return url.replace(/^([^:/?#]*:\/\/)([^@/?#]*)@/, (_m, scheme: string, info: string) => {
    const colon = info.indexOf(':')
    return colon < 0 ? `${scheme}${info}@` : `${scheme}${info.slice(0, colon)}:***@`
  })
}

function quote(text: string): string {
  const json = JSON.stringify(text)
  return json.length > 80 ? `${json.slice(0, 77)}..."` : json
}

function decode(part: string, what: string, url: string): string {
  try {
    return decodeURIComponent(part)
  } catch {
    throw bad(
      url,
      `the ${what} is not valid percent-encoding`,
      'Encode special characters, e.g. %40 for "@".',
    )
  }
}

function bad(url: string, problem: string, fix: string): ConfigError {
  return new ConfigError(`[fastlimit] [redis] Invalid Redis URL ${quote(redactUrl(url))}: ${problem}. ${fix}`)
}

function parseHost(text: string, defaultPort: number, url: string): RedisAddress {
  let host: string
  let portText: string | undefined
  if (text.startsWith('[')) {
    const end = text.indexOf(']')
    if (end < 0)
      throw bad(url, `the host ${quote(text)} opens "[" without closing it`, 'Write IPv6 as [::1]:6379.')
    host = text.slice(1, end)
    const after = text.slice(end + 1)
    if (after !== '' && !after.startsWith(':')) {
      throw bad(
        url,
        `unexpected ${quote(after)} after the host ${quote(text.slice(0, end + 1))}`,
        'Write [::1]:6379.',
      )
    }
    if (after !== '') portText = after.slice(1)
    if (!/^[0-9a-fA-F:.]+$/.test(host) || !host.includes(':')) {
      throw bad(url, `the host ${quote(text)} is not an IPv6 address`, 'Write IPv6 as [::1]:6379.')
    }
  } else {
    const colon = text.indexOf(':')
    if (colon !== text.lastIndexOf(':')) {
      throw bad(
        url,
        `the host ${quote(text)} has more than one ":"`,
        'Put IPv6 addresses in brackets: [::1]:6379.',
      )
    }
    host = colon < 0 ? text : text.slice(0, colon)
    if (colon >= 0) portText = text.slice(colon + 1)
    if (host === '') throw bad(url, 'a host is missing', 'For example redis://localhost:6379.')
    if (!/^[A-Za-z0-9_.-]+$/.test(host)) {
      throw bad(
        url,
        `the host ${quote(host)} is not a host name or an IP address`,
        'If it is part of a password with "@", "/", "?" or "#", percent-encode those characters.',
      )
    }
  }
  let port = defaultPort
  if (portText !== undefined) {
    port = /^[0-9]{1,5}$/.test(portText) ? Number(portText) : Number.NaN
    if (!(port >= 1 && port <= 65535)) {
      throw bad(
        url,
        `the port ${quote(portText)} of host ${quote(host)} is not a number from 1 to 65535`,
        `For example ${host}:6379.`,
      )
    }
  }
  return { host, port }
}

function parseDb(text: string, url: string): number {
  const db = /^[0-9]{1,9}$/.test(text) ? Number(text) : Number.NaN
  if (!Number.isSafeInteger(db)) {
    throw bad(
      url,
      `the database ${quote(text)} is not a whole number`,
      'For example redis://localhost:6379/0.',
    )
  }
  return db
}

/**
 * Parses a Redis URL. Forms: `redis://[[user]:password@]host[:port][/db]`, `rediss://` (TLS),
 * `redis+sentinel://[[user]:password@]h1:26379,h2:26379/mastername[/db][?sentinelPassword=...]` and
 * `redis+cluster://[[user]:password@]n1:7000,n2:7001` (and `rediss+sentinel://`, `rediss+cluster://`).
 * Percent-encode `@ / ? #` inside a user name or password.
 *
 * @throws ConfigError naming the part that is wrong (scheme, host, port, database, master name, ...)
 */
export function parseRedisUrl(url: string): RedisUrl {
  if (typeof url !== 'string' || url === '') {
    throw new ConfigError(
      `[fastlimit] [redis] url must be a non-empty string, got ${typeof url === 'string' ? '""' : typeof url}. ` +
        `Use ${FORMS}.`,
    )
  }
  if (/[\s\u0000-\u001f\u007f]/.test(url)) {
    throw bad(url, 'it contains a space or a control character', 'Percent-encode them, e.g. %20 for a space.')
  }
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(.*)$/.exec(url)
  if (!m) {
    throw bad(
      url,
      'the scheme is missing (it must start with redis:// or another Redis scheme)',
      `Use ${FORMS}.`,
    )
  }
  const schemeText = m[1] as string
  const scheme = SCHEMES[schemeText.toLowerCase()]
  if (scheme === undefined) {
    throw bad(
      url,
      `the scheme ${quote(`${schemeText}:`)} is not supported`,
      'Use redis://, rediss://, redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://.',
    )
  }
  let rest = m[2] as string
  if (rest.includes('#')) {
    throw bad(url, 'it has a fragment ("#...")', 'Remove it; in a password, write "#" as %23.')
  }
  const q = rest.indexOf('?')
  const query = q < 0 ? '' : rest.slice(q + 1)
  if (q >= 0) rest = rest.slice(0, q)
  const slash = rest.indexOf('/')
  const authority = slash < 0 ? rest : rest.slice(0, slash)
  const path = slash < 0 ? '' : rest.slice(slash + 1)
  const at = authority.lastIndexOf('@')
  const hostList = authority.slice(at + 1)

  let username: string | undefined
  let password: string | undefined
  if (at >= 0) {
    const info = authority.slice(0, at)
    const colon = info.indexOf(':')
    if (colon < 0) {
      throw bad(
        url,
        'the user info has no password (no ":" before "@")',
        'Write redis://:password@host or redis://user:password@host.',
      )
    }
    const user = decode(info.slice(0, colon), 'user name', url)
    const pass = decode(info.slice(colon + 1), 'password', url)
    if (user !== '') username = user
    if (pass !== '') password = pass
  }

  if (hostList === '')
    throw bad(url, 'the host is missing', `For example ${schemeText}://localhost:${scheme.port}.`)
  const hostTexts = hostList.split(',')
  const hosts = hostTexts.map((h) => {
    if (h === '') throw bad(url, 'the host list has an empty entry (",,")', 'Separate hosts with one comma.')
    return parseHost(h, scheme.port, url)
  })

  let db: number | undefined
  let masterName: string | undefined
  const segments = path === '' ? [] : path.split('/')
  if (segments.length > 0 && segments[segments.length - 1] === '') segments.pop()
  if (scheme.topology === 'standalone') {
    if (hosts.length > 1) {
      throw bad(
        url,
        `${schemeText}:// takes one host, got ${hosts.length}`,
        'For a Cluster use redis+cluster://n1:7000,n2:7001; for Sentinel redis+sentinel://h1:26379,h2:26379/mymaster.',
      )
    }
    if (segments.length > 1) {
      throw bad(url, `the path ${quote(`/${path}`)} is more than a database number`, 'For example /0.')
    }
    if (segments.length === 1) db = parseDb(segments[0] as string, url)
  } else if (scheme.topology === 'sentinel') {
    if (segments.length === 0 || segments[0] === '') {
      throw bad(
        url,
        'the master name is missing',
        'Add it as the path: redis+sentinel://h1:26379,h2:26379/mymaster.',
      )
    }
    masterName = decode(segments[0] as string, 'master name', url)
    if (segments.length > 2) {
      throw bad(
        url,
        `the path ${quote(`/${path}`)} is more than a master name and a database`,
        'For example /mymaster/0.',
      )
    }
    if (segments.length === 2) db = parseDb(segments[1] as string, url)
  } else if (segments.length > 0) {
    if (segments.length === 1 && segments[0] === '0') {
      // Database 0 is the only one a Cluster has: accept it.
    } else {
      throw bad(
        url,
        `the path ${quote(`/${path}`)} names a database, but Redis Cluster has only database 0`,
        'Remove the path: redis+cluster://n1:7000,n2:7001.',
      )
    }
  }

  let sentinelUsername: string | undefined
  let sentinelPassword: string | undefined
  if (query !== '') {
    for (const part of query.split('&')) {
      if (part === '') continue
      const eq = part.indexOf('=')
      const name = decode(eq < 0 ? part : part.slice(0, eq), 'query parameter name', url)
      const value = decode(eq < 0 ? '' : part.slice(eq + 1).replace(/\+/g, ' '), `value of ${name}`, url)
      if (scheme.topology === 'sentinel' && name === 'sentinelUsername') sentinelUsername = value
      else if (scheme.topology === 'sentinel' && name === 'sentinelPassword') sentinelPassword = value
      else {
        throw bad(
          url,
          `the query parameter ${quote(name)} is not supported`,
          scheme.topology === 'sentinel'
            ? 'Only sentinelUsername and sentinelPassword are; pass other settings in redisOptions.'
            : 'Pass connection settings in redisOptions (or clusterOptions) instead.',
        )
      }
    }
  }

  return {
    topology: scheme.topology,
    tls: scheme.tls,
    hosts,
    ...(username === undefined ? {} : { username }),
    ...(password === undefined ? {} : { password }),
    ...(db === undefined ? {} : { db }),
    ...(masterName === undefined ? {} : { masterName }),
    ...(sentinelUsername === undefined ? {} : { sentinelUsername }),
    ...(sentinelPassword === undefined ? {} : { sentinelPassword }),
  }
}
