import { rmSync } from 'node:fs'
import { defineConfig } from '../../tsup.config.base'

// The package entry builds as ESM + CJS; `./testing` as ESM only, since vitest (which it imports)
// cannot be require()d. Both entries import the package itself (external), so they share one copy of
// every class. Two builds write into one dist/: it is emptied once here, not by each build.
rmSync('dist', { recursive: true, force: true })

export default [
  defineConfig({ entry: { index: 'src/index.ts' }, external: ['@fastlimit/core'], clean: false }),
  defineConfig({
    entry: { 'testing/index': 'src/testing/index.ts' },
    format: ['esm'],
    external: ['@fastlimit/core'],
    clean: false,
  }),
]
