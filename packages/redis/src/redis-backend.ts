// RedisBackend: the Backend protocol on a Redis client (ioredis, iovalkey, node-redis, Valkey GLIDE); every
// decision is one atomic Lua script on one Redis key.
import {
  type AcquireResult,
  ALGORITHMS,
  type Backend,
  type BackendResult,
  type BucketConfig,
  bucketId,
  type CallOptions,
  type Charge,
  ConfigError,
  checkLeaseArguments,
  FastlimitError,
  RETRY_NEVER,
  type SlotConfig,
} from '@fastlimit/core'
import type { Cluster, ClusterOptions, Redis, RedisOptions } from 'ioredis'
import { createClient } from './client'
import { clientKind, type Driver, NOT_MASTER, type RedisClient } from './driver'
import { driverFor } from './drivers'
import { keyNamespace, prefixPattern, redisKey } from './keys'
import { acquireScript, leaseKey, RELEASE_SCRIPT, readAcquire, readRelease } from './leases'
import { type ScriptDefinition, scriptFor } from './scripts'
import { parseRedisUrl } from './url'

/**
 * Where the scripts read the time: `'server'`, the Redis server's `TIME` (one clock for every app
 * server), or `'client'`, the `clock` option of each process.
 */
export type RedisTimeSource = 'server' | 'client'

/** The `waitReplicas` option: Redis `WAIT replicas timeoutMs` after the calls that may charge. */
export interface RedisWaitReplicas {
  /** How many replicas must have acknowledged the write: a whole number from 1. */
  readonly replicas: number
  /** The most to wait for them, in milliseconds: a whole number from 1 (`WAIT 0` would wait forever). */
  readonly timeoutMs: number
}

/** Options of {@link RedisBackend}. Give `client` or `url`. */
export interface RedisBackendOptions<C extends RedisClient = RedisClient> {
  /**
   * A client you already have, connected or connecting: an ioredis or iovalkey `Redis` (standalone or
   * Sentinel) or `Cluster`, a node-redis (`redis` v5 or later) client from `createClient` or
   * `createCluster` (call `connect()` first), or a Valkey GLIDE `GlideClient` or `GlideClusterClient`.
   * The kind is told from the object's members (see the README: Clients). RedisBackend never closes it:
   * `close()` leaves it open for you, but `reconnect()` (called by FastLimit's circuit breaker) drops its
   * connection and connects it again (ioredis, iovalkey, node-redis; GLIDE reconnects by itself), and a
   * reply from a replica (`READONLY`) does the same. See the README for the settings we recommend (no
   * offline queue, no re-sent commands). With ioredis's `enableAutoPipelining` on, calls join its
   * auto-pipeline. It must not have an ioredis `keyPrefix`; use this backend's `keyPrefix` instead.
   * @default undefined (give `url` instead)
   */
  client?: C
  /**
   * Where to connect, when you give no `client`: `redis://[[user]:password@]host[:port][/db]` (one
   * server), `redis://n1:7000,n2:7001,n3:7002` (a Cluster), `redis://s1:26379,s2:26379/0?sentinelMasterName=mymaster`
   * (Sentinel), `redis+sentinel://s1:26379,s2:26379/mymaster[/db]`, `redis+cluster://n1:7000,n2:7001`,
   * and `rediss...` of each for TLS. Percent-encode `@ / ? # % :` in a password. RedisBackend creates
   * the client, and `close()` closes it. A one-host `redis://` URL that reaches a Cluster node or a
   * sentinel, or a database the server lacks, fails every call with a ConfigError saying what to write.
   * @default undefined (give `client` instead)
   */
  url?: string
  /**
   * The Sentinel master name, for a `redis://` URL whose hosts are sentinels (the URL may give it as
   * `?sentinelMasterName=` or `?sentinel_master=` instead). Only with `url`.
   * @default undefined (the URL says whether it is Sentinel)
   */
  sentinelMasterName?: string
  /**
   * Names this backend's keys: each Redis key is `keyPrefix + "::" + key` (one trailing ":" of keyPrefix
   * is dropped, so `'myapp:'` is `'myapp'`). 1 to 64 printable ASCII characters without spaces, braces or
   * "::". Backends with different keyPrefixes never share a key, and `clear()` deletes only this one's.
   * @default 'fastlimit'
   */
  keyPrefix?: string
  /**
   * `'server'`: scripts read the Redis server's `TIME`, so app servers whose clocks disagree still
   * share one limit exactly. `'client'`: each call passes `clock()`; for tests with a fake clock, and
   * for managed Redis services that refuse `TIME` in scripts. Then app servers whose clocks are up to
   * `maxClockSkewMs` apart share one limit within a stated bound (see `maxClockSkewMs`). Either way a
   * call's deadline is compared with the server's `TIME` (see the README: Deadlines: no late charges).
   * @default 'server'
   */
  timeSource?: RedisTimeSource
  /**
   * The clock of `timeSource: 'client'`, in epoch milliseconds. Not allowed with `'server'`.
   * @default Date.now
   */
  clock?: () => number
  /**
   * With `timeSource: 'client'`: how far apart your app servers' clocks may be. A state that another
   * server wrote up to this far ahead of this server's clock is kept as it lies (this server counts
   * from it and waits on its own clock); one further ahead means this clock stepped back, and it moves
   * back to now. Clocks `S <= maxClockSkewMs` apart share one limit with at most, over any `d` ms, what
   * one clock would admit over `d + S` ms (gcra, token and leaky bucket: `burst + limit * (d + S) /
   * windowMs`; fixed and sliding window: `limit` per aligned window, `limit * (ceil((d + S) / windowMs)
   * + 1)`); beyond it the limit does not hold. A clock that steps back by less than this makes its
   * server wait up to the step on full keys. Keys also outlive their state by at least this much (it
   * raises `expiryMarginMs`). 0 to 3,600,000; not allowed with `'server'`.
   * @default 300000 (5 minutes)
   */
  maxClockSkewMs?: number
  /**
   * Milliseconds a key outlives at least its last bucket: a write that finds the key's expiry less than
   * this margin past the time its longest-lived bucket is empty extends it to twice the margin past
   * that time (so most writes skip the `PEXPIRE`); an expiry is never shortened. A state kept longer
   * is harmless (an expired state reads as empty), one dropped early would forget counts; the margin
   * absorbs the difference between the clock that computed the state and Redis's own expiry clock.
   * With `timeSource: 'client'`, the margin used is at least `maxClockSkewMs`.
   * @default 1000
   */
  expiryMarginMs?: number
  /**
   * ioredis options for the client created from `url`, over RedisBackend's defaults
   * (e.g. `{ tls: { ca } }`, `{ connectTimeout: 2000 }`). Not allowed with `client`.
   * @default {}
   */
  redisOptions?: RedisOptions
  /**
   * ioredis Cluster options for the client created from a `redis+cluster://` URL, over RedisBackend's
   * defaults (e.g. `{ natMap }`). Not allowed with `client`.
   * @default {}
   */
  clusterOptions?: ClusterOptions
  /**
   * After the calls that may charge, wait until `replicas` replicas have their writes (Redis
   * `WAIT replicas timeoutMs`, one per connection for the calls written together), at most `timeoutMs`,
   * before answering. An admission that fewer replicas acknowledged in time rejects with
   * `ERR_FASTLIMIT_BACKEND` (the master charged it, but a failover now could lose that), so FastLimit
   * applies `onBackendError`; a denial stands. An admission answered after its replicas acknowledged it
   * survives a failover to one of them (Sentinel promotes the most up-to-date replica). `WAIT` does not
   * make Redis strongly consistent: a replica that restarts empty loses what it acknowledged, and a
   * failover may promote another one. Each call takes about one replica round trip longer (see the
   * README: Replication and failover). Not available with auto-pipelining.
   * @default false (asynchronous replication, as Redis does by default)
   */
  waitReplicas?: RedisWaitReplicas | false
}

