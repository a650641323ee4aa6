// Vitest global setup: one standalone Redis, one 3-master Cluster and one Sentinel group (1 master,
// 1 replica, 3 sentinels) for every test file, started in parallel and always stopped by PID.
import type { TestProject } from 'vitest/node'
import { startCluster, startSentinel, startStandalone, stopAll } from './servers'

/** Where the test servers listen; read it in a test with `inject('redis')`. */
export interface RedisTopologies {
  standalone: { url: string; port: number }
  cluster: { url: string; nodes: Array<{ host: string; port: number }> }
  sentinel: {
    url: string
    masterName: string
    sentinels: Array<{ host: string; port: number }>
    masterPort: number
  }
}

declare module 'vitest' {
  export interface ProvidedContext {
    redis: RedisTopologies
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  try {
    const [standalone, cluster, sentinel] = await Promise.all([
      startStandalone(),
      startCluster(),
      startSentinel(),
    ])
    project.provide('redis', {
      standalone: { url: standalone.url, port: standalone.port },
      cluster: { url: cluster.url, nodes: [...cluster.nodes] },
      sentinel: {
        url: sentinel.url,
        masterName: sentinel.masterName,
        sentinels: sentinel.sentinels.map((s) => ({ host: s.host, port: s.port })),
        masterPort: sentinel.master.port,
      },
    })
  } catch (err) {
    await stopAll()
    throw err
  }
  return stopAll
}
