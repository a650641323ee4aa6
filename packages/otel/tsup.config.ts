import { defineConfig } from '../../tsup.config.base'

export default defineConfig({ entry: { index: 'src/index.ts' } })
