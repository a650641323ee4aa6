// Picks the driver of a client by its kind (see clientKind in driver.ts).
import type { Cluster, Redis } from 'ioredis'
import {
  clientKind,
  type Driver,
  type DriverOptions,
  type GlideClient,
  type NodeRedisClient,
  type NodeRedisCluster,
  type RedisClient,
} from './driver'
import { GlideDriver } from './driver-glide'
import { IoredisDriver } from './driver-ioredis'
import { NodeRedisDriver } from './driver-node-redis'

/** The driver of `client`, whose kind was checked (clientKind). */
export function driverFor(client: RedisClient, options: DriverOptions): Driver {
  switch (clientKind(client)) {
    case 'glide':
      return new GlideDriver(client as GlideClient, options)
    case 'node-redis':
      return new NodeRedisDriver(client as NodeRedisClient | NodeRedisCluster, options)
    default:
      // ioredis, and iovalkey (a fork with the same members).
      return new IoredisDriver(client as Redis | Cluster, options)
  }
}