const KNOWN = [
  'client',
  'url',
  'sentinelMasterName',
  'keyPrefix',
  'timeSource',
  'clock',
  'maxClockSkewMs',
  'expiryMarginMs',
  'redisOptions',
  'clusterOptions',
  'waitReplicas',
]

const MAX_MARGIN_MS = 24 * 60 * 60 * 1000
const MAX_SKEW_MS = 60 * 60 * 1000
const DEFAULT_SKEW_MS = 5 * 60 * 1000

/** Formats a value for an error message. */
function show(value: unknown): string {
  let text: string
  if (typeof value === 'string') text = JSON.stringify(value)
  else if (typeof value === 'function') text = 'a function'
  else if (typeof value === 'object' && value !== null) text = Array.isArray(value) ? 'an array' : 'an object'
  else text = String(value)
  return text.length > 80 ? `${text.slice(0, 77)}...` : text
}

/** What the script needs of a bucket, computed once per rule object. */
interface Prepared {
  /** The hash field of the bucket's state: `bucketId(bucket)`. */
  readonly field: string
  /** `algorithm:limit:windowMs:burst`, or '' when the field is exactly that (the script parses the field). */
  readonly conf: string
  /** The `limit` of its results: `burst` for the bucket algorithms, else `limit`. */
  readonly limit: number
}

const METERS = new Set<string>(['gcra', 'token-bucket', 'leaky-bucket'])

/** Rules are frozen objects used for every call: prepare each once. */
const prepared = new WeakMap<BucketConfig, Prepared>()

