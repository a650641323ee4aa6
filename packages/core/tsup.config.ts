import { rmSync } from 'node:fs'
import { defineConfig } from '../../tsup.config.base'

// The package entry and ./lite build as ESM + CJS; `./testing` as ESM only, since vitest (which it imports)
// cannot be require()d. Both entries import the package itself (external), so they share one copy of
// every class. Two builds write into one dist/: it is emptied once here, not by each build.
rmSync('dist', { recursive: true, force: true })

export default [
  // The lite entry shares the index's modules through chunks (splitting, ESM and CJS alike): one copy
  // of every class between the two, and a bundler that imports only ./lite reads only its chunks.
  defineConfig({
    entry: { index: 'src/index.ts', lite: 'src/lite/index.ts' },
    external: ['@fastlimit/core'],
    splitting: true,
    clean: false,
  }),
  defineConfig({
    entry: { 'testing/index': 'src/testing/index.ts' },
    format: ['esm'],
    external: ['@fastlimit/core'],
    clean: false,
  }),
]
