// A user's backend test, as @fastlimit/core/testing's README writes it, run on the installed tarball.
import { MemoryBackend } from '@fastlimit/core'
import { backendConformance } from '@fastlimit/core/testing'

backendConformance({
  name: 'MemoryBackend from the packed tarball',
  make: (clock) => new MemoryBackend({ clock }),
  operations: 50,
  concurrency: 100,
})
