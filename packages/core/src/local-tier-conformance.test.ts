// The conformance suite through the local tier on MemoryBackend: the deny cache answers exactly as the store.
import { localTier } from './local-tier'
import { MemoryBackend } from './memory'
import { backendConformance } from './testing'

// Leases off: a lease charges ahead (remaining drops by a batch), which the suite's exact
// remaining cannot allow. The deny cache is on and must pass every case.
backendConformance({
  name: 'localTier(MemoryBackend), deny cache',
  make: (clock) => localTier(new MemoryBackend({ clock, cleanupIntervalMs: 0 }), { clock, leases: false }),
})

// The deny cache on its own, with many denials kept: a tiny table evicts all the time.
backendConformance({
  name: 'localTier(MemoryBackend), deny cache of 2 keys',
  make: (clock) =>
    localTier(new MemoryBackend({ clock, cleanupIntervalMs: 0 }), { clock, leases: false, maxKeys: 2 }),
  operations: 150,
  concurrency: 200,
})
