// The clients of the client matrix (node-redis v6 and v5, iovalkey, Valkey GLIDE), each on a standalone
// server or a Cluster given by its ports, connected and ready; and how to close them.
import { GlideClient, GlideClusterClient, Logger } from '@valkey/valkey-glide'
import { Valkey, Cluster as ValkeyCluster } from 'iovalkey'
import { createClient, createCluster } from 'redis'
import { createClient as createClientV5, createCluster as createClusterV5 } from 'redis-v5'
import { inject } from 'vitest'
import type { RedisClient } from '../src'

/** A client library of the matrix. */
export type MatrixKind = 'node-redis' | 'node-redis-v5' | 'iovalkey' | 'glide'

/** Where the client connects: one server, or a Cluster's nodes. */
export type Target =
  | { readonly topology: 'standalone'; readonly port: number }
  | { readonly topology: 'cluster'; readonly nodes: ReadonlyArray<{ host: string; port: number }> }

/** The global setup's standalone server or Cluster. */
export function matrixTarget(topology: 'standalone' | 'cluster'): Target {
  const t = inject('redis')
  return topology === 'cluster' ? { topology, nodes: t.cluster.nodes } : { topology, port: t.standalone.port }
}

/** A connected client of the matrix, and how the test closes it. */
export interface MatrixClient {
  readonly client: RedisClient
  close(): Promise<void>
}

// GLIDE logs every error reply (NOSCRIPT, ...) at WARN: the tests provoke them on purpose.
Logger.setLoggerConfig('off')

const silence = () => undefined

/** Opens a client of `kind` on `target`, connected. */
export async function openClient(kind: MatrixKind, target: Target): Promise<MatrixClient> {
  const nodes = target.topology === 'cluster' ? target.nodes : [{ host: '127.0.0.1', port: target.port }]
  const first = nodes[0] as { host: string; port: number }
  switch (kind) {
    case 'node-redis':
    case 'node-redis-v5': {
      const v5 = kind === 'node-redis-v5'
      if (target.topology === 'cluster') {
        const rootNodes = nodes.map((n) => ({ url: `redis://${n.host}:${n.port}` }))
        const cluster = v5 ? createClusterV5({ rootNodes }) : createCluster({ rootNodes })
        cluster.on('error', silence)
        await cluster.connect()
        return { client: cluster, close: () => Promise.resolve(cluster.destroy()) }
      }
      const url = `redis://${first.host}:${first.port}`
      const client = v5 ? createClientV5({ url }) : createClient({ url })
      client.on('error', silence)
      await client.connect()
      return { client, close: () => Promise.resolve(client.destroy()) }
    }
    case 'iovalkey': {
      const client =
        target.topology === 'cluster'
          ? new ValkeyCluster(nodes.map((n) => ({ host: n.host, port: n.port })))
          : new Valkey({ host: first.host, port: first.port })
      client.on('error', silence)
      await new Promise<void>((resolve, reject) => {
        client.once('ready', () => resolve())
        client.once('end', () => reject(new Error('iovalkey client ended before it was ready')))
      })
      return { client, close: () => Promise.resolve(client.disconnect()) }
    }
    case 'glide': {
      const addresses = nodes.map((n) => ({ host: n.host, port: n.port }))
      const client =
        target.topology === 'cluster'
          ? await GlideClusterClient.createClient({ addresses, requestTimeout: 2000 })
          : await GlideClient.createClient({ addresses, requestTimeout: 2000 })
      return { client, close: () => Promise.resolve(client.close()) }
    }
  }
}