function prepare(bucket: BucketConfig): Prepared {
  let p = prepared.get(bucket)
  if (p !== undefined) return p
  const meter = METERS.has(bucket.algorithm)
  if (!meter && !ALGORITHMS.includes(bucket.algorithm)) {
    throw new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [redis] Unknown algorithm ${show(bucket.algorithm)}: build buckets with parseRule from @fastlimit/core.`,
    )
  }
  const burst = bucket.burst ?? bucket.limit
  const conf = `${bucket.algorithm}:${bucket.limit}:${bucket.windowMs}:${burst}`
  const field = bucketId(bucket)
  p = { field, conf: field === conf ? '' : conf, limit: meter ? burst : bucket.limit }
  // A mutable object may change between calls: only a frozen one (every parseRule rule) is cached.
  if (Object.isFrozen(bucket)) prepared.set(bucket, p)
  return p
}

/** The reply of a call that reached Redis past its deadline: `late:<server now>:<server deadline>`. */
const LATE = /^late:(\d+):(-?\d+)$/

/** A script reply that is not a result: a call applied past its deadline, or something unexpected. */
function notAResult(reply: unknown, what: string): FastlimitError {
  const late = typeof reply === 'string' ? LATE.exec(reply) : null
  if (late !== null) {
    const by = Number(late[1]) - Number(late[2])
    return new FastlimitError(
      'ERR_FASTLIMIT_TIMEOUT',
      `[fastlimit] [redis] ${what} was applied ${by} ms past its deadline; nothing was ${what === 'adjust' ? 'changed' : 'charged'}. The limiter ` +
        'had already given up on it (timeoutMs) and applied its onBackendError policy: Redis is slow to answer ' +
        '(check LATENCY DOCTOR, SLOWLOG and the network), or timeoutMs is too short for it.',
    )
  }
  return new FastlimitError(
    'ERR_FASTLIMIT_BACKEND',
    `[fastlimit] [redis] Unexpected script reply ${show(reply)}: is the client in a special mode (subscriber, MULTI)? ` +
      'Give RedisBackend a client of its own.',
  )
}

// The 4 integers of one result, read from a reply (synchronously: shared by every call).
const values = new Float64Array(4)

/**
 * Reads the 4 integers of one result at `at` in a script's reply (allowed 1/0, remaining, resetMs,
 * retryAfterMs or -1 for never, joined by commas) into `values`. Returns where the next result starts
 * (after a comma), the reply's length after the last one, or -1 if the text is anything else.
 */
function read(text: string, at: number): number {
  for (let j = 0; j < 4; j++) {
    let c = text.charCodeAt(at)
    const negative = c === 45
    if (negative) c = text.charCodeAt(++at)
    const first = at
    let n = 0
    while (c >= 48 && c <= 57) {
      n = n * 10 + (c - 48)
      c = text.charCodeAt(++at)
    }
    // Whole numbers below 2^53 (16 digits at most).
    if (at === first || at - first > 16) return -1
    values[j] = negative ? -n : n
    if (c === 44) at++
    else return j === 3 && at === text.length ? at : -1
  }
  return at
}

/**
 * The result in `values`; `limit` is the bucket's (`burst` for the bucket algorithms), known here.
 * `charged`: the result of a check that charged, whose fourth integer is not its retryAfterMs (0) but the
 * time the script stepped with, its `atMs` (for a reservation's Charge), and whose third is its resetMs
 * less that time (fewer digits for the script to print).
 */
function result(reply: string, limit: number, charged: boolean, what: string): BackendResult {
  const allowed = values[0] as number
  const retry = values[3] as number
  if (allowed !== 0 && allowed !== 1) throw notAResult(reply, what)
  if (charged) {
    return {
      allowed: true,
      limit,
      remaining: values[1] as number,
      resetMs: (values[2] as number) + retry,
      retryAfterMs: 0,
      atMs: retry,
    }
  }
  return {
    allowed: allowed === 1,
    limit,
    remaining: values[1] as number,
    resetMs: values[2] as number,
    retryAfterMs: retry === -1 ? RETRY_NEVER : retry,
  }
}

/** The one result of a one-bucket reply (`check`: of a check, whose admitting result carries atMs). */
function readOne(reply: unknown, limit: number, check: boolean, what: string): BackendResult {
  if (typeof reply !== 'string' || read(reply, 0) !== reply.length) throw notAResult(reply, what)
  return result(reply, limit, check && values[0] === 1, what)
}

/**
 * The results of a several-bucket reply, one per limit. `check`: of a check, whose results carry atMs
 * when it admitted (all of them: a denied check's buckets that would have admitted charged nothing).
 */
function readAll(reply: unknown, limits: readonly number[], check: boolean, what: string): BackendResult[] {
  if (typeof reply !== 'string') throw notAResult(reply, what)
  // A check that admitted admitted every bucket (all or nothing): read the flags first.
  let charged = check
  for (let i = 0, at = 0; charged && i < limits.length; i++) {
    at = read(reply, at)
    if (at < 0 || values[0] !== 1) charged = false
  }
  const results: BackendResult[] = new Array(limits.length)
  let at = 0
  for (let i = 0; i < limits.length; i++) {
    at = read(reply, at)
    // Every result but the last ends with a comma.
    if (at < 0 || (at === reply.length) !== (i === limits.length - 1)) throw notAResult(reply, what)
    results[i] = result(reply, limits[i] as number, charged, what)
  }
  return results
}

function checkCost(cost: unknown): void {
  if (typeof cost !== 'number' || !Number.isSafeInteger(cost) || cost < 1) {
    throw new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [redis] cost must be a positive whole number, got ${show(cost)}.`,
    )
  }
}

