import { vitestConfig } from '../../vitest.shared.ts'

// `pnpm test` (scripts/test.mjs) runs the sustained-load file on its own after every other suite
// (FASTLIMIT_LOAD_PHASE=1, `pnpm run test:load`), so the event-loop delay it asserts is the demo's and
// not the time other suites took from these two cores. `vitest run` here runs everything but it.
const loadPhase = process.env.FASTLIMIT_LOAD_PHASE === '1'

export default vitestConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: loadPhase ? ['**/node_modules/**'] : ['**/node_modules/**', 'test/load.test.ts'],
    testTimeout: 180_000,
    hookTimeout: 180_000,
    fileParallelism: false,
    ...(loadPhase && process.env.FASTLIMIT_TEST_JSON === '1'
      ? { outputFile: { json: '.vitest-result.load.json' } }
      : {}),
  },
})
