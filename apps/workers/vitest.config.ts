import { vitestConfig } from '../../vitest.shared.ts'

// One wrangler dev (and its workerd) at a time; startup takes seconds on a loaded machine.
export default vitestConfig({ test: { testTimeout: 120_000, hookTimeout: 120_000, fileParallelism: false } })
