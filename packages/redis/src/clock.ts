// The Redis server's clock as seen from this process: a deadline on the app's Date.now() clock, turned into
// a deadline on the server's clock that is never later than the app's real one.
//
// Each connection (socket) has its own sample, taken with `TIME` when it becomes ready and again every few
// seconds: the server's time `s` was read before its reply arrived at `recv` (performance.now()), so at any
// later moment `mono` the server's clock reads at least `s + (mono - recv)`, less a drift allowance. A call
// written at `mono` with `remaining` ms left (`deadline - Date.now()`, both on the app's clock, read
// together) gets the server deadline `s + (mono - recv) + remaining`: at most one round trip (plus the
// event-loop delay at `recv`) earlier than the real one, never later. Between samples only the monotonic
// clock is used, so a step of the app's wall clock changes nothing; a step of the server's clock takes
// effect at the next sample.
import type { Cluster, Redis } from 'ioredis'

/** One sample: the server's clock reads at least `offset + performance.now()`. */
interface Sample {
  readonly offset: number
  /** performance.now() when it was taken. */
  readonly at: number
}

/** Clocks run apart by well under 100 ppm; allow that much between samples. */
const DRIFT = 1e-4
/** How often a connection's clock is sampled again (at the next call after this). */
export const SAMPLE_EVERY_MS = 5000

/** Per socket (`node.stream`). */
const bySocket = new WeakMap<object, Sample>()
/** Per client (standalone, Sentinel or Cluster): its latest sample on any connection, for a socket not sampled yet. */
const byClient = new WeakMap<object, Sample>()
/** Per client: performance.now() after which its connections are sampled again. */
const nextSample = new WeakMap<object, number>()
/** Sockets whose sample is on its way, and its promise. */
const sampling = new WeakMap<object, Promise<void>>()
/** Connections (Redis instances) that sample themselves on 'ready'. */
const watched = new WeakSet<object>()
/** Per client: how it samples every connection again (ioredis: {@link sampleAll}). */
const samplers = new WeakMap<object, () => Promise<void>>()
/** Per client without sockets of its own to sample (node-redis, GLIDE): its sample on its way. */
const clientSampling = new WeakMap<object, Promise<void>>()

/** How `client`'s connections are sampled again every {@link SAMPLE_EVERY_MS}. */
export function setSampler(client: object, sampler: () => Promise<void>): void {
  samplers.set(client, sampler)
}

/**
 * The server deadline (epoch ms on the server's clock) of a call whose app deadline is `deadline` (epoch
 * ms on Date.now()), written now on `socket` of `client`; undefined when neither was sampled yet.
 */
export function serverDeadline(
  socket: object | undefined,
  client: object,
  deadline: number,
): number | undefined {
  const sample = (socket === undefined ? undefined : bySocket.get(socket)) ?? byClient.get(client)
  if (sample === undefined) return undefined
  const mono = performance.now()
  // Sampled again every SAMPLE_EVERY_MS, by the first call after that (no timer).
  if (mono - sample.at > SAMPLE_EVERY_MS) {
    const due = nextSample.get(client)
    if (due === undefined || mono >= due)
      void (samplers.get(client) ?? sampleAll.bind(null, client as Redis))()
  }
  // Date.now() floors: the real time left may be up to 1 ms less than `deadline - Date.now()`.
  const remaining = deadline - Date.now() - 1
  return Math.floor(sample.offset + mono + remaining - (mono - sample.at) * DRIFT)
}

/** Whether `client` has a sample on any connection. */
export function hasSample(client: object): boolean {
  return byClient.has(client)
}

/** The connections of a client whose clocks matter: the client, or a Cluster's primaries. */
function connections(client: Redis | Cluster): Redis[] {
  return client.isCluster ? (client as Cluster).nodes('master') : [client as Redis]
}

/**
 * Samples the clock of one connection with TIME (resolves when done; never rejects). A reply that comes
 * back on another socket than the one it was sent on (a reconnect meanwhile) is dropped.
 */
export function sample(node: Redis, client: object): Promise<void> {
  const socket = node.stream as object | undefined
  if (node.status !== 'ready' || socket === undefined) return Promise.resolve()
  let pending = sampling.get(socket)
  if (pending === undefined) {
    pending = (async () => {
      try {
        const [seconds, micros] = (await node.time()) as unknown as [string | number, string | number]
        const recv = performance.now()
        if (node.stream !== socket) return
        const server = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)
        if (!Number.isSafeInteger(server)) return
        const s: Sample = { offset: server - recv, at: recv }
        bySocket.set(socket, s)
        byClient.set(client, s)
      } catch {
        // The connection failed: its calls fail too, and the next one samples again.
      } finally {
        sampling.delete(socket)
      }
    })()
    sampling.set(socket, pending)
  }
  return pending
}

/** Samples every connection of `client` that is ready; resolves when all are done. */
export function sampleAll(client: Redis | Cluster): Promise<void> {
  nextSample.set(client, performance.now() + SAMPLE_EVERY_MS)
  return Promise.all(connections(client).map((node) => sample(node, client))).then(() => undefined)
}

/** Open backends per client: a client whose backends are all closed is no longer sampled. */
const users = new WeakMap<object, number>()

/** A backend starts using `client`. */
export function retain(client: object): void {
  users.set(client, (users.get(client) ?? 0) + 1)
}

/** A backend stops using `client` (closed). */
export function release(client: object): void {
  const n = (users.get(client) ?? 0) - 1
  if (n > 0) users.set(client, n)
  else users.delete(client)
}

/**
 * Samples a connection as soon as it is ready, and every time it connects again (a TIME right after the
 * handshake), while a backend uses `client`. Idempotent per connection.
 */
export function watch(node: Redis, client: object): void {
  if (watched.has(node)) return
  watched.add(node)
  node.on('ready', () => {
    if (users.has(client)) void sample(node, client)
  })
  if (node.status === 'ready') void sample(node, client)
}

/**
 * Samples the clock of a client whose sockets RedisBackend cannot see (node-redis, GLIDE): `read` sends
 * TIME to every primary and gives their replies (`[seconds, microseconds]`). One sample stands for the
 * client: the one whose clock reads earliest, and it was read before the last reply arrived, so the
 * deadline it gives is never later than the real one on any primary. Never rejects; one at a time.
 */
export function sampleClient(
  client: object,
  read: () => Promise<ReadonlyArray<readonly [unknown, unknown]>>,
): Promise<void> {
  nextSample.set(client, performance.now() + SAMPLE_EVERY_MS)
  let pending = clientSampling.get(client)
  if (pending === undefined) {
    pending = (async () => {
      try {
        const times = await read()
        const recv = performance.now()
        let offset = Number.POSITIVE_INFINITY
        for (const [seconds, micros] of times) {
          const server = Number(String(seconds)) * 1000 + Math.floor(Number(String(micros)) / 1000)
          if (Number.isSafeInteger(server)) offset = Math.min(offset, server - recv)
        }
        if (offset !== Number.POSITIVE_INFINITY) byClient.set(client, { offset, at: recv })
      } catch {
        // The connection failed: its calls fail too, and a later call samples again.
      } finally {
        clientSampling.delete(client)
      }
    })()
    clientSampling.set(client, pending)
  }
  return pending
}

/** Whether a backend still uses `client` (not every backend on it was closed). */
export function inUse(client: object): boolean {
  return users.has(client)
}
