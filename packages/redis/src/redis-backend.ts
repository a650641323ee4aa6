// RedisBackend: the Backend protocol on ioredis; every decision is one atomic Lua script on one Redis key.
import {
  type Backend,
  type BackendResult,
  type BucketConfig,
  bucketId,
  ConfigError,
  FastlimitError,
  RETRY_NEVER,
  validatePrefix,
} from '@fastlimit/core'
import type { Cluster, ClusterOptions, Redis, RedisOptions } from 'ioredis'
import { createClient } from './client'
import { prefixPattern, redisKey } from './keys'
import { ALL_SCRIPT, SCRIPTS, type ScriptDefinition } from './scripts'
import { parseRedisUrl, redactUrl } from './url'

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
   * (auto-pipelining on, no offline queue, no re-sent commands). It must not have an ioredis
   * `keyPrefix`; use this backend's `keyPrefix` instead.
   * @default undefined (give `url` instead)
   */
  client?: Redis | Cluster
  /**
   * Where to connect, when you give no `client`: `redis://[[user]:password@]host[:port][/db]`,
   * `rediss://...` (TLS), `redis+sentinel://h1:26379,h2:26379/mymaster[/db]` or
   * `redis+cluster://n1:7000,n2:7001` (`rediss+sentinel://` and `rediss+cluster://` for TLS).
   * RedisBackend creates the client, and `close()` closes it.
   * @default undefined (give `client` instead)
   */
  url?: string
  /**
   * Prepended to every Redis key this backend writes, and the only keys `clear()` deletes:
   * 1 to 64 printable ASCII characters without spaces or braces.
   * @default 'fastlimit:'
   */
  keyPrefix?: string
  /**
   * `'server'`: scripts read the Redis server's `TIME`, so app servers whose clocks disagree still
   * share one limit exactly. `'client'`: each call passes `clock()`; for tests with a fake clock, and
   * for managed Redis services that refuse `TIME` in scripts (then keep your servers' clocks in sync).
   * @default 'server'
   */
  timeSource?: RedisTimeSource
  /**
   * The clock of `timeSource: 'client'`, in epoch milliseconds. Not allowed with `'server'`.
   * @default Date.now
   */
  clock?: () => number
  /**
   * Milliseconds a key outlives its last bucket (its `PEXPIRE` is the longest bucket's time to empty
   * plus this margin). A state kept longer is harmless (an expired state reads as empty), one dropped
   * early would forget counts; the margin absorbs the difference between the clock that computed the
   * state and Redis's own expiry clock. With `timeSource: 'client'`, keep it above the largest clock
   * skew between your app servers.
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
  'keyPrefix',
  'timeSource',
  'clock',
  'expiryMarginMs',
  'redisOptions',
  'clusterOptions',
]

const MAX_MARGIN_MS = 24 * 60 * 60 * 1000

/** Formats a value for an error message. */
function show(value: unknown): string {
  let text: string
  if (typeof value === 'string') text = JSON.stringify(value)
  else if (typeof value === 'function') text = 'a function'
  else if (typeof value === 'object' && value !== null) text = Array.isArray(value) ? 'an array' : 'an object'
  else text = String(value)
  return text.length > 80 ? `${text.slice(0, 77)}...` : text
}

type ScriptFn = (key: string | Buffer, ...args: Array<string | number>) => Promise<unknown>
type Commands = Record<string, ScriptFn>

/** Reads the 5 integers of one result from a script's reply. */
function readResult(reply: ArrayLike<unknown>, at: number): BackendResult {
  const retry = Number(reply[at + 4])
  return {
    allowed: Number(reply[at]) === 1,
    limit: Number(reply[at + 1]),
    remaining: Number(reply[at + 2]),
    resetMs: Number(reply[at + 3]),
    retryAfterMs: retry === -1 ? RETRY_NEVER : retry,
  }
}

