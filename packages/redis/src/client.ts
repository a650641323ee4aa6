// The ioredis client RedisBackend creates from a URL: fail fast while disconnected, never re-send a script
// that may have run, reconnect with capped exponential backoff; and never let a URL that does not fit the
// server behind it (a database the server lacks, a Cluster node or a sentinel written as redis://) reach
// the wrong place: every call then fails with a ConfigError that says what to write instead.
import { ConfigError } from '@fastlimit/core'
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis'
import type { RedisUrl } from './url'

/** Reconnect delay after the `times`-th failed attempt: 50 ms doubling to 2 s, with jitter. */
export function reconnectDelay(times: number): number {
  return Math.min(50 * 2 ** Math.min(Math.max(times - 1, 0), 6), 2000) + Math.floor(Math.random() * 100)
}

/**
 * Settings of every connection RedisBackend opens. Exported for the README's advice to users who pass
 * their own client.
 */
export const CONNECTION_DEFAULTS = {
  // Off: RedisBackend already sends the calls of one tick together (it corks the socket until the
  // tick ends), and auto-pipelining would hold every call until the next turn of the event loop.
  enableAutoPipelining: false,
  // While disconnected, fail at once: FastLimit applies onBackendError instead of queueing checks
  // that would charge budget long after the request was decided.
  enableOfflineQueue: false,
  // A command in flight when the connection drops fails at once and is never re-sent: the script may
  // already have charged the bucket.
  maxRetriesPerRequest: 0,
  autoResendUnfulfilledCommands: false,
  connectTimeout: 5000,
  // TCP keepalive after 10 s idle (then Node probes every second, 10 times): an idle connection to a
  // host that vanished (no RST) closes after about 20 s instead of 40 s (ioredis's 30 s). It cannot help
  // while commands are unanswered (TCP retransmits for ~15 min) nor against a stopped process (its
  // kernel answers the probes): FastLimit's circuit breaker calls reconnect() for those.
  keepAlive: 10_000,
  connectionName: 'fastlimit',
} as const satisfies RedisOptions

/** Why the server behind a client cannot be used as its URL says, until a connection proves otherwise. */
interface Problem {
  readonly message: string
  readonly cause: unknown
}

const problems = new WeakMap<object, Problem>()

/**
 * The ConfigError of a client whose URL does not fit its server (a database it lacks, a Cluster node or
 * a sentinel written as `redis://`), found while connecting; `undefined` once a connection succeeds.
 * A new error each time, so that each call's error has its own stack.
 */
export function connectionProblem(client: Redis | Cluster): ConfigError | undefined {
  const problem = problems.get(client)
  return problem === undefined ? undefined : new ConfigError(problem.message, { cause: problem.cause })
}

// Commands whose arguments hold a password: ioredis attaches a failed command (name and arguments) to its
// error, so a refused HELLO 3 AUTH user password would carry the password into every `cause`.
const SECRET_COMMANDS = new Set(['auth', 'hello', 'migrate', 'acl', 'config'])
const NESTED = ['cause', 'lastNodeError', 'previousErrors', 'errors'] as const

/**
 * Hides the arguments of AUTH, HELLO and other commands that carry a password in an ioredis error and
 * the errors it holds (`cause`, `lastNodeError`, ...), in place.
 */
export function scrubError(err: unknown, depth = 0): void {
  if (typeof err !== 'object' || err === null || depth > 5) return
  const command = (err as { command?: { name?: unknown; args?: unknown } }).command
  if (typeof command === 'object' && command !== null && Array.isArray(command.args)) {
    const name = String(command.name).toLowerCase()
    if (SECRET_COMMANDS.has(name)) {
      // HELLO's protocol version is no secret, and says which handshake failed.
      command.args = command.args.map((arg: unknown, i: number) =>
        name === 'hello' && i === 0 ? arg : '***',
      )
    }
  }
  for (const key of NESTED) {
    const value = (err as Record<string, unknown>)[key]
    if (Array.isArray(value)) for (const e of value) scrubError(e, depth + 1)
    else scrubError(value, depth + 1)
  }
}

