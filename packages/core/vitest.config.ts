import { vitestConfig } from '../../vitest.shared.ts'

export default vitestConfig({
  test: { typecheck: { enabled: true, include: ['src/**/*.test-d.ts'], tsconfig: './tsconfig.json' } },
})
