// The reservation properties of @fastlimit/core/testing on MemoryBackend: 1,000 random sequences per algorithm.

import { MemoryBackend } from './memory'
import { reservationProperties } from './testing'

reservationProperties({
  name: 'MemoryBackend',
  make: (clock) => new MemoryBackend({ clock, cleanupIntervalMs: 0 }),
  runs: 1000,
})
