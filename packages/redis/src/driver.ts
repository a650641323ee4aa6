// The one internal interface RedisBackend speaks to a Redis client through (ioredis, iovalkey, node-redis,
// Valkey GLIDE), the client types it accepts, and how it tells them apart from the object passed in.
import type { ConfigError } from '@fastlimit/core'
import type { Cluster, Redis } from 'ioredis'
import type { ScriptDefinition } from './scripts'

/**
 * A node-redis (`redis` v5 or later, `@redis/client`) client made by `createClient`, connected. The
 * members RedisBackend uses; every `RedisClientType` has them.
 */
export interface NodeRedisClient {
  sendCommand(args: ReadonlyArray<string | Buffer>, options?: object): Promise<unknown>
  connect(): Promise<unknown>
  destroy(): void
  readonly isOpen: boolean
  readonly isReady: boolean
  on(event: 'ready', listener: (...args: unknown[]) => void): unknown
  off(event: 'ready', listener: (...args: unknown[]) => void): unknown
}

/** A node-redis Cluster made by `createCluster` (v5 or later), connected. */
export interface NodeRedisCluster {
  sendCommand(
    firstKey: string | Buffer | undefined,
    isReadonly: boolean | undefined,
    args: ReadonlyArray<string | Buffer>,
    options?: object,
  ): Promise<unknown>
  readonly masters: ReadonlyArray<object>
  nodeClient(node: never): Promise<unknown> | unknown
  connect(): Promise<unknown>
  destroy(): void
  readonly isOpen: boolean
  /** Since node-redis 6. */
  readonly isReady?: boolean
}

/** A Valkey GLIDE `GlideClient` (standalone, `@valkey/valkey-glide` 2.x), from `GlideClient.createClient`. */
export interface GlideClient {
  customCommand(args: Array<string | Buffer>, options?: object): Promise<unknown>
  invokeScript(script: never, options?: object): Promise<unknown>
  close(errorMessage?: string): void
}

/** A Valkey GLIDE `GlideClusterClient` (`@valkey/valkey-glide` 2.x), from `GlideClusterClient.createClient`. */
export interface GlideClusterClient extends GlideClient {
  invokeScriptWithRoute(script: never, options?: object): Promise<unknown>
}

/**
 * An `iovalkey` client (`Redis`/`Valkey` or `Cluster`): a fork of ioredis, used as ioredis is. The members
 * RedisBackend checks; the rest is ioredis's.
 */
export interface IovalkeyClient {
  defineCommand(name: string, definition: { lua: string; numberOfKeys?: number }): void
  sendCommand(command: never, stream?: never): unknown
  readonly status: string
  readonly isCluster: boolean
  readonly options: object
}

/**
 * Every client RedisBackend takes: an ioredis `Redis` (standalone or Sentinel) or `Cluster`, an
 * `iovalkey` one, a node-redis client or Cluster, or a Valkey GLIDE client or cluster client.
 */
export type RedisClient =
  | Redis
  | Cluster
  | IovalkeyClient
  | NodeRedisClient
  | NodeRedisCluster
  | GlideClient
  | GlideClusterClient

/** Which library a client comes from. */
export type ClientKind = 'ioredis' | 'node-redis' | 'glide'

/** What a driver needs to know from RedisBackend. */
export interface DriverOptions {
  /** RedisBackend created the client (from a URL), and closes it. */
  readonly owned: boolean
  /** The script of this backend's calls (ioredis defines it for auto-pipelining). */
  readonly script: ScriptDefinition
  /** `WAIT replicas timeoutMs` after the calls that may charge (ioredis only). */
  readonly waitReplicas: { readonly replicas: number; readonly timeoutMs: number } | undefined
  /** Whether a script reply admitted (and so charged): only an admission can be lost in a failover. */
  readonly admitted: (reply: unknown) => boolean
}

/**
 * RedisBackend's view of one client. Every command RedisBackend sends goes through it, so a method
 * RedisBackend gains works on every client.
 */
