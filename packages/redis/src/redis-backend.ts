// RedisBackend: the Backend protocol on ioredis; every decision is one atomic Lua script on one Redis key.
import {
  ALGORITHMS,
  type Backend,
  type BackendResult,
  type BucketConfig,
  bucketId,
  ConfigError,
  FastlimitError,
  RETRY_NEVER,
} from '@fastlimit/core'
import type { Cluster, ClusterOptions, Redis, RedisOptions } from 'ioredis'
import { connectionProblem, createClient, explain } from './client'
import { runnerFor, type ScriptRunner } from './command'
import { keyNamespace, prefixPattern, redisKey } from './keys'
import { type ScriptDefinition, scriptFor } from './scripts'
import { parseRedisUrl } from './url'

/**
 * Where the scripts read the time: `'server'`, the Redis server's `TIME` (one clock for every app
 * server), or `'client'`, the `clock` option of each process.
 */
export type RedisTimeSource = 'server' | 'client'

/** Options of {@link RedisBackend}. Give `client` or `url`. */
export interface RedisBackendOptions {
  /**
   * An ioredis `Redis` (standalone or Sentinel) or `Cluster` you already have. RedisBackend never
   * closes it: `close()` leaves it open for you. See the README for the settings we recommend
   * (no offline queue, no re-sent commands). With `enableAutoPipelining` on, calls join ioredis's
   * auto-pipeline. It must not have an ioredis `keyPrefix`; use this backend's `keyPrefix` instead.
   * @default undefined (give `url` instead)
   */
  client?: Redis | Cluster
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
   * `maxClockSkewMs` apart share one limit within a stated bound (see `maxClockSkewMs`).
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

type ScriptFn = (key: string | Buffer, ...args: string[]) => Promise<unknown>
type Commands = Record<string, ScriptFn>

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

function unexpected(reply: unknown): FastlimitError {
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

/** The result in `values`; `limit` is the bucket's (`burst` for the bucket algorithms), known here. */
function result(reply: string, limit: number): BackendResult {
  const allowed = values[0] as number
  const retry = values[3] as number
  if (allowed !== 0 && allowed !== 1) throw unexpected(reply)
  return {
    allowed: allowed === 1,
    limit,
    remaining: values[1] as number,
    resetMs: values[2] as number,
    retryAfterMs: retry === -1 ? RETRY_NEVER : retry,
  }
}

/** The one result of a one-bucket reply. */
function readOne(reply: unknown, limit: number): BackendResult {
  if (typeof reply !== 'string' || read(reply, 0) !== reply.length) throw unexpected(reply)
  return result(reply, limit)
}

/** The results of a several-bucket reply, one per limit. */
function readAll(reply: unknown, limits: readonly number[]): BackendResult[] {
  if (typeof reply !== 'string') throw unexpected(reply)
  const results: BackendResult[] = new Array(limits.length)
  let at = 0
  for (let i = 0; i < limits.length; i++) {
    at = read(reply, at)
    // Every result but the last ends with a comma.
    if (at < 0 || (at === reply.length) !== (i === limits.length - 1)) throw unexpected(reply)
    results[i] = result(reply, limits[i] as number)
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

function checkKey(key: unknown): void {
  if (typeof key !== 'string') {
    throw new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [redis] key must be a string, got ${show(key)}.`,
    )
  }
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
export class RedisBackend implements Backend {
  /**
   * Creates a backend that connects to `url` (and closes that connection on `close()`). Takes every form
   * of the `url` option: `redis://` and `rediss://` with one host (a server), several hosts (a Cluster),
   * or sentinels with `?sentinelMasterName=` / `?sentinel_master=` / the `sentinelMasterName` option;
   * `redis+sentinel://`, `redis+cluster://` and their `rediss+` forms; `valkey...` as `redis...`.
   *
   * @throws ConfigError for a bad URL or option (naming the wrong part, never the password)
   */
  static fromUrl(url: string, options: Omit<RedisBackendOptions, 'url' | 'client'> = {}): RedisBackend {
    return new RedisBackend({ ...options, url })
  }

  readonly #client: Redis | Cluster
  /** The defined command, when the client auto-pipelines (ioredis queues it on its pipeline). */
  readonly #script: ScriptFn | undefined
  /** Otherwise, our own EVALSHA commands. */
  readonly #runner: ScriptRunner
  readonly #sha: string
  readonly #owned: boolean
  readonly #prefix: string
  readonly #clock: (() => number) | undefined
  readonly #name: string
  readonly #where: string
  #closed = false
  #closing: Promise<void> | undefined
  #everReady = false
  #gate: Promise<void> | undefined
  #lastError: Error | undefined
  #corked: Array<{ uncork(): void }> | undefined

  /**
   * @throws ConfigError for a bad option, a bad URL (naming the wrong part), both or neither of
   *   `client` and `url`
   */
  constructor(options: RedisBackendOptions) {
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
    } = options
    this.#prefix = keyNamespace(keyPrefix)
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
      const c = client as Partial<Redis> | null
      if (typeof c !== 'object' || c === null || typeof c.defineCommand !== 'function' || !('status' in c)) {
        throw new ConfigError(
          `[fastlimit] [redis] client must be an ioredis Redis or Cluster instance, got ${show(client)}. ` +
            'For example new Redis("redis://localhost:6379"), or pass url instead.',
        )
      }
      if ((client.options as { keyPrefix?: unknown } | undefined)?.keyPrefix) {
        throw new ConfigError(
          '[fastlimit] [redis] The client has an ioredis keyPrefix, which SCAN in clear() would not see. ' +
            "Give RedisBackend a client without keyPrefix (client.duplicate({ keyPrefix: '' })) and set " +
            "RedisBackend's keyPrefix option instead.",
        )
      }
      this.#client = client
      this.#owned = false
      this.#where = client.isCluster ? 'the Redis Cluster' : 'Redis'
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
      this.#client = createClient(parsed, redisOptions, clusterOptions)
      this.#owned = true
      this.#where = parsed.redacted
      // Errors surface through the calls that fail; keep the last one for their messages.
      this.#client.on('error', (err: Error) => {
        this.#lastError = err
      })
      if (!this.#client.isCluster) {
        this.#client.on('ready', () => {
          this.#everReady = true
        })
      }
    } else {
      throw new ConfigError(
        '[fastlimit] [redis] Give client (an ioredis Redis or Cluster) or url, e.g. ' +
          'new RedisBackend({ url: "redis://localhost:6379" }) or RedisBackend.fromUrl(process.env.REDIS_URL).',
      )
    }
    this.#clock = timeSource === 'client' ? (clock ?? Date.now) : undefined
    if (this.#client.isCluster) {
      // ioredis connects to a Cluster's nodes on their first command, and without an offline queue
      // fails the calls that reach a node while it connects: connect every primary as soon as it is known.
      this.#client.on('+node', this.#connectNode)
      for (const node of (this.#client as Cluster).nodes('master')) this.#connectNode(node)
    }
    // One script for every call, with the expiry margin in its text.
    // With client time, states from clocks up to maxClockSkewMs ahead are kept, and so are their keys.
    const skew = timeSource === 'client' ? (maxClockSkewMs ?? DEFAULT_SKEW_MS) : 0
    const script: ScriptDefinition = scriptFor(Math.max(expiryMarginMs, skew), skew)
    this.#name = script.name
    this.#sha = script.sha
    this.#runner = runnerFor(script)
    if (this.#client.options.enableAutoPipelining === true) {
      // Only ioredis's defined commands join its auto-pipeline.
      if (typeof (this.#client as unknown as Commands)[script.name] !== 'function') {
        this.#client.defineCommand(script.name, { lua: script.lua, numberOfKeys: 1 })
      }
      this.#script = (this.#client as unknown as Commands)[script.name] as ScriptFn
    }
  }

  readonly #connectNode = (node: Redis): void => {
    if (node.options.readOnly !== true && node.status === 'wait') node.connect().catch(() => undefined)
  }

  /** The ioredis client in use: yours, or the one created from `url`. */
  get client(): Redis | Cluster {
    return this.#client
  }

  /**
   * The time argument of a script: '' lets the script read the server's TIME. A clock that throws
   * fails the call `what`.
   */
  #now(what: string): string {
    if (this.#clock === undefined) return ''
    try {
      const now = Math.floor(this.#clock())
      if (!Number.isSafeInteger(now) || now < 0) {
        throw new ConfigError(
          `[fastlimit] [redis] clock() must return epoch milliseconds, got ${show(now)}. For example Date.now.`,
        )
      }
      return String(now)
    } catch (err) {
      throw this.#wrap(err, what)
    }
  }

  #closedError(): FastlimitError {
    return new FastlimitError(
      'ERR_FASTLIMIT_CLOSED',
      '[fastlimit] [redis] This RedisBackend was closed; create a new one.',
    )
  }

  #wrap(err: unknown, what: string): FastlimitError {
    if (err instanceof FastlimitError) return err
    // A URL that does not fit its server (a database it lacks, a Cluster node, a sentinel); passwords hidden.
    const misfit = explain(this.#client, err, this.#where)
    if (misfit !== undefined) return misfit
    const message = (err instanceof Error ? err.message : String(err)).replace(/\.+$/, '')
    let hint = `Check that ${this.#where} is reachable; FastLimit applies its onBackendError policy meanwhile.`
    if (/\bTIME\b/.test(message) || /not allowed from script/i.test(message)) {
      hint =
        "This Redis refuses TIME in scripts: use timeSource: 'client' and keep your servers' clocks in sync."
    } else if (/WRONGTYPE/.test(message)) {
      hint = 'Another application wrote a key under this keyPrefix: give RedisBackend a keyPrefix of its own.'
    } else if (/NOPERM|NOAUTH|WRONGPASS/.test(message)) {
      hint =
        'Check the user name and password, and that the user may run EVAL, EVALSHA, TIME, HGET, HMGET, HSET, PTTL and PEXPIRE.'
    }
    const lastMessage = this.#lastError?.message.replace(/\.+$/, '')
    const last =
      lastMessage !== undefined && lastMessage !== message ? ` (last connection error: ${lastMessage})` : ''
    return new FastlimitError(
      'ERR_FASTLIMIT_BACKEND',
      `[fastlimit] [redis] ${what} failed: ${message}${last}. ${hint}`,
      { cause: err },
    )
  }

  /**
   * Before the first connection of a client we created, calls wait for it; each failed attempt fails
   * the waiting calls (the client has no offline queue, so nothing piles up). Afterwards calls go
   * straight to ioredis, which fails them at once while disconnected.
   */
  #ready(): Promise<void> | undefined {
    if (!this.#owned || this.#everReady) return undefined
    const problem = connectionProblem(this.#client)
    if (problem !== undefined) return Promise.reject(problem)
    const client = this.#client
    if (client.status === 'ready' && mastersReady(client)) {
      this.#everReady = true
      return undefined
    }
    if (client.status === 'end') return Promise.reject(new Error('Connection is closed.'))
    this.#gate ??= (async () => {
      try {
        await untilReady(client)
        // A Cluster connects to its nodes lazily, and fails calls to a node still connecting (with no
        // offline queue): connect every primary before the first call. A node that fails is left to the
        // calls routed to it.
        if (client.isCluster) {
          const nodes = (client as Cluster).nodes('master')
          await Promise.all(nodes.map((node) => untilReady(node).catch(() => undefined)))
        }
        this.#everReady = true
      } finally {
        this.#gate = undefined
      }
    })()
    return this.#gate
  }