function checkReply(reply: unknown, results: number): ArrayLike<unknown> {
  if (!Array.isArray(reply) || reply.length !== results * 5) {
    throw new FastlimitError(
      'ERR_FASTLIMIT_BACKEND',
      `[fastlimit] [redis] Unexpected script reply ${show(reply)}: is the client in a special mode (subscriber, MULTI)? ` +
        'Give RedisBackend a client of its own.',
    )
  }
  return reply
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

function scriptOf(bucket: BucketConfig): ScriptDefinition {
  const script = SCRIPTS[bucket.algorithm]
  if (script === undefined) {
    throw new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [redis] Unknown algorithm ${show(bucket.algorithm)}: build buckets with parseRule from @fastlimit/core.`,
    )
  }
  return script
}

/**
 * The Redis backend: every decision is one Lua script (a port of the algorithm's `step` from core), run
 * atomically on the Redis server, so any number of processes share one limit exactly. Works with
 * standalone Redis, Sentinel and Cluster.
 *
 * - Storage: one Redis hash per key (`keyPrefix + key`), one field per bucket (`bucketId`), its value the
 *   algorithm's state; the key expires (`PEXPIRE`) once its longest-lived bucket is empty.
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
  /** Creates a backend that connects to `url` (and closes that connection on `close()`). */
  static fromUrl(url: string, options: Omit<RedisBackendOptions, 'url' | 'client'> = {}): RedisBackend {
    return new RedisBackend({ ...options, url })
  }

  readonly #client: Redis | Cluster
  readonly #commands: Commands
  readonly #owned: boolean
  readonly #prefix: string
  readonly #clock: (() => number) | undefined
  readonly #margin: string
  readonly #where: string
  #closed = false
  #closing: Promise<void> | undefined
  #everReady = false
  #gate: Promise<void> | undefined
  #lastError: Error | undefined

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
      keyPrefix = 'fastlimit:',
      timeSource = 'server',
      clock,
      expiryMarginMs = 1000,
      redisOptions,
      clusterOptions,
    } = options
    try {
      this.#prefix = validatePrefix(keyPrefix, 'redis')
    } catch (err) {
      throw new ConfigError(
        `[fastlimit] [redis] keyPrefix must be 1 to 64 printable ASCII characters without spaces or braces ` +
          `(braces would become the Cluster hash tag), got ${show(keyPrefix)}. For example "fastlimit:" or "myapp:rl:".`,
        { cause: err },
      )
    }
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
      const parsed = parseRedisUrl(url)
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
            '[fastlimit] [redis] clusterOptions apply only to a redis+cluster:// URL; use redisOptions instead.',
          )
        }
      }
      this.#client = createClient(parsed, redisOptions, clusterOptions)
      this.#owned = true
      this.#where = redactUrl(url)
      // Errors surface through the calls that fail; keep the last one for their messages.
      this.#client.on('error', (err: Error) => {
        this.#lastError = err
      })
      this.#client.on('ready', () => {
        this.#everReady = true
      })
    } else {
      throw new ConfigError(
        '[fastlimit] [redis] Give client (an ioredis Redis or Cluster) or url, e.g. ' +
          'new RedisBackend({ url: "redis://localhost:6379" }) or RedisBackend.fromUrl(process.env.REDIS_URL).',
      )
    }
    this.#clock = timeSource === 'client' ? (clock ?? Date.now) : undefined
    this.#margin = String(expiryMarginMs)
    for (const script of [...Object.values(SCRIPTS), ALL_SCRIPT]) {
      if (typeof (this.#client as unknown as Commands)[script.name] !== 'function') {
        this.#client.defineCommand(script.name, { lua: script.lua, numberOfKeys: 1 })
      }
    }
    this.#commands = this.#client as unknown as Commands
  }

  /** The ioredis client in use: yours, or the one created from `url`. */
  get client(): Redis | Cluster {
    return this.#client
  }

  /** The time argument of a script: '' lets the script read the server's TIME. */
  #now(): string {
    if (this.#clock === undefined) return ''
    const now = Math.floor(this.#clock())
    if (!Number.isSafeInteger(now) || now < 0) {
      throw new ConfigError(
        `[fastlimit] [redis] clock() must return epoch milliseconds, got ${show(now)}. For example Date.now.`,
      )
    }
    return String(now)
  }

  #closedError(): FastlimitError {
    return new FastlimitError(
      'ERR_FASTLIMIT_CLOSED',
      '[fastlimit] [redis] This RedisBackend was closed; create a new one.',
    )
  }

  #wrap(err: unknown, what: string): FastlimitError {
    if (err instanceof FastlimitError) return err
    const message = (err instanceof Error ? err.message : String(err)).replace(/\.+$/, '')
    let hint = `Check that ${this.#where} is reachable; FastLimit applies its onBackendError policy meanwhile.`
    if (/\bTIME\b/.test(message) || /not allowed from script/i.test(message)) {
      hint =
        "This Redis refuses TIME in scripts: use timeSource: 'client' and keep your servers' clocks in sync."
    } else if (/WRONGTYPE/.test(message)) {
      hint = 'Another application wrote a key under this keyPrefix: give RedisBackend a keyPrefix of its own.'
    } else if (/NOPERM|NOAUTH|WRONGPASS/.test(message)) {
      hint =
        'Check the user name and password, and that the user may run EVAL, EVALSHA, HGET, HSET and PEXPIRE.'
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
    const client = this.#client
    if (client.status === 'ready') {
      this.#everReady = true
      return undefined
    }
    if (client.status === 'end') return Promise.reject(new Error('Connection is closed.'))
    this.#gate ??= new Promise<void>((resolve, reject) => {
      const settle = (err?: Error) => {
        client.off('ready', onReady)
        client.off('error', onError)
        client.off('end', onEnd)
        clearTimeout(timer)
        this.#gate = undefined
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
    })
    return this.#gate
  }

  /** Runs a script on the key; a key that is not UTF-8 (lone surrogates) goes through a pipeline of its own. */
  async #run(
    script: ScriptDefinition,
    key: string,
    args: Array<string | number>,
    what: string,
  ): Promise<unknown> {
    if (this.#closed) throw this.#closedError()
    checkKey(key)
    const k = redisKey(this.#prefix, key)
    try {
      const gate = this.#ready()
      if (gate !== undefined) await gate
      if (typeof k !== 'string' && this.#client.isCluster) {
        // Auto-pipelining groups commands by the slot of the key decoded as UTF-8, which is wrong for
        // such bytes: send this one alone, routed by its real slot.
        const pipeline = this.#client.pipeline() as unknown as Commands & {
          exec(): Promise<Array<[Error | null, unknown]>>
        }
        ;(pipeline[script.name] as ScriptFn)(k, ...args)
        const [[err, reply] = [null, undefined]] = await pipeline.exec()
        if (err) throw err
        return reply
      }
      return await (this.#commands[script.name] as ScriptFn)(k, ...args)
    } catch (err) {
      throw this.#wrap(err, what)
    }
  }

  /** {@inheritDoc Backend.checkAndIncrement} One EVALSHA, atomic on the server. */
  async checkAndIncrement(key: string, bucket: BucketConfig, cost: number): Promise<BackendResult> {
    checkCost(cost)
    return this.#one(key, bucket, cost, 'checkAndIncrement')
  }

  async #one(key: string, bucket: BucketConfig, cost: number, what: string): Promise<BackendResult> {
    const script = scriptOf(bucket)
    const reply = await this.#run(
      script,
      key,
      [
        this.#now(),
        bucketId(bucket),
        bucket.limit,
        bucket.windowMs,
        bucket.burst ?? bucket.limit,
        cost,
        this.#margin,
      ],
      what,
    )
    return readResult(checkReply(reply, 1), 0)
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
    const args: Array<string | number> = [this.#now(), cost, this.#margin, buckets.length]
    for (const bucket of buckets) {
      scriptOf(bucket)
      args.push(
        bucket.algorithm,
        bucketId(bucket),
        bucket.limit,
        bucket.windowMs,
        bucket.burst ?? bucket.limit,
      )
    }
    const reply = checkReply(await this.#run(ALL_SCRIPT, key, args, 'checkAndIncrementAll'), buckets.length)
    const results: BackendResult[] = new Array(buckets.length)
    for (let i = 0; i < buckets.length; i++) results[i] = readResult(reply, i * 5)
    return results
  }

  /** {@inheritDoc Backend.peek} The algorithm's script with cost 0: reads, writes nothing. */
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