function checkDelta(delta: unknown): void {
  if (typeof delta !== 'number' || !Number.isSafeInteger(delta)) {
    throw new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [redis] delta must be a whole number (negative refunds, positive charges more), got ${show(delta)}.`,
    )
  }
}

function isWhole(n: unknown): boolean {
  return typeof n === 'number' && Number.isSafeInteger(n)
}

/**
 * The charges argument of an adjustment: '' for none, else `cost,resetMs,atMs` of each bucket joined by
 * commas (atMs '' when unknown).
 */
function chargesArg(charges: readonly Charge[] | undefined, count: number): string {
  if (charges === undefined) return ''
  if (!Array.isArray(charges) || charges.length !== count) {
    throw new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [redis] charges must be undefined or one charge per bucket (${count}), got ${show(charges)}.`,
    )
  }
  const parts: string[] = []
  for (const charge of charges as readonly unknown[]) {
    const c = charge as Partial<Charge> | null
    if (
      typeof c !== 'object' ||
      c === null ||
      !isWhole(c.cost) ||
      (c.cost as number) < 1 ||
      !isWhole(c.resetMs) ||
      (c.atMs !== undefined && !isWhole(c.atMs))
    ) {
      throw new FastlimitError(
        'ERR_FASTLIMIT_ARGUMENT',
        `[fastlimit] [redis] Each charge must be { cost, resetMs, atMs? } with whole numbers (cost from 1), as an ` +
          `admitting result gives them, got ${show(charge)}.`,
      )
    }
    parts.push(String(c.cost), String(c.resetMs), c.atMs === undefined ? '' : String(c.atMs))
  }
  return parts.join(',')
}

function checkKey(key: unknown): void {
  if (typeof key !== 'string') {
    throw new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [redis] key must be a string, got ${show(key)}.`,
    )
  }
}

/** The deadline of a call's options (undefined for none). */
function deadlineOf(options: CallOptions | undefined): number | undefined {
  if (options === undefined || options === null) return undefined
  const deadline = (options as CallOptions).deadline
  if (deadline === undefined) return undefined
  if (typeof deadline !== 'number' || !Number.isFinite(deadline)) {
    throw new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [redis] options.deadline must be epoch milliseconds (Date.now() + a timeout), got ${show(deadline)}.`,
    )
  }
  return deadline
}

/** The error of a call whose deadline passed before it could be sent: nothing was sent. */
function expired(what: string): FastlimitError {
  return new FastlimitError(
    'ERR_FASTLIMIT_TIMEOUT',
    `[fastlimit] [redis] ${what} was not sent: its deadline passed while it waited for the connection; ` +
      `nothing was ${what === 'adjust' ? 'changed' : 'charged'}.`,
  )
}

/** Whether a script reply admitted (and so charged): one bucket, or all of several (all or nothing). */
function admitted(reply: unknown): boolean {
  if (typeof reply !== 'string') return false
  const parts = reply.split(',')
  for (let i = 0; i < parts.length; i += 4) if (parts[i] !== '1') return false
  return parts.length >= 4
}

/**
 * The Redis backend: every decision is one Lua script (a port of the algorithm's `step` from core), run
 * atomically on the Redis server, so any number of processes share one limit exactly. Works with
 * standalone Redis, Sentinel and Cluster.
 *
 * - Storage: one Redis hash per key (`keyPrefix + key`), one field per bucket (`bucketId`), its value the
 *   algorithm's state; the key expires (`PEXPIRE`) once its longest-lived bucket is empty (plus
 *   `expiryMarginMs` to twice that).
 * - Time: the Redis server's clock by default (`timeSource`).
 * - Deadlines: a call's `options.deadline` goes to the script, converted to the server's clock; a call
 *   that reaches Redis after it charges nothing and rejects with `ERR_FASTLIMIT_TIMEOUT`.
 * - Cluster: each call touches exactly one Redis key, so it always runs in one slot. Keys built by
 *   `FastLimit` carry the identity as hash tag (`prefix:{identity}`).
 *
 * @example
 * ```ts
 * import { FastLimit } from '@fastlimit/core'
 * import { RedisBackend } from '@fastlimit/redis'
 *
 * const limiter = new FastLimit({ backend: RedisBackend.fromUrl(process.env.REDIS_URL!) })
 * const decision = await limiter.check(userId, '100/min')
 * ```
 */
export class RedisBackend<C extends RedisClient = Redis | Cluster> implements Backend {
  /**
   * Creates a backend that connects to `url` (and closes that connection on `close()`). Takes every form
   * of the `url` option: `redis://` and `rediss://` with one host (a server), several hosts (a Cluster),
   * or sentinels with `?sentinelMasterName=` / `?sentinel_master=` / the `sentinelMasterName` option;
   * `redis+sentinel://`, `redis+cluster://` and their `rediss+` forms; `valkey...` as `redis...`.
   *
   * @throws ConfigError for a bad URL or option (naming the wrong part, never the password)
   */
  static fromUrl(
    url: string,
    options: Omit<RedisBackendOptions, 'url' | 'client'> = {},
  ): RedisBackend<Redis | Cluster> {
    return new RedisBackend({ ...options, url })
  }

  /** The kind of store, for messages and metrics. */
  readonly kind = 'redis'

  // Plain (TypeScript) private fields, not #private: a Proxy or a delegating wrapper calls these methods
  // with itself as `this`, and #private fields would throw for it.
  /** The client, behind the one interface every command goes through. */
  private readonly driver: Driver
  /** The script of every call. */
  private readonly script: ScriptDefinition
  /** The expiry margin of keys (in the scripts' text). */
  private readonly marginMs: number
  private readonly sha: string
  private readonly prefix: string
  private readonly clock: (() => number) | undefined
  private readonly where: string
  private closed = false
  private closing: Promise<void> | undefined
  private lastError: Error | undefined

