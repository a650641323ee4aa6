// The ioredis client RedisBackend creates from a URL: fail fast while disconnected,
// never re-send a script that may have run, reconnect with capped exponential backoff.
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
  connectionName: 'fastlimit',
} as const satisfies RedisOptions

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
    return new Cluster(
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
  }
  const first = url.hosts[0] as { host: string; port: number }
  const common: RedisOptions = {
    ...CONNECTION_DEFAULTS,
    retryStrategy: reconnectDelay,
    ...auth,
    ...tls,
    ...(url.db === undefined ? {} : { db: url.db }),
  }
  if (url.topology === 'sentinel') {
    return new Redis({
      ...common,
      sentinels: url.hosts.map((h) => ({ host: h.host, port: h.port })),
      name: url.masterName as string,
      // Listen to the sentinels' +switch-master and reconnect at once: after a failover the old master may
      // stay a master (and take writes that its demotion then discards) until the sentinels reconfigure it.
      failoverDetector: true,
      ...(url.sentinelUsername === undefined ? {} : { sentinelUsername: url.sentinelUsername }),
      ...(url.sentinelPassword === undefined ? {} : { sentinelPassword: url.sentinelPassword }),
      ...(url.tls ? { enableTLSForSentinelMode: true, sentinelTLS: {} } : {}),
      ...redisOptions,
    })
  }
  return new Redis({ ...common, host: first.host, port: first.port, ...redisOptions })
}
