// The driver of ioredis and iovalkey clients (standalone, Sentinel, Cluster): our own EVALSHA commands,
// the calls of one tick corked into one write, WAIT after them (waitReplicas), the server's clock per
// socket, connections dropped at once on reconnect() or a reply from a replica.
import { ConfigError, FastlimitError } from '@fastlimit/core'
import type { Cluster, Redis } from 'ioredis'
import { connectionProblem, explain } from './client'
import { hasSample, release, retain, sampleAll, serverDeadline, setSampler, watch } from './clock'
import { runnerFor, type ScriptCall, type ScriptRunner } from './command'
import { type Driver, type DriverOptions, NOT_MASTER } from './driver'
import type { ScriptDefinition } from './scripts'

type ScriptFn = (key: string | Buffer, ...args: string[]) => Promise<unknown>
type Commands = Record<string, ScriptFn>

/**
 * Drops one connection at once, so that every command queued on it fails now and none is written later,
 * and lets ioredis connect again (a Cluster's node leaves the Cluster's pool, which finds it again).
 * ioredis's `disconnect()` would `end()` the socket and wait for the peer (2 s, then destroy it) while
 * the commands stay queued, and might re-send them after reconnecting (`maxRetriesPerRequest`,
 * `autoResendUnfulfilledCommands`): the socket is reset instead, and the queued commands are failed.
 * Commands already in the server's buffers may still run: their deadline makes them charge nothing.
 */
function drop(node: Redis): boolean {
  const status = node.status
  if (status !== 'ready' && status !== 'connect' && status !== 'connecting') return false
  const stream = node.stream as
    | { destroyed?: boolean; connecting?: boolean; destroy(): void; resetAndDestroy?: () => void }
    | undefined
  const flush = (node as unknown as { flushQueue?: (err: Error, o: { commandQueue: boolean }) => void })
    .flushQueue
  const err = () => new Error('Connection dropped (RedisBackend.reconnect, or a reply from a replica).')
  if (status === 'connecting' && (stream === undefined || stream.destroyed === true)) {
    // An attempt with no socket yet: a Sentinel client asking the sentinels for the master (which may take
    // a while after a failover), or a socket about to be opened. disconnect() would abort the attempt, and
    // ioredis ends a client whose attempt was aborted ('end': it never connects again, every call fails
    // with "Connection is closed."). The attempt goes on; only the calls queued offline fail now.
    if (typeof flush === 'function') flush.call(node, err(), { commandQueue: false })
    return false
  }
  // The next attempt comes after the first delay of the retry strategy, not after a backoff grown by
  // earlier attempts: the breaker already paces these (one per breaker.openMs at most).
  ;(node as unknown as { retryAttempts?: number }).retryAttempts = 0
  if (stream === undefined || stream.destroyed === true) {
    node.disconnect(true)
    return true
  }
  try {
    // RST: the bytes not sent yet are discarded with the socket (Node >= 18.3; TCP sockets only).
    if (typeof stream.resetAndDestroy === 'function' && stream.connecting !== true) stream.resetAndDestroy()
    else stream.destroy()
  } catch {
    stream.destroy()
  }
  // Before 'ready' the command queue holds ioredis's handshake, which its own close handling ends.
  if (typeof flush === 'function') flush.call(node, err(), { commandQueue: status === 'ready' })
  return true
}

/** This tick's `WAIT` on one connection, sent when the tick ends (after every call written in it). */
interface Wait {
  readonly node: Redis
  /** How many replicas acknowledged (WAIT's reply); -1 when WAIT failed. */
  readonly promise: Promise<number>
  resolve(acked: number): void
}

/** An ioredis or iovalkey client (iovalkey is an ioredis fork with the same members). */
export class IoredisDriver implements Driver {
  readonly kind = 'ioredis'
  readonly client: Redis | Cluster
  readonly isCluster: boolean
  readonly where: string
  private readonly owned: boolean
  private readonly waitReplicas: { readonly replicas: number; readonly timeoutMs: number } | undefined
  /** The script of this backend's calls, and its runner (others are looked up). */
  private readonly script0: ScriptDefinition
  private readonly runner0: ScriptRunner
  private readonly admitted: (reply: unknown) => boolean
  /** Auto-pipelining: calls go through ioredis's defined commands (which join its pipeline). */
  private readonly defined: boolean
  private closed = false
  private everReady = false
  private gate: Promise<void> | undefined
  private corked: Array<{ uncork(): void }> | undefined
  private waits: Map<object, Wait> | undefined
  private tickScheduled = false