  /**
   * @throws ConfigError for a bad option, a bad URL (naming the wrong part), both or neither of
   *   `client` and `url`
   */
  constructor(options: RedisBackendOptions<C>) {
    if (typeof options !== 'object' || options === null) {
      throw new ConfigError(
        `[fastlimit] [redis] RedisBackend takes an options object, got ${show(options)}. ` +
          'For example new RedisBackend({ url: "redis://localhost:6379" }).',
      )
    }
    for (const key of Object.keys(options)) {
      if (!KNOWN.includes(key)) {
        throw new ConfigError(
          `[fastlimit] [redis] Unknown option ${show(key)}: RedisBackend takes ${KNOWN.join(', ')}.`,
        )
      }
    }
    const {
      client,
      url,
      sentinelMasterName,
      keyPrefix = 'fastlimit',
      timeSource = 'server',
      clock,
      maxClockSkewMs,
      expiryMarginMs = 1000,
      redisOptions,
      clusterOptions,
      waitReplicas = false,
    } = options
    this.prefix = keyNamespace(keyPrefix)
    if (timeSource !== 'server' && timeSource !== 'client') {
      throw new ConfigError(
        `[fastlimit] [redis] timeSource must be 'server' or 'client', got ${show(timeSource)}. ` +
          `'server' (the default) reads the Redis server's TIME.`,
      )
    }
    if (clock !== undefined && typeof clock !== 'function') {
      throw new ConfigError(
        `[fastlimit] [redis] clock must be a function returning epoch milliseconds, got ${show(clock)}. For example Date.now.`,
      )
    }
    if (clock !== undefined && timeSource !== 'client') {
      throw new ConfigError(
        `[fastlimit] [redis] clock is used only with timeSource: 'client' (the scripts read the Redis server's TIME ` +
          `by default). Add timeSource: 'client', or remove clock.`,
      )
    }
    if (maxClockSkewMs !== undefined) {
      if (timeSource !== 'client') {
        throw new ConfigError(
          `[fastlimit] [redis] maxClockSkewMs is used only with timeSource: 'client' (with the Redis server's TIME ` +
            `every call reads one clock). Add timeSource: 'client', or remove maxClockSkewMs.`,
        )
      }
      if (
        typeof maxClockSkewMs !== 'number' ||
        !Number.isSafeInteger(maxClockSkewMs) ||
        maxClockSkewMs < 0 ||
        maxClockSkewMs > MAX_SKEW_MS
      ) {
        throw new ConfigError(
          `[fastlimit] [redis] maxClockSkewMs must be a whole number of milliseconds from 0 to ${MAX_SKEW_MS}, ` +
            `got ${show(maxClockSkewMs)}. For example 300000 (5 minutes).`,
        )
      }
    }
    if (
      typeof expiryMarginMs !== 'number' ||
      !Number.isSafeInteger(expiryMarginMs) ||
      expiryMarginMs < 0 ||
      expiryMarginMs > MAX_MARGIN_MS
    ) {
      throw new ConfigError(
        `[fastlimit] [redis] expiryMarginMs must be a whole number of milliseconds from 0 to ${MAX_MARGIN_MS}, ` +
          `got ${show(expiryMarginMs)}. For example 1000.`,
      )
    }
    const checkedWait = checkWaitReplicas(waitReplicas)
    let owned: boolean
    let created: Redis | Cluster | undefined
    let where: string | undefined
    if (client !== undefined && url !== undefined) {
      throw new ConfigError(
        '[fastlimit] [redis] Give client or url, not both: url creates a client of its own.',
      )
    }
    if (client !== undefined) {
      if (sentinelMasterName !== undefined) {
        throw new ConfigError(
          '[fastlimit] [redis] sentinelMasterName applies only to the client created from url; ' +
            'give your own client its sentinels and name instead.',
        )
      }
      if (redisOptions !== undefined || clusterOptions !== undefined) {
        throw new ConfigError(
          '[fastlimit] [redis] redisOptions and clusterOptions apply only to the client created from url; ' +
            'set them on your own client instead.',
        )
      }
      const kind = clientKind(client)
      if (kind === undefined) {
        throw new ConfigError(
          `[fastlimit] [redis] client must be an ioredis or iovalkey Redis or Cluster, a node-redis client or ` +
            `Cluster (createClient, createCluster), or a Valkey GLIDE client, got ${show(client)}. For example ` +
            'new Redis("redis://localhost:6379"), or pass url instead. A node-redis pool or createSentinel client ' +
            'is not supported: pass a createClient client, or for Sentinel an ioredis client or a redis+sentinel:// URL.',
        )
      }
      if (kind === 'ioredis' && (client as { options?: { keyPrefix?: unknown } }).options?.keyPrefix) {
        throw new ConfigError(
          '[fastlimit] [redis] The client has an ioredis keyPrefix, which SCAN in clear() would not see. ' +
            "Give RedisBackend a client without keyPrefix (client.duplicate({ keyPrefix: '' })) and set " +
            "RedisBackend's keyPrefix option instead.",
        )
      }
      owned = false
    } else if (url !== undefined) {
      const parsed = parseRedisUrl(url, { sentinelMasterName })
      if (redisOptions !== undefined && (typeof redisOptions !== 'object' || redisOptions === null)) {
        throw new ConfigError(
          `[fastlimit] [redis] redisOptions must be an object, got ${show(redisOptions)}.`,
        )
      }
      if (clusterOptions !== undefined) {
        if (typeof clusterOptions !== 'object' || clusterOptions === null) {
          throw new ConfigError(
            `[fastlimit] [redis] clusterOptions must be an object, got ${show(clusterOptions)}.`,
          )
        }
        if (parsed.topology !== 'cluster') {
          throw new ConfigError(
            '[fastlimit] [redis] clusterOptions apply only to a Cluster URL (redis+cluster://, or redis:// with ' +
              'several hosts); use redisOptions instead.',
          )
        }
      }
      created = createClient(parsed, redisOptions, clusterOptions)
      owned = true
      where = parsed.redacted
      // Errors surface through the calls that fail; keep the last one for their messages.
      created.on('error', (err: Error) => {
        this.lastError = err
      })
    } else {
      throw new ConfigError(
        '[fastlimit] [redis] Give client (an ioredis, iovalkey, node-redis or Valkey GLIDE client) or url, e.g. ' +
          'new RedisBackend({ url: "redis://localhost:6379" }) or RedisBackend.fromUrl(process.env.REDIS_URL).',
      )
    }
    this.clock = timeSource === 'client' ? (clock ?? Date.now) : undefined
    // One script for every call, with the expiry margin in its text.
    // With client time, states from clocks up to maxClockSkewMs ahead are kept, and so are their keys.
    const skew = timeSource === 'client' ? (maxClockSkewMs ?? DEFAULT_SKEW_MS) : 0
    this.marginMs = Math.max(expiryMarginMs, skew)
    const script: ScriptDefinition = scriptFor(this.marginMs, skew)
    this.script = script
    this.sha = script.sha
    this.driver = driverFor((created ?? client) as RedisClient, {
      owned,
      script,
      waitReplicas: checkedWait,
      admitted,
    })
    this.where = where ?? this.driver.where
  }