export interface Driver {
  readonly kind: ClientKind
  /** The client, as given (or created from the URL). */
  readonly client: RedisClient
  readonly isCluster: boolean
  /** Where the calls go, for messages: `'Redis'` or `'the Redis Cluster'`. */
  readonly where: string
  /**
   * `undefined` once the client took its first call (connected, a Cluster's primaries too, the server's
   * clock sampled); until then a promise that settles when it may, rejecting when an attempt fails.
   */
  ready(): Promise<void> | undefined
  /**
   * Runs `script`: `args` is `[sha, numberOfKeys, key, ...argv]`; EVALSHA, and EVAL once on NOSCRIPT.
   * With `at >= 0`, `args[at]` gets the server deadline of `deadline` (app epoch ms) when it is sent.
   * `charges`: the call may write (`waitReplicas` waits after it). `what` names the call in errors.
   */
  script(
    script: ScriptDefinition,
    args: Array<string | Buffer>,
    at: number,
    deadline: number,
    charges: boolean,
    what: string,
  ): Promise<unknown>
  /** UNLINK of one key (routed by its slot). */
  unlink(key: string | Buffer): Promise<void>
  /** SCAN for `pattern` and UNLINK every key found, on every primary. */
  clear(pattern: string): Promise<void>
  /** Drops the connections and connects again (see RedisBackend.reconnect). */
  reconnect(): void
  /** RedisBackend is closed: stop listening, and close the client if it is `owned`. */
  close(): Promise<void>
  /** A ConfigError for an error that shows the client does not fit its server, else undefined. */
  explain(err: unknown, where: string): ConfigError | undefined
}

/**
 * Which library `client` comes from, by the members it has (no `instanceof`: two copies of a library, or
 * a wrapper, work too):
 * - ioredis and iovalkey: `defineCommand()` and a `status` string;
 * - node-redis: `sendCommand()` and `isOpen`; a Cluster also has `masters` and `nodeClient()` (a pool,
 *   with `totalClients`, and a `createSentinel` client, with `getSentinelNode()`, are not taken);
 * - Valkey GLIDE: `customCommand()` and `invokeScript()`; a cluster client also has `invokeScriptWithRoute()`.
 * `undefined` for anything else.
 */
export function clientKind(client: unknown): ClientKind | undefined {
  if (typeof client !== 'object' || client === null) return undefined
  const c = client as Record<string, unknown>
  if (typeof c.defineCommand === 'function' && typeof c.status === 'string') return 'ioredis'
  if (typeof c.customCommand === 'function' && typeof c.invokeScript === 'function') return 'glide'
  // node-redis pools and Sentinel clients route commands their own way (not supported).
  if ('totalClients' in c || typeof c.getSentinelNode === 'function') return undefined
  if (typeof c.sendCommand === 'function' && 'isOpen' in c) return 'node-redis'
  return undefined
}

/** Whether a node-redis client is a Cluster (`createCluster`). */
export function isNodeRedisCluster(client: NodeRedisClient | NodeRedisCluster): client is NodeRedisCluster {
  return typeof (client as Partial<NodeRedisCluster>).nodeClient === 'function' && 'masters' in client
}

/** Whether a GLIDE client is a cluster client. */
export function isGlideCluster(client: GlideClient | GlideClusterClient): client is GlideClusterClient {
  return typeof (client as Partial<GlideClusterClient>).invokeScriptWithRoute === 'function'
}

/** The reply of a script as text: a client set to return Buffers gives one. */
export function text(reply: unknown): unknown {
  return Buffer.isBuffer(reply) ? reply.toString() : reply
}

/** Whether `err` is NOSCRIPT (the script is not in the server's cache; it did not run). */
export function isNoScript(err: unknown): boolean {
  if (!(err instanceof Error)) return false
  // GLIDE: "An error was signalled by the server: - NoScriptError: No matching script. Please use EVAL."
  return err.message.startsWith('NOSCRIPT') || /\bNoScriptError\b/.test(err.message)
}

/** Replies of a node that is no longer the master: its connection is dropped to find the master again. */
export const NOT_MASTER = /^(READONLY|MASTERDOWN)\b/
