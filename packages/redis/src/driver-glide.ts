// The driver of Valkey GLIDE clients (`@valkey/valkey-glide` 2.x: GlideClient and GlideClusterClient).
// Raw commands through `customCommand` (EVALSHA, EVAL once on NOSCRIPT), which GLIDE routes by the key on
// a cluster; the server's clock sampled per client. GLIDE keeps its own connections (it reconnects by
// itself, and fails a call after its requestTimeout): reconnect() has nothing to drop.
import { ConfigError } from '@fastlimit/core'
import { hasSample, release, retain, sampleClient, serverDeadline, setSampler } from './clock'
import {
  type Driver,
  type DriverOptions,
  type GlideClient,
  type GlideClusterClient,
  isGlideCluster,
  isNoScript,
  text,
} from './driver'
import type { ScriptDefinition } from './scripts'

/** GLIDE's `Decoder.Bytes`: replies as Buffers (keys that are not UTF-8). */
const BYTES = 0

/** A multi-node reply of a GLIDE cluster client: one `{ key: address, value }` per node. */
type NodeReplies = Array<{ key: string | Buffer; value: unknown }>

/** A GLIDE standalone or cluster client. */
export class GlideDriver implements Driver {
  readonly kind = 'glide'
  readonly client: GlideClient | GlideClusterClient
  readonly isCluster: boolean
  readonly where: string
  private everReady = false
  private gate: Promise<void> | undefined

  /** @throws ConfigError for waitReplicas (ioredis and iovalkey only) */
  constructor(client: GlideClient | GlideClusterClient, options: DriverOptions) {
    if (options.waitReplicas !== undefined) {
      throw new ConfigError(
        '[fastlimit] [redis] waitReplicas needs an ioredis or iovalkey client: its WAIT must follow the calls on ' +
          'their connection, which GLIDE does not show. Remove waitReplicas, or pass an ioredis client.',
      )
    }
    this.client = client
    this.isCluster = isGlideCluster(client)
    this.where = this.isCluster ? 'the Valkey/Redis Cluster' : 'Valkey/Redis'
    retain(client)
    setSampler(client, this.sample)
  }

  /** Samples the clock of every primary (TIME). */
  private readonly sample = (): Promise<void> =>
    sampleClient(this.client, async () => {
      if (!this.isCluster) return [(await this.client.customCommand(['TIME'])) as [unknown, unknown]]
      const replies = (await this.client.customCommand(['TIME'], { route: 'allPrimaries' })) as NodeReplies
      return replies.map((reply) => reply.value as [unknown, unknown])
    })

  explain(): ConfigError | undefined {
    return undefined
  }

  ready(): Promise<void> | undefined {
    if (this.everReady) return undefined
    if (hasSample(this.client)) {
      this.everReady = true
      return undefined
    }
    // GLIDE's createClient resolves once connected: only the clock is missing.
    this.gate ??= this.sample().finally(() => {
      this.gate = undefined
      if (hasSample(this.client)) this.everReady = true
    })
    return this.gate
  }

  async script(
    script: ScriptDefinition,
    args: Array<string | Buffer>,
    at: number,
    deadline: number,
  ): Promise<unknown> {
    if (at >= 0) {
      const d = serverDeadline(undefined, this.client, deadline)
      args[at] = d === undefined ? '' : String(d)
    }
    try {
      return text(await this.client.customCommand(['EVALSHA', ...args]))
    } catch (err) {
      if (!isNoScript(err)) throw err
      // The script did not run: send its source (the server caches it for the next EVALSHA).
      const [, ...rest] = args
      return text(await this.client.customCommand(['EVAL', script.lua, ...rest]))
    }
  }

  async unlink(key: string | Buffer): Promise<void> {
    await this.client.customCommand(['UNLINK', key])
  }

  async clear(pattern: string): Promise<void> {
    const gate = this.ready()
    if (gate !== undefined) await gate
    const page = ['MATCH', pattern, 'COUNT', '1000']
    if (!this.isCluster) {
      await clearNode(
        (cursor) => this.client.customCommand(['SCAN', cursor, ...page], { decoder: BYTES }),
        this.client,
      )
      return
    }
    // The first page of every primary, then each primary's further pages by its address.
    const first = (await this.client.customCommand(['SCAN', '0', ...page], {
      route: 'allPrimaries',
      decoder: BYTES,
    })) as NodeReplies
    await Promise.all(
      first.map(({ key, value }) => {
        const address = key.toString()
        const colon = address.lastIndexOf(':')
        const route = {
          type: 'routeByAddress',
          host: address.slice(0, colon),
          port: Number(address.slice(colon + 1)),
        }
        return clearNode(
          (cursor) => this.client.customCommand(['SCAN', cursor, ...page], { route, decoder: BYTES }),
          this.client,
          value,
        )
      }),
    )
  }

  /** GLIDE shows no connection to drop: it reconnects by itself, and its requestTimeout fails stuck calls. */
  reconnect(): void {}

  close(): Promise<void> {
    release(this.client)
    return Promise.resolve()
  }
}

/** Deletes the keys of one node's SCAN pages (from `first`, else from cursor 0). */
async function clearNode(
  scan: (cursor: string) => Promise<unknown>,
  client: GlideClient,
  first?: unknown,
): Promise<void> {
  let reply = first ?? (await scan('0'))
  for (;;) {
    const [next, keys] = reply as [Buffer, Buffer[]]
    // One UNLINK per key, routed by its slot.
    await Promise.all(keys.map((key) => client.customCommand(['UNLINK', key])))
    const cursor = next.toString()
    if (cursor === '0') return
    reply = await scan(cursor)
  }
}
