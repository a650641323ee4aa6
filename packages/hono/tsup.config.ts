import { defineConfig } from '../../tsup.config.base'

// The package entry and ./lite (the lean middleware for edge bundles), each on its own: ./lite must not
// pull in the full entry's code. @fastlimit/core and its ./lite stay external (peer dependency).
export default defineConfig({ entry: { index: 'src/index.ts', lite: 'src/lite.ts' } })