  /** @throws ConfigError for waitReplicas with auto-pipelining */
  constructor(client: Redis | Cluster, options: DriverOptions) {
    this.client = client
    this.isCluster = client.isCluster
    this.owned = options.owned
    this.waitReplicas = options.waitReplicas
    this.script0 = options.script
    this.runner0 = runnerFor(options.script)
    this.admitted = options.admitted
    this.where = client.isCluster ? 'the Redis Cluster' : 'Redis'
    this.defined = client.options.enableAutoPipelining === true
    if (this.defined && this.waitReplicas !== undefined) {
      throw new ConfigError(
        '[fastlimit] [redis] waitReplicas needs a client without enableAutoPipelining: its WAIT must follow ' +
          "the calls on their connection. Turn auto-pipelining off (RedisBackend's default), or remove waitReplicas.",
      )
    }
    retain(client)
    setSampler(client, () => sampleAll(client))
    if (client.isCluster) {
      // Every primary is connected once the Cluster is ready, and every primary announced later as soon as
      // it is known (see #connectNode); each samples the server's clock whenever it connects.
      client.on('+node', this.connectNode)
      client.on('ready', this.connectMasters)
      if (client.status === 'ready') this.connectMasters()
    } else {
      watch(client as Redis, client)
    }
    if (this.defined) this.define(options.script)
  }

  /** Defines `script` as an ioredis command (once per client and script text): it joins the auto-pipeline. */
  private define(script: ScriptDefinition): ScriptFn {
    const commands = this.client as unknown as Commands
    if (typeof commands[script.name] !== 'function') {
      this.client.defineCommand(script.name, { lua: script.lua, numberOfKeys: 1 })
    }
    return commands[script.name] as ScriptFn
  }

  /**
   * Connects a Cluster's primary as soon as the Cluster announces it, once the Cluster is ready: without
   * an offline queue, ioredis fails the calls that reach a node while it connects. Never while the
   * Cluster itself connects: its ready check (CLUSTER INFO) goes to any node, and fails on one that is
   * connecting, which sends the Cluster into a reconnect loop.
   */
  private readonly connectNode = (node: Redis): void => {
    if (this.closed || node.options.readOnly === true) return
    watch(node, this.client)
    if (this.client.status === 'ready' && node.status === 'wait') node.connect().catch(() => undefined)
  }

  private readonly connectMasters = (): void => {
    for (const node of (this.client as Cluster).nodes('master')) this.connectNode(node)
  }

  explain(err: unknown, where: string): ConfigError | undefined {
    return explain(this.client, err, where)
  }

  ready(): Promise<void> | undefined {
    if (this.everReady) return undefined
    const client = this.client
    if (this.owned) {
      const problem = connectionProblem(client)
      if (problem !== undefined) return Promise.reject(problem)
    }
    if (client.status === 'ready' && mastersReady(client) && hasSample(client)) {
      this.everReady = true
      return undefined
    }
    if (client.status === 'end') return Promise.reject(new Error('Connection is closed.'))
    this.gate ??= (async () => {
      try {
        await untilReady(client)
        // A Cluster connects to its nodes lazily, and fails calls to a node still connecting (with no
        // offline queue): connect every primary before the first call. A node that fails is left to the
        // calls routed to it.
        if (client.isCluster) {
          const nodes = (client as Cluster).nodes('master')
          await Promise.all(nodes.map((node) => untilReady(node).catch(() => undefined)))
        }
        await sampleAll(client)
        this.everReady = true
      } finally {
        this.gate = undefined
      }
    })()
    return this.gate
  }

  script(
    script: ScriptDefinition,
    args: Array<string | Buffer>,
    at: number,
    deadline: number,
    charges: boolean,
    what: string,
  ): Promise<unknown> {
    if (this.defined) return this.sendDefined(script, args, at, deadline)
    this.cork()
    return this.call(script, args, at, deadline, charges, what)
  }