  /** The client in use: yours, or the ioredis client created from `url`. */
  get client(): C {
    return this.driver.client as C
  }

  /**
   * The time argument of a script: '' lets the script read the server's TIME. A clock that throws
   * fails the call `what`.
   */
  private now(what: string): string {
    if (this.clock === undefined) return ''
    try {
      const now = Math.floor(this.clock())
      if (!Number.isSafeInteger(now) || now < 0) {
        throw new ConfigError(
          `[fastlimit] [redis] clock() must return epoch milliseconds, got ${show(now)}. For example Date.now.`,
        )
      }
      return String(now)
    } catch (err) {
      throw this.wrap(err, what)
    }
  }

  private closedError(): FastlimitError {
    return new FastlimitError(
      'ERR_FASTLIMIT_CLOSED',
      '[fastlimit] [redis] This RedisBackend was closed; create a new one.',
    )
  }

  private wrap(err: unknown, what: string): FastlimitError {
    if (err instanceof FastlimitError) return err
    // A URL that does not fit its server (a database it lacks, a Cluster node, a sentinel); passwords hidden.
    const misfit = this.driver.explain(err, this.where)
    if (misfit !== undefined) return misfit
    const message = (err instanceof Error ? err.message : String(err)).replace(/\.+$/, '')
    let hint = `Check that ${this.where} is reachable; FastLimit applies its onBackendError policy meanwhile.`
    if (/\bOOM\b/.test(message)) {
      return new FastlimitError(
        'ERR_FASTLIMIT_STORE_FULL',
        `[fastlimit] [redis] ${what} failed: ${this.where} is full (${message}). No limit can be charged until it ` +
          'has room: FastLimit applies its onBackendError policy meanwhile. Give the limiter a Redis of its own ' +
          'with maxmemory sized for every key (see the @fastlimit/redis README: A full Redis), or raise maxmemory.',
        { cause: err },
      )
    }
    if (/\bTIME\b/.test(message) || /not allowed from script/i.test(message)) {
      hint =
        "This Redis refuses TIME in scripts: use timeSource: 'client' and keep your servers' clocks in sync."
    } else if (/WRONGTYPE/.test(message)) {
      hint = 'Another application wrote a key under this keyPrefix: give RedisBackend a keyPrefix of its own.'
    } else if (/NOPERM|NOAUTH|WRONGPASS/.test(message)) {
      hint =
        'Check the user name and password, and that the user may run EVAL, EVALSHA, TIME, HGET, HMGET, HSET, PTTL and PEXPIRE.'
    } else if (NOT_MASTER.test(message)) {
      hint =
        'The server is no longer the master (a failover, REPLICAOF): RedisBackend reconnects to find the master; ' +
        'FastLimit applies its onBackendError policy meanwhile.'
    }
    const lastMessage = this.lastError?.message.replace(/\.+$/, '')
    const last =
      lastMessage !== undefined && lastMessage !== message ? ` (last connection error: ${lastMessage})` : ''
    return new FastlimitError(
      'ERR_FASTLIMIT_BACKEND',
      `[fastlimit] [redis] ${what} failed: ${message}${last}. ${hint}`,
      { cause: err },
    )
  }

