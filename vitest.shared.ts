// Shared vitest settings: every package's test run also writes a JSON report that scripts/test.mjs sums.
import { type ViteUserConfig, defineConfig, mergeConfig } from 'vitest/config'

export function vitestConfig(overrides: ViteUserConfig = {}): ViteUserConfig {
  const json = process.env.FASTLIMIT_TEST_JSON === '1'
  return mergeConfig(
    defineConfig({
      test: {
        include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
        testTimeout: 30_000,
        hookTimeout: 60_000,
        reporters: json ? ['default', 'json'] : ['default'],
        ...(json ? { outputFile: { json: '.vitest-result.json' } } : {}),
      },
    }),
    overrides,
  )
}
