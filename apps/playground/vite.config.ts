// Vite serves the page; @fastlimit/core comes from the workspace (its source, through the
// '@fastlimit/source' condition once core's exports point at dist).
import { defaultClientConditions, defineConfig } from 'vite'

export default defineConfig({
  resolve: { conditions: ['@fastlimit/source', ...defaultClientConditions] },
  server: { host: '127.0.0.1' },
  build: { target: 'es2022' },
})
