// Shared vitest settings: tests run the workspace packages from source (the `@fastlimit/source` export
// condition, also passed to every child process through NODE_OPTIONS), and every package's test run
// also writes a JSON report that scripts/test.mjs sums.
import { type ViteUserConfig, defineConfig, mergeConfig } from 'vitest/config'

/** The export condition that points a workspace package at `src/index.ts` instead of `dist`. */
export const SOURCE_CONDITION = '@fastlimit/source'
/** Vite's server conditions as vitest sets them, with the source condition added. */
const conditions = [SOURCE_CONDITION, 'node', 'development|production']

export function vitestConfig(overrides: ViteUserConfig = {}): ViteUserConfig {
  const json = process.env.FASTLIMIT_TEST_JSON === '1'
  const nodeOptions = [process.env.NODE_OPTIONS, `--conditions=${SOURCE_CONDITION}`].filter(Boolean).join(' ')
  return mergeConfig(
    defineConfig({
      resolve: { conditions },
      ssr: { resolve: { conditions } },
      test: {
        include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
        testTimeout: 30_000,
        hookTimeout: 60_000,
        // Child processes a test starts (node --import tsx ...) resolve the packages from source too.
        env: { NODE_OPTIONS: nodeOptions },
        reporters: json ? ['default', 'json'] : ['default'],
        ...(json ? { outputFile: { json: '.vitest-result.json' } } : {}),
      },
    }),
    overrides,
  )
}
