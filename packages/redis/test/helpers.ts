// Shared by the test files: backends on the global setup's servers, and counting our keys with SCAN.
import { Cluster, Redis } from 'ioredis'
import { inject } from 'vitest'
import { RedisBackend, type RedisBackendOptions } from '../src'

export type Topology = 'standalone' | 'cluster' | 'sentinel'

/** The URL of a topology started by the global setup. */
export function urlOf(topology: Topology): string {
  return inject('redis')[topology].url
}

/** A backend on a topology; the test owns it (close it). */
export function backendOn(
  topology: Topology,
  options: Omit<RedisBackendOptions, 'url' | 'client'> = {},
): RedisBackend {
  return RedisBackend.fromUrl(urlOf(topology), options)
}

/** A plain ioredis client of a topology, for inspecting what the backend wrote. */
export function rawClient(topology: Topology): Redis | Cluster {
  const t = inject('redis')
  if (topology === 'cluster') return new Cluster(t.cluster.nodes, { redisOptions: { protocol: 2 } })
  if (topology === 'sentinel')
    return new Redis({ sentinels: t.sentinel.sentinels, name: t.sentinel.masterName })
  return new Redis({ port: t.standalone.port, host: '127.0.0.1' })
}

/** Every key (as Buffers) matching a glob pattern, on every primary. */
export async function scanKeys(client: Redis | Cluster, pattern: string): Promise<Buffer[]> {
  if (client.status !== 'ready') {
    await new Promise<void>((resolve, reject) => {
      client.once('ready', () => resolve())
      client.once('end', () => reject(new Error('closed')))
    })
  }
  const nodes = client instanceof Cluster ? client.nodes('master') : [client]
  const out: Buffer[] = []
  for (const node of nodes) {
    let cursor = '0'
    do {
      const [next, keys] = await node.scanBuffer(cursor, 'MATCH', pattern, 'COUNT', 1000)
      cursor = next.toString()
      out.push(...keys)
    } while (cursor !== '0')
  }
  return out
}

/** How many keys a backend holds under `prefix` (SCAN on every primary of its own client). */
export async function countKeys(backend: RedisBackend, prefix: string): Promise<number> {
  return (await scanKeys(backend.client, `${prefix}*`)).length
}

/** Closes an ioredis client we opened in a test. */
export async function closeClient(client: Redis | Cluster): Promise<void> {
  try {
    await client.quit()
  } catch {
    client.disconnect()
  }
}