  /**
   * One call through our own command; once more on NOSCRIPT. A reply from a node that is no longer the
   * master drops that connection. With `waitReplicas`, a call that may charge is answered after the
   * WAIT that follows it on its connection, and an admission that too few replicas acknowledged is a
   * failure (the master charged it, and a failover could lose that).
   */
  private async call(
    script: ScriptDefinition,
    args: Array<string | Buffer>,
    at: number,
    deadline: number,
    charges: boolean,
    what: string,
  ): Promise<unknown> {
    const runner = script === this.script0 ? this.runner0 : runnerFor(script)
    let call: ScriptCall = runner.send(this.client, args, at, deadline)
    const wait = this.waitReplicas !== undefined && charges ? this.waitOn(call.socket) : undefined
    try {
      let reply: unknown
      try {
        reply = await call.promise
      } catch (err) {
        if (!runner.noScript(err)) throw err
        call = runner.send(this.client, args, at, deadline)
        reply = await call.promise
      }
      if (wait !== undefined) {
        const acked = await wait
        const want = (this.waitReplicas as { replicas: number }).replicas
        // A denial wrote nothing: only an admission can be lost in a failover.
        if (acked < want && this.admitted(reply)) throw this.unreplicated(acked, what)
      }
      return reply
    } catch (err) {
      this.failed(err, call.socket)
      throw err
    }
  }

  /** The error of an admission that too few replicas acknowledged in time. */
  private unreplicated(acked: number, what: string): FastlimitError {
    const { replicas, timeoutMs } = this.waitReplicas as { replicas: number; timeoutMs: number }
    const got = acked < 0 ? 'WAIT failed' : `only ${acked} of ${replicas} replicas acknowledged the write`
    return new FastlimitError(
      'ERR_FASTLIMIT_BACKEND',
      `[fastlimit] [redis] ${what} was admitted by the master, but ${got} within ${timeoutMs} ms (waitReplicas): ` +
        'a failover now could lose the charge, so it is reported as a failure and FastLimit applies its ' +
        'onBackendError policy. Check the replicas (INFO replication: their link and lag).',
    )
  }

  /** After a call failed on `socket`: a node that is no longer the master loses its connection. */
  private failed(err: unknown, socket: object | undefined): void {
    if (!(err instanceof Error) || !NOT_MASTER.test(err.message) || this.closed) return
    const client = this.client
    const node = client.isCluster
      ? (client as Cluster).nodes('all').find((n) => n.stream === socket)
      : (client as Redis)
    // Once per connection: the calls that follow on the same socket find it dropped already.
    if (node !== undefined && (socket === undefined || node.stream === socket)) this.dropConnection(node)
  }

  /**
   * Through ioredis's defined command, which joins its auto-pipeline (and handles NOSCRIPT itself). The
   * deadline is converted when the call is made (the connection it will use is not known: a Cluster's
   * latest sample stands for every node). A key that is not UTF-8 (lone surrogates) goes through a
   * pipeline of its own on a Cluster, routed by its real slot: auto-pipelining groups commands by the
   * key read as UTF-8.
   */
  private async sendDefined(
    script: ScriptDefinition,
    args: Array<string | Buffer>,
    at: number,
    deadline: number,
  ): Promise<unknown> {
    const client = this.client
    const fn = this.define(script)
    if (at >= 0) {
      const socket = client.isCluster ? undefined : ((client as Redis).stream as object | undefined)
      const d = serverDeadline(socket, client, deadline)
      args[at] = d === undefined ? '' : String(d)
    }
    const [, , key, ...argv] = args as [string, string, string | Buffer, ...string[]]
    try {
      if (typeof key !== 'string' && client.isCluster) {
        const pipeline = client.pipeline() as unknown as Commands & {
          exec(): Promise<Array<[Error | null, unknown]>>
        }
        ;(pipeline[script.name] as ScriptFn).call(pipeline, key, ...argv)
        const [[err, reply] = [null, undefined]] = await pipeline.exec()
        if (err) throw err
        return reply
      }
      return await fn.call(client, key, ...argv)
    } catch (err) {
      if (!client.isCluster) this.failed(err, undefined)
      throw err
    }
  }