  /**
   * Runs the script for one bucket and reads its result. Arguments: the field, then as far as needed
   * the deadline ('' for none), the cost (1 when left out), the time ('' or left out for the server's
   * TIME) and the configuration (left out when the field is that).
   */
  private async one(
    key: string,
    bucket: BucketConfig,
    cost: number,
    deadline: number | undefined,
    what: string,
  ): Promise<BackendResult> {
    if (this.closed) throw this.closedError()
    checkKey(key)
    const p = prepare(bucket)
    const k = redisKey(this.prefix, key)
    const c = cost === 1 ? '1' : cost === 0 ? '0' : String(cost)
    const now = this.now(what)
    const sha = this.sha
    // The deadline's slot is filled in when the call is written (see ScriptRunner).
    const args =
      p.conf !== ''
        ? [sha, '1', k, p.field, '', c, now, p.conf]
        : now !== ''
          ? [sha, '1', k, p.field, '', c, now]
          : c !== '1'
            ? [sha, '1', k, p.field, '', c]
            : deadline !== undefined
              ? [sha, '1', k, p.field, '']
              : [sha, '1', k, p.field]
    return readOne(await this.send(args, what, deadline, 4, cost > 0), p.limit, cost > 0, what)
  }

  /**
   * Sends a script call once the client may take it (see `ready`): through ioredis's defined command
   * when it auto-pipelines, else our own command, corked with this tick's other calls and sent once
   * more on NOSCRIPT. `args[at]` is the deadline's slot (filled in only with a deadline). Errors are
   * wrapped as failures of `what`.
   */
  private async send(
    args: Array<string | Buffer>,
    what: string,
    deadline: number | undefined,
    at: number,
    charges: boolean,
    script: ScriptDefinition = this.script,
  ): Promise<unknown> {
    try {
      const gate = this.driver.ready()
      if (gate !== undefined) await gate
      // Without a deadline, no slot: `at` -1.
      if (deadline === undefined) at = -1
      else if (Date.now() >= deadline) throw expired(what)
      return await this.driver.script(script, args, at, deadline ?? 0, charges, what)
    } catch (err) {
      throw this.wrap(err, what)
    }
  }