/** The Cluster URL of a one-host URL, for messages: `redis://h:1/0` -> `redis+cluster://h:1`. */
function clusterForm(redacted: string): string {
  return redacted
    .replace(/^((?:redis|valkey)s?):\/\/([^/?]*)\/[^?]*/i, '$1://$2')
    .replace(/^((?:redis|valkey)s?):\/\//i, '$1+cluster://')
}

function clusterProblem(url: RedisUrl, evidence: string): string {
  return (
    `[fastlimit] [redis] ${url.redacted} is a node of a Redis Cluster (${evidence}), and a redis:// URL with ` +
    'one host talks to that node alone: the keys of other nodes would fail with MOVED. Use the Cluster form: ' +
    `${clusterForm(url.redacted)} (or several nodes, redis://n1:7000,n2:7001,n3:7002). A Cluster has only database 0.`
  )
}

function sentinelProblem(url: RedisUrl, masters: readonly string[]): string {
  const name = masters[0] ?? 'mymaster'
  const host = url.hosts[0] as { host: string; port: number }
  const monitors =
    masters.length === 0
      ? 'it monitors no master yet'
      : `it monitors ${masters.map((m) => `"${m}"`).join(', ')}`
  return (
    `[fastlimit] [redis] ${url.redacted} is a Redis Sentinel (${monitors}), not a Redis server: it cannot run ` +
    `the limiter's scripts. Name the master: add ?sentinelMasterName=${name} to the URL (or the ` +
    `sentinelMasterName option), or write redis+sentinel://${host.host}:${host.port}/${name}.`
  )
}

/** The problem a failed SELECT of the URL's database means; `undefined` if it was not SELECT. */
function selectProblem(url: RedisUrl, db: unknown, err: Error): string | undefined {
  const command = (err as { command?: { name?: unknown } }).command
  if (String(command?.name).toLowerCase() !== 'select') return undefined
  const reply = err.message.replace(/\.+$/, '')
  if (/cluster mode/i.test(reply)) return clusterProblem(url, reply)
  if (/unknown command/i.test(reply)) {
    return (
      `[fastlimit] [redis] ${url.redacted} does not know SELECT (${reply}), so database ${db} cannot be used: ` +
      'is it a Redis Sentinel (then name the master with ?sentinelMasterName=) or a proxy without databases? ' +
      'Remove the database from the URL, or point it at a Redis server.'
    )
  }
  return (
    `[fastlimit] [redis] Redis refused database ${db} of ${url.redacted} (${reply}): the server has fewer ` +
    'databases (its `databases` setting, 16 by default; a Cluster has only database 0). Use a database it has, ' +
    'or raise `databases` in its redis.conf. No call uses another database meanwhile.'
  )
}

/**
 * Keeps a client of `url` off every server its URL does not fit. While a connection is set up, before
 * any call may use it:
 * - a failed SELECT (a database the server lacks) closes the connection, where ioredis would go on with
 *   database 0; each reconnection tries again;
 * - for a one-host `redis://` URL, the ready check's INFO tells a Cluster node (`cluster_enabled:1`) or a
 *   sentinel (`redis_mode:sentinel`) apart from a Redis server, and closes the connection.
 * Calls meanwhile fail with {@link connectionProblem}'s ConfigError; a connection that gets ready clears it.
 */
function guard(client: Redis, url: RedisUrl): void {
  const fail = (message: string, cause: unknown) => {
    problems.set(client, { message, cause })
  }
  client.on('error', (err: Error) => {
    const message = selectProblem(url, client.options.db, err)
    if (message === undefined) return
    fail(message, err)
    // Before 'ready' (the handshake waits for SELECT): no call has used this connection.
    client.disconnect(true)
  })
  client.on('ready', () => {
    problems.delete(client)
  })
  if (url.topology !== 'standalone') return
  // ioredis's ready check sends INFO and asks its connector whether the server will do; a connector
  // that says no closes the connection and reconnects later (with retryStrategy's backoff).
  const connector = (
    client as unknown as { connector?: { check?: (info: Record<string, string>) => boolean } }
  ).connector
  const check = connector?.check
  if (connector === undefined || typeof check !== 'function') return
  connector.check = function (this: unknown, info: Record<string, string>): boolean {
    let message: string | undefined
    if (info.cluster_enabled === '1') message = clusterProblem(url, 'INFO says cluster_enabled:1')
    else if (info.redis_mode === 'sentinel') {
      const masters: string[] = []
      for (const [field, value] of Object.entries(info)) {
        const m = /^master\d+$/.test(field) ? /(?:^|,)name=([^,]*)/.exec(value) : null
        if (m) masters.push(m[1] as string)
      }
      message = sentinelProblem(url, masters)
    }
    if (message === undefined) return check.call(this, info)
    const err = new ConfigError(message)
    fail(message, undefined)
    // The calls waiting for this connection learn why at once (RedisBackend listens to 'error').
    if (client.listenerCount('error') > 0) client.emit('error', err)
    return false
  }
}

/**
 * A ConfigError for an error that shows the URL does not fit the server (recorded while connecting, or a
 * reply only a Cluster node or a sentinel gives), else `undefined`. Hides passwords in `err` first.
 */
export function explain(client: Redis | Cluster, err: unknown, where: string): ConfigError | undefined {
  scrubError(err)
  const recorded = connectionProblem(client)
  if (recorded !== undefined) return recorded
  const message = err instanceof Error ? err.message.replace(/\.+$/, '') : ''
  if (!client.isCluster && /^(MOVED|ASK) \d+ /.test(message)) {
    return new ConfigError(
      `[fastlimit] [redis] ${where} answered ${message.split(' ')[0]}: it is a node of a Redis Cluster, and this ` +
        'client talks to that node alone. Give RedisBackend a Cluster: a redis+cluster:// URL, several nodes ' +
        '(redis://n1:7000,n2:7001,n3:7002), or an ioredis Cluster client.',
      { cause: err },
    )
  }
  if (!client.isCluster && /unknown command .?(eval|evalsha)\b/i.test(message)) {
    return new ConfigError(
      `[fastlimit] [redis] ${where} does not run scripts (${message}). A Redis Sentinel? Name the master ` +
        'with ?sentinelMasterName=<name> (or the sentinelMasterName option), or use redis+sentinel://host:26379/<name>. ' +
        'A Redis with EVAL disabled? RedisBackend needs EVAL and EVALSHA.',
      { cause: err },
    )
  }
  const nodeMessage = String(
    (err as { lastNodeError?: { message?: unknown } } | null)?.lastNodeError?.message,
  )
  // Several hosts in a redis:// URL are a Cluster: standalone servers answer that they are none, and
  // sentinels do not know CLUSTER.
  if (
    client.isCluster &&
    /cluster support disabled|unknown command .?cluster\b/i.test(`${message} ${nodeMessage}`)
  ) {
    return new ConfigError(
      `[fastlimit] [redis] ${where} is not a Redis Cluster (${nodeMessage.replace(/\.+$/, '')}). For sentinels, ` +
        'name the master: add ?sentinelMasterName=<name>; for one server, give one host: redis://host:6379.',
      { cause: err },
    )
  }
  return undefined
}

/** Creates the client of a parsed URL; `redisOptions` and `clusterOptions` override the defaults. */
export function createClient(
  url: RedisUrl,
  redisOptions: RedisOptions = {},
  clusterOptions: ClusterOptions = {},
): Redis | Cluster {
  const auth: RedisOptions = {
    ...(url.username === undefined ? {} : { username: url.username }),
    ...(url.password === undefined ? {} : { password: url.password }),
  }
  const tls = url.tls ? { tls: {} } : {}
  if (url.topology === 'cluster') {
    // Node connections: the Cluster owns their offline queue and reconnects.
    const { enableOfflineQueue: _cluster, ...nodeDefaults } = CONNECTION_DEFAULTS
    const cluster = new Cluster(
      url.hosts.map((h) => ({ host: h.host, port: h.port })),
      {
        enableAutoPipelining: false,
        enableOfflineQueue: false,
        // A command whose node connection closed may have run: do not re-send it to the new master.
        retryDelayOnFailover: 0,
        clusterRetryStrategy: reconnectDelay,
        ...clusterOptions,
        redisOptions: { ...nodeDefaults, ...auth, ...tls, ...redisOptions, ...clusterOptions.redisOptions },
      },
    )
    // Registered first: errors are scrubbed before any other listener sees them.
    cluster.on('error', (err: unknown) => scrubError(err))
    cluster.on('node error', (err: unknown) => scrubError(err))
    return cluster
  }
  const first = url.hosts[0] as { host: string; port: number }
  const common: RedisOptions = {
    ...CONNECTION_DEFAULTS,
    retryStrategy: reconnectDelay,
    ...auth,
    ...tls,
    ...(url.db === undefined ? {} : { db: url.db }),
  }
  const client =
    url.topology === 'sentinel'
      ? new Redis({
          ...common,
          sentinels: url.hosts.map((h) => ({ host: h.host, port: h.port })),
          name: url.masterName as string,
          // Listen to the sentinels' +switch-master and reconnect at once: after a failover the old master
          // may stay a master (and take writes that its demotion then discards) until the sentinels
          // reconfigure it.
          failoverDetector: true,
          ...(url.sentinelUsername === undefined ? {} : { sentinelUsername: url.sentinelUsername }),
          ...(url.sentinelPassword === undefined ? {} : { sentinelPassword: url.sentinelPassword }),
          ...(url.tls ? { enableTLSForSentinelMode: true, sentinelTLS: {} } : {}),
          ...redisOptions,
        })
      : new Redis({ ...common, host: first.host, port: first.port, ...redisOptions })
  client.on('error', (err: unknown) => scrubError(err))
  guard(client, url)
  return client
}
