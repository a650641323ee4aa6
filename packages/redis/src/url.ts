// Redis URLs -> connection settings: redis:// (one server; several hosts for a Cluster; sentinels with a
// master name), rediss:// (TLS), redis+sentinel:// and redis+cluster://, with a ConfigError that names the
// part that is wrong and never prints a password, wherever the URL breaks.
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
  /** The URL as messages show it: every secret hidden ({@link redactUrl}). */
  readonly redacted: string
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

/** What {@link parseRedisUrl} takes besides the URL. */
export interface ParseRedisUrlOptions {
  /**
   * The Sentinel master name, when the URL does not give it: with `redis://s1:26379,s2:26379` the URL's
   * hosts are the sentinels. RedisBackend's `sentinelMasterName` option.
   */
  readonly sentinelMasterName?: string | undefined
}

const SCHEMES: Readonly<Record<string, { topology: RedisTopology; tls: boolean; port: number }>> = {
  redis: { topology: 'standalone', tls: false, port: 6379 },
  rediss: { topology: 'standalone', tls: true, port: 6379 },
  'redis+sentinel': { topology: 'sentinel', tls: false, port: 26379 },
  'rediss+sentinel': { topology: 'sentinel', tls: true, port: 26379 },
  'redis+cluster': { topology: 'cluster', tls: false, port: 6379 },
  'rediss+cluster': { topology: 'cluster', tls: true, port: 6379 },
  // Valkey speaks the same protocol: its URLs mean the same.
  valkey: { topology: 'standalone', tls: false, port: 6379 },
  valkeys: { topology: 'standalone', tls: true, port: 6379 },
  'valkey+sentinel': { topology: 'sentinel', tls: false, port: 26379 },
  'valkeys+sentinel': { topology: 'sentinel', tls: true, port: 26379 },
  'valkey+cluster': { topology: 'cluster', tls: false, port: 6379 },
  'valkeys+cluster': { topology: 'cluster', tls: true, port: 6379 },
}

const FORMS =
  'redis://[:password@]host[:port][/db], rediss://... (TLS), redis://n1:7000,n2:7001,n3:7002 (a Cluster), ' +
  'redis://s1:26379,s2:26379/0?sentinelMasterName=mymaster (Sentinel), ' +
  'redis+sentinel://s1:26379,s2:26379/mymaster[/db] or redis+cluster://n1:7000,n2:7001'

/** The query parameters a URL may hold (all about Sentinel), with their snake_case aliases. */
const PARAMS: Readonly<Record<string, 'sentinelUsername' | 'sentinelPassword' | 'masterName'>> = {
  sentinelUsername: 'sentinelUsername',
  sentinel_username: 'sentinelUsername',
  sentinelPassword: 'sentinelPassword',
  sentinel_password: 'sentinelPassword',
  sentinelMasterName: 'masterName',
  sentinel_master: 'masterName',
}

/**
 * A query parameter that holds a secret. Its value and everything after it are hidden: a password that
 * was not percent-encoded may run on past a "&" or a "#".
 */
const SECRET_PARAM = /[?&;][A-Za-z0-9_.-]*(?:pass|pwd|secret|token|auth)[A-Za-z0-9_.-]*=/i

/**
 * The URL with every secret hidden, for messages. The user info, up to the **last** "@" of the URL (which
 * ends it even when a password holds "@", "/", "?" or "#" that were not percent-encoded), becomes
 * `user:***`, or `***` when the user name is not plainly one; the value of a secret query parameter
 * (`sentinelPassword=...`), and everything after it, becomes `***`. When the URL is malformed it hides
 * more than the secret rather than less.
 *
 * @example redactUrl('redis://app:p@ss/w?rd@cache:6379/0') // 'redis://app:***@cache:6379/0'
 */
