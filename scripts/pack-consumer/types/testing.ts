// A user's backend test against @fastlimit/core/testing (ESM only: vitest cannot be require()d),
// type-checked as .mts (node16) and .ts (bundler).
import { MemoryBackend } from '@fastlimit/core'
import { backendConformance, type FakeClock, fakeClock } from '@fastlimit/core/testing'

const clock: FakeClock = fakeClock()
clock.advance(1000)
backendConformance({ name: 'memory', make: (now) => new MemoryBackend({ clock: now }), operations: 50 })
