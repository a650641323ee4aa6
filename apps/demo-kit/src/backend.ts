// Picks where the demo keeps its counts from FASTLIMIT_BACKEND: memory (default), sqlite:<path> or redis://...
// and prints the startup lines every demo shares. SQLite and Redis are imported only when chosen.
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { FastLimit } from '@fastlimit/core'
// When core exports backendFromUrl, this import becomes `from '@fastlimit/core'` (the demos already
// declare the backend packages it resolves from the application).
import { backendFromUrl } from './backend-from-url'

/** The limiter every route shares, on the backend FASTLIMIT_BACKEND names, and a label for the log. */
export async function limiterFromEnv(
  setting = process.env.FASTLIMIT_BACKEND ?? 'memory',
): Promise<{ limiter: FastLimit; label: string; close: () => Promise<void> }> {
  let url: string
  let label: string
  if (setting === '' || setting === 'memory' || setting === 'memory:') {
    url = 'memory:'
    label = 'memory'
  } else if (setting.startsWith('sqlite:')) {
    const path = setting.slice('sqlite:'.length)
    if (path === '')
      throw new Error('FASTLIMIT_BACKEND=sqlite:<path> needs a path, e.g. sqlite:./data/limits.db')
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
    url = setting
    label = `SQLite at ${path}`
  } else if (/^rediss?:\/\//.test(setting)) {
    url = setting
    label = `Redis at ${setting.replace(/\/\/[^@/]*@/, '//***@')}`
  } else {
    throw new Error(
      `FASTLIMIT_BACKEND=${JSON.stringify(setting)} is not a backend: use memory, sqlite:./data/limits.db or redis://localhost:6379.`,
    )
  }
  const backend = await backendFromUrl(url)
  const limiter = new FastLimit({ backend })
  return {
    limiter,
    label,
    close: async () => {
      await limiter.close()
      await backend.close?.()
    },
  }
}

/**
 * Prints a demo's startup lines: where it listens and on which backend (the demo tests wait for
 * `listening on http://...` and read `backend: ...`), then a curl loop that runs into the login limit.
 */
export function announce(framework: string, base: string, label: string): void {
  console.log(`fastlimit ${framework} demo listening on ${base} (backend: ${label})`)
  console.log(
    `try: for i in $(seq 7); do curl -si -X POST ${base}/login | grep -iE '^(HTTP|ratelimit|retry)'; done`,
  )
}