export function redactUrl(url: string): string {
  let text = String(url)
  const secret = SECRET_PARAM.exec(text)
  if (secret) text = `${text.slice(0, secret.index + secret[0].length)}***`
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.exec(text)
  const start = scheme ? scheme[0].length : 0
  const at = text.lastIndexOf('@')
  if (at < start) return text
  const info = text.slice(start, at)
  const colon = info.indexOf(':')
  const user = colon < 0 ? undefined : info.slice(0, colon)
  const shown = user !== undefined && !/[@/?#%&=]/.test(user) ? `${user}:***` : '***'
  return `${text.slice(0, start)}${shown}${text.slice(at)}`
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
      'Percent-encode special characters: %40 for "@", %25 for "%".',
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
        'For example cache.internal.',
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

/** A Cluster URL's path: nothing, or database 0 (the only one a Cluster has). */
function checkClusterPath(segments: readonly string[], path: string, url: string, example: string): void {
  if (segments.length === 0 || (segments.length === 1 && segments[0] === '0')) return
  throw bad(
    url,
    `the path ${quote(`/${path}`)} names a database, but Redis Cluster has only database 0`,
    `Remove the path: ${example}.`,
  )
}

function checkMasterName(name: unknown, what: string): string {
  if (typeof name !== 'string' || name === '' || name.length > 256 || /[\u0000-\u001f\u007f]/.test(name)) {
    throw new ConfigError(
      `[fastlimit] [redis] ${what} must be the name of the master group your sentinels monitor ` +
        `(1 to 256 characters, no control characters), got ${
          typeof name === 'string' ? quote(name) : typeof name
        }. For example "mymaster".`,
    )
  }
  return name
}

/**
 * Parses a Redis URL. Forms:
 * - `redis://[[user]:password@]host[:port][/db]`: one server (`rediss://` for TLS);
 * - `redis://[[user]:password@]n1:7000,n2:7001,n3:7002[/0]`: a Cluster, from several startup nodes;
 * - `redis://[[user]:password@]s1:26379,s2:26379[/db]?sentinelMasterName=mymaster` (or `sentinel_master=`,
 *   or the `sentinelMasterName` option): the master `mymaster`, through the sentinels at these hosts;
 * - `redis+sentinel://[[user]:password@]s1:26379,s2:26379/mymaster[/db]` and
 *   `redis+cluster://[[user]:password@]n1:7000,n2:7001` (`rediss+sentinel://`, `rediss+cluster://`);
 * - `valkey://`, `valkeys://`, `valkey+sentinel://`, ...: the same as their `redis` forms.
 *
 * The sentinels' own credentials go in `?sentinelUsername=&sentinelPassword=` (or `sentinel_username`,
 * `sentinel_password`). Percent-encode `@ / ? # % :` inside a user name or password.
 *
 * @throws ConfigError naming the part that is wrong (scheme, host, port, database, master name, ...),
 *   never showing a password
 */
export function parseRedisUrl(url: string, options: ParseRedisUrlOptions = {}): RedisUrl {
  if (typeof url !== 'string' || url === '') {
    throw new ConfigError(
      `[fastlimit] [redis] url must be a non-empty string, got ${typeof url === 'string' ? '""' : typeof url}. ` +
        `Use ${FORMS}.`,
    )
  }
  const optionMaster =
    options.sentinelMasterName === undefined
      ? undefined
      : checkMasterName(options.sentinelMasterName, 'sentinelMasterName')
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
      'Use redis://, rediss://, redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster:// ' +
        '(valkey://, valkeys://, ... work the same).',
    )
  }
  let rest = m[2] as string
  // The user info ends at the last "@". Before it, "@", "/", "?" or "#" mean that something was not
  // percent-encoded, and no part of the URL can be told from the password: name none of them.
  const lastAt = rest.lastIndexOf('@')
  if (lastAt >= 0 && /[@/?#]/.test(rest.slice(0, lastAt))) {
    throw bad(
      url,
      'a user name or password holds "@", "/", "?" or "#" that are not percent-encoded (or an "@" is outside the user info)',
      'Percent-encode them: %40 for "@", %2F for "/", %3F for "?", %23 for "#" (encodeURIComponent does it).',
    )
  }
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

  // The query: Sentinel's master name and the sentinels' credentials.
  const params: { sentinelUsername?: string; sentinelPassword?: string; masterName?: string } = {}
  let secretSeen = false
  if (query !== '') {
    for (const part of query.split('&')) {
      if (part === '') continue
      const eq = part.indexOf('=')
      const name = decode(eq < 0 ? part : part.slice(0, eq), 'query parameter name', url)
      const field = Object.hasOwn(PARAMS, name) ? PARAMS[name] : undefined
      if (field === undefined) {
        throw bad(
          url,
          secretSeen
            ? 'a query parameter after sentinelPassword is not supported'
            : `the query parameter ${quote(name)} is not supported`,
          secretSeen
            ? 'If it is part of the password, percent-encode "&" as %26.'
            : 'The query takes sentinelMasterName (or sentinel_master), sentinelUsername and sentinelPassword; ' +
                'pass other settings in redisOptions (or clusterOptions).',
        )
      }
      if (field === 'sentinelPassword') secretSeen = true
      const value = decode(eq < 0 ? '' : part.slice(eq + 1).replace(/\+/g, ' '), `value of ${name}`, url)
      if (field === 'masterName') params.masterName = checkMasterName(value, `The query parameter ${name}`)
      else params[field] = value
    }
  }
  if (optionMaster !== undefined && params.masterName !== undefined && optionMaster !== params.masterName) {
    throw bad(
      url,
      `its master name ${quote(params.masterName)} differs from the sentinelMasterName option ${quote(optionMaster)}`,
      'Give the master name once, in the URL or in the option.',
    )
  }

  let topology = scheme.topology
  let masterName = optionMaster ?? params.masterName
  const segments = path === '' ? [] : path.split('/')
  if (segments.length > 0 && segments[segments.length - 1] === '') segments.pop()
  let db: number | undefined
  if (topology === 'standalone') {
    if (masterName !== undefined) {
      // redis://s1:26379,s2:26379/0?sentinelMasterName=mymaster: the hosts are the sentinels.
      topology = 'sentinel'
    } else if (hostTexts.length > 1) {
      // redis://n1:7000,n2:7001,n3:7002/0: a Cluster, as other libraries write it.
      topology = 'cluster'
      checkClusterPath(segments, path, url, `${schemeText}://${hostTexts.slice(0, 2).join(',')}`)
    }
    if (topology !== 'cluster') {
      if (segments.length > 1) {
        throw bad(url, `the path ${quote(`/${path}`)} is more than a database number`, 'For example /0.')
      }
      if (segments.length === 1) db = parseDb(segments[0] as string, url)
    }
  } else if (topology === 'sentinel') {
    if (segments.length === 0 || segments[0] === '') {
      throw bad(
        url,
        'the master name is missing',
        'Add it as the path: redis+sentinel://h1:26379,h2:26379/mymaster.',
      )
    }
    const pathMaster = decode(segments[0] as string, 'master name', url)
    if (masterName !== undefined && masterName !== pathMaster) {
      throw bad(
        url,
        `its master name ${quote(pathMaster)} differs from ${quote(masterName)} (sentinelMasterName)`,
        'Give the master name once: in the path of a redis+sentinel:// URL.',
      )
    }
    masterName = pathMaster
    if (segments.length > 2) {
      throw bad(
        url,
        `the path ${quote(`/${path}`)} is more than a master name and a database`,
        'For example /mymaster/0.',
      )
    }
    if (segments.length === 2) db = parseDb(segments[1] as string, url)
  } else {
    if (masterName !== undefined) {
      throw bad(
        url,
        'a Sentinel master name was given for a redis+cluster:// URL',
        "A Cluster has no master name: remove sentinelMasterName, or use the sentinels' URL.",
      )
    }
    checkClusterPath(segments, path, url, 'redis+cluster://n1:7000,n2:7001')
  }
  if (
    topology !== 'sentinel' &&
    (params.sentinelUsername !== undefined || params.sentinelPassword !== undefined)
  ) {
    throw bad(
      url,
      'sentinelUsername and sentinelPassword apply only to Sentinel, and the URL names no master',
      'Add the master name: ?sentinelMasterName=mymaster (or redis+sentinel://h1:26379/mymaster).',
    )
  }

  const hosts = hostTexts.map((h) => {
    if (h === '') throw bad(url, 'the host list has an empty entry (",,")', 'Separate hosts with one comma.')
    return parseHost(h, topology === 'sentinel' && scheme.topology !== 'sentinel' ? 26379 : scheme.port, url)
  })

  return {
    topology,
    tls: scheme.tls,
    hosts,
    redacted: redactUrl(url),
    ...(username === undefined ? {} : { username }),
    ...(password === undefined ? {} : { password }),
    ...(db === undefined ? {} : { db }),
    ...(masterName === undefined ? {} : { masterName }),
    ...(params.sentinelUsername === undefined ? {} : { sentinelUsername: params.sentinelUsername }),
    ...(params.sentinelPassword === undefined ? {} : { sentinelPassword: params.sentinelPassword }),
  }
}
