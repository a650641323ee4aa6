// The driver of node-redis clients (`redis` v5 and later: createClient and createCluster). Raw commands
// through `sendCommand` (EVALSHA, EVAL once on NOSCRIPT), routed by the key on a Cluster; the server's
// clock sampled per client (node-redis does not show its sockets); reconnect() is destroy() + connect().
import { ConfigError } from '@fastlimit/core'
import { hasSample, release, retain, sampleClient, serverDeadline, setSampler } from './clock'
import {
  type Driver,
  type DriverOptions,
  isNodeRedisCluster,
  isNoScript,
  NOT_MASTER,
  type NodeRedisClient,
  type NodeRedisCluster,
  text,
} from './driver'
import type { ScriptDefinition } from './scripts'

/** RESP's blob string type (`$`): mapped to Buffer to read keys that are not UTF-8. */
const BLOB_STRING = 36
const AS_BUFFERS = { typeMapping: { [BLOB_STRING]: Buffer } }

/** A node-redis client or Cluster. */
export class NodeRedisDriver implements Driver {
  readonly kind = 'node-redis'
  readonly client: NodeRedisClient | NodeRedisCluster
  readonly isCluster: boolean
  readonly where: string
  private closed = false
  private everReady = false
  private gate: Promise<void> | undefined

  /** @throws ConfigError for waitReplicas (ioredis and iovalkey only) */
  constructor(client: NodeRedisClient | NodeRedisCluster, options: DriverOptions) {
    if (options.waitReplicas !== undefined) {
      throw new ConfigError(
        '[fastlimit] [redis] waitReplicas needs an ioredis or iovalkey client: its WAIT must follow the calls on ' +
          'their connection, which node-redis does not show. Remove waitReplicas, or pass an ioredis client.',
      )
    }
    this.client = client
    this.isCluster = isNodeRedisCluster(client)
    this.where = this.isCluster ? 'the Redis Cluster' : 'Redis'
    retain(client)
    setSampler(client, this.sample)
    // A new connection may reach another server (a failover behind one address): sample it again.
    if (!this.isCluster) (client as NodeRedisClient).on('ready', this.onReady)
  }

  private readonly onReady = (): void => {
    if (!this.closed && this.everReady) void this.sample()
  }

  /** Samples the clock of every primary (TIME). */
  private readonly sample = (): Promise<void> =>
    sampleClient(this.client, async () => {
      const nodes = await this.nodes()
      return (await Promise.all(nodes.map((node) => node.sendCommand(['TIME'])))) as Array<[unknown, unknown]>
    })

  /** The client, or a Cluster's primaries. */
  private async nodes(): Promise<NodeRedisClient[]> {
    if (!this.isCluster) return [this.client as NodeRedisClient]
    const cluster = this.client as NodeRedisCluster
    return (await Promise.all(
      cluster.masters.map((master) => cluster.nodeClient(master as never)),
    )) as NodeRedisClient[]
  }

  explain(): ConfigError | undefined {
    return undefined
  }

  ready(): Promise<void> | undefined {
    if (this.everReady) return undefined
    const client = this.client
    if (!client.isOpen) {
      return Promise.reject(
        new ConfigError(
          '[fastlimit] [redis] The node-redis client is not open: call `await client.connect()` before the ' +
            'first call (RedisBackend never opens or closes a client you pass).',
        ),
      )
    }
    if (client.isReady !== false && hasSample(client)) {
      this.everReady = true
      return undefined
    }
    // TIME waits in node-redis's offline queue until the client is ready (or fails, without one).
    this.gate ??= this.sample().finally(() => {
      this.gate = undefined
      if (hasSample(client)) this.everReady = true
    })
    return this.gate
  }

  /** Sends one command, routed by `key` on a Cluster. */
  private send(
    key: string | Buffer | undefined,
    args: Array<string | Buffer>,
    options?: object,
  ): Promise<unknown> {
    return this.isCluster
      ? (this.client as NodeRedisCluster).sendCommand(key, false, args, options)
      : (this.client as NodeRedisClient).sendCommand(args, options)
  }

  async script(
    script: ScriptDefinition,
    args: Array<string | Buffer>,
    at: number,
    deadline: number,
  ): Promise<unknown> {
    // Converted now: node-redis writes it in this tick, or after a reconnect (then the old sample's
    // conversion still stands for the same deadline).
    if (at >= 0) {
      const d = serverDeadline(undefined, this.client, deadline)
      args[at] = d === undefined ? '' : String(d)
    }
    const key = args[2] as string | Buffer
    try {
      try {
        return text(await this.send(key, ['EVALSHA', ...args]))
      } catch (err) {
        if (!isNoScript(err)) throw err
        // The script did not run: send its source (the server caches it for the next EVALSHA).
        const [, ...rest] = args
        return text(await this.send(key, ['EVAL', script.lua, ...rest]))
      }
    } catch (err) {
      // A standalone client behind one address that now reaches a replica: find the master again.
      if (!this.isCluster && err instanceof Error && NOT_MASTER.test(err.message)) this.reconnect()
      throw err
    }
  }

  async unlink(key: string | Buffer): Promise<void> {
    await this.send(key, ['UNLINK', key])
  }

  async clear(pattern: string): Promise<void> {
    const gate = this.ready()
    if (gate !== undefined) await gate
    await Promise.all((await this.nodes()).map((node) => clearNode(node, pattern)))
  }

  /**
   * Fails every call in flight at once and connects again: `destroy()` then `connect()` (of each primary's
   * client on a Cluster). node-redis queues the commands sent meanwhile until it is ready again.
   */
  reconnect(): void {
    if (this.closed) return
    if (this.isCluster) {
      const cluster = this.client as NodeRedisCluster
      for (const master of cluster.masters) {
        const node = (master as { client?: NodeRedisClient }).client
        if (node !== undefined) restart(node)
      }
    } else {
      restart(this.client as NodeRedisClient)
    }
  }

  close(): Promise<void> {
    this.closed = true
    if (!this.isCluster) (this.client as NodeRedisClient).off('ready', this.onReady)
    release(this.client)
    return Promise.resolve()
  }
}

/** destroy() and connect() again: calls in flight fail now, none is sent later on the old socket. */
function restart(client: NodeRedisClient): void {
  if (!client.isOpen) return
  client.destroy()
  client.connect().catch(() => undefined)
}

/** Deletes every key of one node that matches `pattern`, a SCAN page at a time. */
async function clearNode(node: NodeRedisClient, pattern: string): Promise<void> {
  let cursor = '0'
  do {
    const [next, keys] = (await node.sendCommand(
      ['SCAN', cursor, 'MATCH', pattern, 'COUNT', '1000'],
      AS_BUFFERS,
    )) as [Buffer, Buffer[]]
    cursor = next.toString()
    // One UNLINK per key (a Cluster node's command may not span slots); node-redis pipelines them.
    await Promise.all(keys.map((key) => node.sendCommand(['UNLINK', key])))
  } while (cursor !== '0')
}
