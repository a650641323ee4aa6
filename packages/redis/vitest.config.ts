import { vitestConfig } from '../../vitest.shared.ts'

// Real redis-server processes for every test file: started once by the global setup, stopped after the run.
export default vitestConfig({ test: { globalSetup: ['test/global-setup.ts'] } })
