import { vitestConfig } from '../../vitest.shared.ts'

// The browser test starts Vite and Chromium (installed by the test when missing): give it time.
export default vitestConfig({ test: { testTimeout: 120_000, hookTimeout: 300_000 } })
