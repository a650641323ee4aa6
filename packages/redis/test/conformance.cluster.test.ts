// The conformance suite of @fastlimit/core against RedisBackend on a cluster Redis (client time source,
// so the suite's fake clock drives the scripts; real PEXPIRE, so the expiry test waits real time).
import { backendConformance } from '@fastlimit/core/testing'
import { RedisBackend } from '../src'
import { countKeys, urlOf } from './helpers'

const prefix = 'conformance-cluster:'
// A key outlives its buckets by at least this much real time (at most twice as much), so a slow machine
// never sees state expire under the fake clock between two calls; the expiry test then waits past it.
const margin = 4000

backendConformance({
  name: 'RedisBackend (cluster)',
  make: (clock) =>
    RedisBackend.fromUrl(urlOf('cluster'), {
      keyPrefix: prefix,
      timeSource: 'client',
      clock,
      expiryMarginMs: margin,
    }),
  countKeys: (backend) => countKeys(backend, prefix),
  expiryWaitMs: 2 * margin + 1000,
})