  /**
   * Holds this tick's writes on the connection (`socket.cork()`) and sends them together at its end
   * (`uncork()` on `process.nextTick`): concurrent calls share a write and a round trip, as with
   * auto-pipelining, without its wait for the next turn of the event loop. A lone call still goes out
   * in the tick it was made.
   */
  private cork(): void {
    if (this.corked !== undefined) return
    const client = this.client
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
    this.corked = corked
    this.endOfTick()
  }

  private endOfTick(): void {
    if (this.tickScheduled) return
    this.tickScheduled = true
    process.nextTick(this.tickEnded)
  }

  /** At the end of the tick: this tick's WAITs go out after its calls, then everything is written. */
  private readonly tickEnded = (): void => {
    this.tickScheduled = false
    const waits = this.waits
    this.waits = undefined
    if (waits !== undefined) {
      const { replicas, timeoutMs } = this.waitReplicas as { replicas: number; timeoutMs: number }
      for (const w of waits.values()) {
        w.node.call('WAIT', String(replicas), String(timeoutMs)).then(
          (acked) => w.resolve(Number(acked)),
          () => w.resolve(-1),
        )
      }
    }
    const corked = this.corked
    this.corked = undefined
    if (corked !== undefined) for (const stream of corked) stream.uncork()
  }

  /** This tick's WAIT on the connection `socket`, to follow the calls written on it (undefined if gone). */
  private waitOn(socket: object | undefined): Promise<number> | undefined {
    if (socket === undefined) return undefined
    let w = this.waits?.get(socket)
    if (w !== undefined) return w.promise
    const client = this.client
    const node = client.isCluster
      ? (client as Cluster).nodes('master').find((n) => n.stream === socket)
      : (client as Redis).stream === socket
        ? (client as Redis)
        : undefined
    if (node === undefined) return undefined
    let resolve = (_acked: number): void => undefined
    const promise = new Promise<number>((r) => {
      resolve = r
    })
    w = { node, promise, resolve }
    this.waits ??= new Map()
    this.waits.set(socket, w)
    this.endOfTick()
    return promise
  }

  async unlink(key: string | Buffer): Promise<void> {
    const client = this.client
    if (typeof key !== 'string' && client.isCluster) {
      const [[err] = [null]] = (await client.pipeline().unlink(key).exec()) ?? []
      if (err) throw err
    } else await client.unlink(key)
  }

  async clear(pattern: string): Promise<void> {
    await this.connected()
    const nodes: Redis[] = this.client.isCluster
      ? (this.client as Cluster).nodes('master')
      : [this.client as Redis]
    await Promise.all(nodes.map((node) => clearNode(node, pattern)))
  }

  /** Waits until the client is ready (a Cluster knows its primaries only then). */
  private async connected(): Promise<void> {
    const gate = this.ready()
    if (gate !== undefined) await gate
    const client = this.client
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

  reconnect(): void {
    if (this.closed) return
    const client = this.client
    if (client.isCluster) {
      // Each node is dropped from the Cluster's pool; the Cluster connects it again on the next call
      // routed to it (its other nodes keep serving).
      for (const node of (client as Cluster).nodes('all')) drop(node)
    } else {
      this.dropConnection(client as Redis)
    }
  }

  /** Drops a standalone or Sentinel connection (or a Cluster node) and makes sure it connects again. */
  private dropConnection(node: Redis): void {
    // A Cluster's node leaves its pool, and the Cluster finds it again.
    if (!drop(node) || node !== this.client) return
    // A client with no retryStrategy would stay closed: connect it again.
    if (typeof node.options.retryStrategy !== 'function') {
      node.once('end', () => {
        if (!this.closed) node.connect().catch(() => undefined)
      })
    }
  }

  close(): Promise<void> {
    this.closed = true
    const client = this.client
    if (client.isCluster) {
      client.off('+node', this.connectNode)
      client.off('ready', this.connectMasters)
    }
    release(client)
    if (!this.owned) return Promise.resolve()
    return (async () => {
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
      // QUIT ends the connection but not a Sentinel client's failover detector (its subscriptions to
      // the sentinels): disconnect() does.
      if (!client.isCluster && 'sentinels' in client.options && client.options.sentinels) client.disconnect()
    })()
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
