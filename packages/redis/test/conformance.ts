// The conformance suite of @fastlimit/core against RedisBackend on one topology (client time source, so
// the suite's fake clock drives the scripts; real PEXPIRE, so the expiry test waits real time).
import { backendConformance } from '@fastlimit/core/testing'
import { backendOn, countKeys, type Topology } from './helpers'

// A key outlives its buckets by at least this much real time (at most twice as much), so a slow machine
// never sees state expire under the fake clock between two calls; the expiry test then waits past it.
const margin = 4000

/** Registers the conformance suite on `topology`, its keys under `conformance-<topology>:`. */
export function redisConformance(topology: Topology): void {
  const prefix = `conformance-${topology}:`
  backendConformance({
    name: `RedisBackend (${topology})`,
    make: (clock) =>
      backendOn(topology, {
        keyPrefix: prefix,
        timeSource: 'client',
        clock,
        // Below the margin, which it would raise; a day's step back is still a clock stepping back.
        maxClockSkewMs: margin / 2,
        expiryMarginMs: margin,
      }),
    countKeys: (backend) => countKeys(backend, prefix),
    expiryWaitMs: 2 * margin + 1000,
  })
}