  /**
   * {@inheritDoc Backend.checkAndIncrement} One EVALSHA, atomic on the server. With `options.deadline`,
   * a call that reaches Redis at or after it (on the server's clock, converted conservatively) charges
   * nothing and rejects with `ERR_FASTLIMIT_TIMEOUT`.
   */
  checkAndIncrement(
    key: string,
    bucket: BucketConfig,
    cost: number,
    options?: CallOptions,
  ): Promise<BackendResult> {
    let deadline: number | undefined
    try {
      checkCost(cost)
      deadline = deadlineOf(options)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.one(key, bucket, cost, deadline, 'checkAndIncrement')
  }

  /**
   * {@inheritDoc Backend.checkAndIncrementAll} One script for every bucket: all are charged, or none.
   * `options.deadline` as for checkAndIncrement.
   */
  async checkAndIncrementAll(
    key: string,
    buckets: readonly BucketConfig[],
    cost: number,
    options?: CallOptions,
  ): Promise<BackendResult[]> {
    checkCost(cost)
    const deadline = deadlineOf(options)
    if (buckets.length === 0) return []
    if (buckets.length === 1)
      return [await this.one(key, buckets[0] as BucketConfig, cost, deadline, 'checkAndIncrement')]
    // The script takes the field and the configuration ('' when the field is that) of each bucket.
    const fields: string[] = []
    const limits: number[] = []
    for (const bucket of buckets) {
      const p = prepare(bucket)
      fields.push(p.field, p.conf)
      limits.push(p.limit)
    }
    if (this.closed) throw this.closedError()
    checkKey(key)
    const what = 'checkAndIncrementAll'
    const k = redisKey(this.prefix, key)
    const args = [this.sha, '1', k, '', String(cost), this.now(what), ...fields]
    return readAll(await this.send(args, what, deadline, 3, true), limits, true, what)
  }

  /**
   * {@inheritDoc Backend.adjust} The script's port of core's `adjustAll`: one EVALSHA for every bucket,
   * atomic on the server, at the same clock as the checks (the server's `TIME`, or `clock`). With
   * `options.deadline`, an adjustment that reaches Redis at or after it changes nothing and rejects with
   * `ERR_FASTLIMIT_TIMEOUT`. Never followed by `waitReplicas`' WAIT (a refund lost in a failover only
   * leaves the charge in place).
   */
  async adjust(
    key: string,
    buckets: readonly BucketConfig[],
    delta: number,
    charges: readonly Charge[] | undefined,
    options?: CallOptions,
  ): Promise<BackendResult[]> {
    checkDelta(delta)
    const deadline = deadlineOf(options)
    const charged = chargesArg(charges, buckets.length)
    if (buckets.length === 0) return []
    // As for checkAndIncrementAll: the field and the configuration ('' when the field is that) of each.
    const fields: string[] = []
    const limits: number[] = []
    for (const bucket of buckets) {
      const p = prepare(bucket)
      fields.push(p.field, p.conf)
      limits.push(p.limit)
    }
    if (this.closed) throw this.closedError()
    checkKey(key)
    const what = 'adjust'
    const k = redisKey(this.prefix, key)
    // An even number of script arguments: the script's adjustment.
    const args = [this.sha, '1', k, '', String(delta), this.now(what), charged, ...fields]
    return readAll(await this.send(args, what, deadline, 3, false), limits, false, what)
  }

  /** {@inheritDoc Backend.peek} The script with cost 0: reads, writes nothing. */
  peek(key: string, bucket: BucketConfig, options?: CallOptions): Promise<BackendResult> {
    let deadline: number | undefined
    try {
      deadline = deadlineOf(options)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.one(key, bucket, 0, deadline, 'peek')
  }

  /**
   * {@inheritDoc Backend.acquire} One EVALSHA of a script of its own, atomic on the server: the key's
   * leases are a sorted set (token, expiry) next to its hash, with the same hash tag (see the README:
   * Concurrency leases). `options.deadline` as for checkAndIncrement. `waitReplicas` does not apply.
   */
  async acquire(
    key: string,
    slots: SlotConfig,
    token: string,
    options?: CallOptions,
  ): Promise<AcquireResult> {
    checkLeaseArguments('redis', slots, token)
    const deadline = deadlineOf(options)
    if (this.closed) throw this.closedError()
    checkKey(key)
    const script = acquireScript(this.marginMs)
    const conf = `${slots.limit}:${slots.leaseMs}`
    const args = [script.sha, '1', leaseKey(this.prefix, key), token, conf, '', this.now('acquire')]
    return readAcquire(await this.send(args, 'acquire', deadline, 5, false, script), slots.limit)
  }

  /** {@inheritDoc Backend.release} One EVALSHA (ZSCORE, ZREM), atomic on the server. */
  async release(key: string, token: string, options?: CallOptions): Promise<boolean> {
    checkLeaseArguments('redis', undefined, token)
    const deadline = deadlineOf(options)
    if (this.closed) throw this.closedError()
    checkKey(key)
    const args = [RELEASE_SCRIPT.sha, '1', leaseKey(this.prefix, key), token, '', '', this.now('release')]
    return readRelease(await this.send(args, 'release', deadline, 5, false, RELEASE_SCRIPT))
  }

  /** {@inheritDoc Backend.reset} UNLINK of the key's one Redis hash. */
  async reset(key: string): Promise<void> {
    if (this.closed) throw this.closedError()
    checkKey(key)
    const k = redisKey(this.prefix, key)
    try {
      const gate = this.driver.ready()
      if (gate !== undefined) await gate
      await this.driver.unlink(k)
    } catch (err) {
      throw this.wrap(err, 'reset')
    }
  }

  /**
   * {@inheritDoc Backend.clear} SCAN for `keyPrefix*` and UNLINK, on every primary of a Cluster. Other
   * applications' keys are never touched. Not atomic: calls running meanwhile may leave keys behind.
   */
  async clear(): Promise<void> {
    if (this.closed) throw this.closedError()
    const pattern = prefixPattern(this.prefix)
    try {
      await this.driver.clear(pattern)
    } catch (err) {
      throw this.wrap(err, 'clear')
    }
  }

  /**
   * Drops the connection (every connection of a Cluster) and connects again: every call in flight or
   * queued on it fails at once, and none is sent later (a call that already reached Redis charges
   * nothing past its deadline). `FastLimit` calls it when its circuit breaker opens, e.g. on a stalled
   * or blackholed server whose socket would otherwise hold calls until TCP gives up. Works on a client
   * you passed too (it is disconnected and connected again, never closed). Safe to call at any time.
   */
  reconnect(_reason?: Error): void {
    if (this.closed) return
    this.driver.reconnect()
  }

  /**
   * {@inheritDoc Backend.close} Closes the connection RedisBackend created from `url` (QUIT, then
   * disconnect if that fails); a client you passed in stays open. Idempotent.
   */
  close(): Promise<void> {
    if (this.closing) return this.closing
    this.closed = true
    const closing = this.driver.close()
    this.closing = closing
    return closing
  }
}

function checkWaitReplicas(value: unknown): RedisWaitReplicas | undefined {
  if (value === false || value === undefined) return undefined
  const w = value as Partial<RedisWaitReplicas> | null
  const whole = (n: unknown, max: number) =>
    typeof n === 'number' && Number.isSafeInteger(n) && n >= 1 && n <= max
  if (typeof w !== 'object' || w === null || !whole(w.replicas, 1000) || !whole(w.timeoutMs, 2 ** 31 - 1)) {
    throw new ConfigError(
      `[fastlimit] [redis] waitReplicas must be false or { replicas, timeoutMs } with whole numbers from 1, got ` +
        `${show(value)}. For example { replicas: 1, timeoutMs: 50 }.`,
    )
  }
  for (const key of Object.keys(w)) {
    if (key !== 'replicas' && key !== 'timeoutMs') {
      throw new ConfigError(
        `[fastlimit] [redis] Unknown waitReplicas option ${show(key)}: it takes replicas and timeoutMs.`,
      )
    }
  }
  return { replicas: w.replicas as number, timeoutMs: w.timeoutMs as number }
}
