import { defineConfig } from '../../tsup.config.base'

export default defineConfig({
  entry: { index: 'src/index.ts', 'testing/index': 'src/testing/index.ts' },
  // The testing entry imports the package itself, so both entries share one copy of every class.
  external: ['@fastlimit/core'],
})