  /**
   * Holds this tick's writes on the connection (`socket.cork()`) and sends them together at its end
   * (`uncork()` on `process.nextTick`): concurrent calls share a write and a round trip, as with
   * auto-pipelining, without its wait for the next turn of the event loop. A lone call still goes out
   * in the tick it was made.
   */
  #cork(): void {
    if (this.#corked !== undefined) return
    const client = this.#client
    const nodes = client.isCluster ? (client as Cluster).nodes('master') : [client as Redis]
    let corked: Array<{ uncork(): void }> | undefined
    for (const node of nodes) {
      const stream = node.stream as { cork?: () => void; uncork?: () => void; writable?: boolean } | undefined
      if (
        stream?.writable === true &&
        typeof stream.cork === 'function' &&
        typeof stream.uncork === 'function'
      ) {
        stream.cork()
        corked ??= []
        corked.push(stream as { uncork(): void })
      }
    }
    if (corked === undefined) return
    this.#corked = corked
    process.nextTick(this.#uncork)
  }

  readonly #uncork = (): void => {
    const corked = this.#corked
    this.#corked = undefined
    if (corked !== undefined) for (const stream of corked) stream.uncork()
  }

  /**
   * Runs the script for one bucket and reads its result. Arguments: the field, then as far as needed
   * the cost (1 when left out), the time ('' or left out for the server's TIME) and the configuration
   * (left out when the field is that).
   */
  async #one(key: string, bucket: BucketConfig, cost: number, what: string): Promise<BackendResult> {
    if (this.#closed) throw this.#closedError()
    checkKey(key)
    const p = prepare(bucket)
    const k = redisKey(this.#prefix, key)
    const c = cost === 1 ? '1' : cost === 0 ? '0' : String(cost)
    const now = this.#now(what)
    const sha = this.#sha
    const args =
      p.conf !== ''
        ? [sha, '1', k, p.field, c, now, p.conf]
        : now !== ''
          ? [sha, '1', k, p.field, c, now]
          : c !== '1'
            ? [sha, '1', k, p.field, c]
            : [sha, '1', k, p.field]
    return readOne(await this.#send(args, what), p.limit)
  }

  /**
   * Sends a script call once the client may take it (see `#ready`): through ioredis's defined command
   * when it auto-pipelines, else our own command, corked with this tick's other calls and sent once
   * more on NOSCRIPT. Errors are wrapped as failures of `what`.
   */
  async #send(args: Array<string | Buffer>, what: string): Promise<unknown> {
    try {
      if (!this.#everReady) {
        const gate = this.#ready()
        if (gate !== undefined) await gate
      }
      if (this.#script !== undefined) return await this.#sendDefined(args)
      this.#cork()
      return await this.#runner.run(this.#client, args)
    } catch (err) {
      throw this.#wrap(err, what)
    }
  }

  /**
   * Through ioredis's defined command, which joins its auto-pipeline (and handles NOSCRIPT itself). A
   * key that is not UTF-8 (lone surrogates) goes through a pipeline of its own on a Cluster, routed by
   * its real slot: auto-pipelining groups commands by the key read as UTF-8.
   */
  async #sendDefined(args: Array<string | Buffer>): Promise<unknown> {
    const [, , key, ...argv] = args as [string, string, string | Buffer, ...string[]]
    if (typeof key !== 'string' && this.#client.isCluster) {
      const pipeline = this.#client.pipeline() as unknown as Commands & {
        exec(): Promise<Array<[Error | null, unknown]>>
      }
      ;(pipeline[this.#name] as ScriptFn).call(pipeline, key, ...argv)
      const [[err, reply] = [null, undefined]] = await pipeline.exec()
      if (err) throw err
      return reply
    }
    return await (this.#script as ScriptFn).call(this.#client, key, ...argv)
  }

  /** {@inheritDoc Backend.checkAndIncrement} One EVALSHA, atomic on the server. */
  checkAndIncrement(key: string, bucket: BucketConfig, cost: number): Promise<BackendResult> {
    try {
      checkCost(cost)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#one(key, bucket, cost, 'checkAndIncrement')
  }

  /** {@inheritDoc Backend.checkAndIncrementAll} One script for every bucket: all are charged, or none. */
  async checkAndIncrementAll(
    key: string,
    buckets: readonly BucketConfig[],
    cost: number,
  ): Promise<BackendResult[]> {
    checkCost(cost)
    if (buckets.length === 0) return []
    if (buckets.length === 1)
      return [await this.#one(key, buckets[0] as BucketConfig, cost, 'checkAndIncrement')]
    // The script takes the field and the configuration ('' when the field is that) of each bucket.
    const fields: string[] = []
    const limits: number[] = []
    for (const bucket of buckets) {
      const p = prepare(bucket)
      fields.push(p.field, p.conf)
      limits.push(p.limit)
    }
    return readAll(await this.#runAll(key, cost, fields), limits)
  }

  async #runAll(key: string, cost: number, fields: string[]): Promise<unknown> {
    if (this.#closed) throw this.#closedError()
    checkKey(key)
    const k = redisKey(this.#prefix, key)
    const args = [this.#sha, '1', k, String(cost), this.#now('checkAndIncrementAll'), ...fields]
    return this.#send(args, 'checkAndIncrementAll')
  }

  /** {@inheritDoc Backend.peek} The script with cost 0: reads, writes nothing. */
  peek(key: string, bucket: BucketConfig): Promise<BackendResult> {
    return this.#one(key, bucket, 0, 'peek')
  }

  /** {@inheritDoc Backend.reset} UNLINK of the key's one Redis hash. */
  async reset(key: string): Promise<void> {
    if (this.#closed) throw this.#closedError()
    checkKey(key)
    const k = redisKey(this.#prefix, key)
    try {
      const gate = this.#ready()
      if (gate !== undefined) await gate
      if (typeof k !== 'string' && this.#client.isCluster) {
        const [[err] = [null]] = (await this.#client.pipeline().unlink(k).exec()) ?? []
        if (err) throw err
      } else await this.#client.unlink(k)
    } catch (err) {
      throw this.#wrap(err, 'reset')
    }
  }

  /**
   * {@inheritDoc Backend.clear} SCAN for `keyPrefix*` and UNLINK, on every primary of a Cluster. Other
   * applications' keys are never touched. Not atomic: calls running meanwhile may leave keys behind.
   */
  async clear(): Promise<void> {
    if (this.#closed) throw this.#closedError()
    const pattern = prefixPattern(this.#prefix)
    try {
      await this.#connected()
      const nodes: Redis[] = this.#client.isCluster
        ? (this.#client as Cluster).nodes('master')
        : [this.#client as Redis]
      await Promise.all(nodes.map((node) => clearNode(node, pattern)))
    } catch (err) {
      throw this.#wrap(err, 'clear')
    }
  }

  /** Waits until the client is ready (a Cluster knows its primaries only then). */
  async #connected(): Promise<void> {
    const gate = this.#ready()
    if (gate !== undefined) await gate
    const client = this.#client
    if (client.status === 'ready') return
    if (client.status === 'wait') client.connect().catch(() => undefined)
    await new Promise<void>((resolve, reject) => {
      const settle = (err?: Error) => {
        client.off('ready', onReady)
        client.off('end', onEnd)
        clearTimeout(timer)
        if (err) reject(err)
        else resolve()
      }
      const onReady = () => settle()
      const onEnd = () => settle(new Error('Connection is closed.'))
      const timer = setTimeout(() => settle(new Error('Not connected after 10000 ms.')), 10_000)
      client.on('ready', onReady)
      client.on('end', onEnd)
    })
  }

  /**
   * {@inheritDoc Backend.close} Closes the connection RedisBackend created from `url` (QUIT, then
   * disconnect if that fails); a client you passed in stays open. Idempotent.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing
    this.#closed = true
    if (this.#client.isCluster) this.#client.off('+node', this.#connectNode)
    if (!this.#owned) {
      this.#closing = Promise.resolve()
      return this.#closing
    }
    const client = this.#client
    this.#closing = (async () => {
      const status = client.status
      if (status === 'end') return
      const ended = new Promise<void>((resolve) => client.once('end', () => resolve()))
      if (status === 'ready') {
        client.quit().catch(() => client.disconnect())
      } else {
        client.disconnect()
        // Between two attempts there is no socket and no 'end' will come: the timer was cleared.
        if (status === 'reconnecting' || status === 'close') return
      }
      let timer: ReturnType<typeof setTimeout> | undefined
      await Promise.race([
        ended,
        new Promise<void>((resolve) => {
          timer = setTimeout(() => {
            client.disconnect()
            resolve()
          }, 2000)
        }),
      ])
      clearTimeout(timer)
    })()
    return this.#closing
  }
}

/** Whether every primary of a Cluster is connected (always, for a standalone or Sentinel client). */
function mastersReady(client: Redis | Cluster): boolean {
  if (!client.isCluster) return true
  for (const node of (client as Cluster).nodes('master')) if (node.status !== 'ready') return false
  return true
}

/**
 * Resolves once `client` is ready (connecting it if it waits for a first command); rejects on its
 * next error, its end, or after 10 s. Each failed attempt fails the calls waiting for it.
 */
function untilReady(client: Redis | Cluster): Promise<void> {
  if (client.status === 'ready') return Promise.resolve()
  if (client.status === 'end') return Promise.reject(new Error('Connection is closed.'))
  return new Promise<void>((resolve, reject) => {
    const settle = (err?: Error) => {
      client.off('ready', onReady)
      client.off('error', onError)
      client.off('end', onEnd)
      clearTimeout(timer)
      if (err) reject(err)
      else resolve()
    }
    const onReady = () => settle()
    const onError = (err: Error) => settle(err)
    const onEnd = () => settle(new Error('Connection is closed.'))
    const timer = setTimeout(() => settle(new Error('Not connected after 10000 ms.')), 10_000)
    ;(timer as { unref?: () => void }).unref?.()
    client.on('ready', onReady)
    client.on('error', onError)
    client.on('end', onEnd)
    if (client.status === 'wait') client.connect().catch(() => undefined)
  })
}

/** Deletes every key of one node that matches `pattern`, a SCAN page at a time. */
async function clearNode(node: Redis, pattern: string): Promise<void> {
  let cursor = '0'
  do {
    const [next, keys] = await node.scanBuffer(cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = next.toString()
    if (keys.length > 0) {
      // One UNLINK per key: on a Cluster node, one command may not span slots.
      const pipeline = node.pipeline()
      for (const key of keys) pipeline.unlink(key)
      for (const [err] of (await pipeline.exec()) ?? []) if (err) throw err
    }
  } while (cursor !== '0')
}
