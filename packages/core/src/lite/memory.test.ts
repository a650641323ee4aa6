// The lite store passes the backend conformance suite for what it implements (checkAndIncrement,
// checkAndIncrementAll, reset, clear), with every algorithm's step given to it.
import { describe, expect, it } from 'vitest'
import { ALGORITHMS, algorithms } from '../algorithms'
import { backendConformance } from '../testing'
import { liteMemoryBackend } from './memory'

backendConformance({
  name: 'liteMemoryBackend (every step)',
  make: (clock) => liteMemoryBackend({ clock, steps: algorithms, maxKeys: 100_000 }),
})

describe('the algorithm names', () => {
  it('list exactly the algorithms, in their order', () => {
    expect(Object.keys(algorithms)).toEqual([...ALGORITHMS])
  })
})
