// Picks where the demo keeps its counts from FASTLIMIT_BACKEND: memory (default), sqlite:<path> or redis://...
// and prints the startup lines every demo shares. SQLite and Redis are imported only when chosen
// (core's backendFromUrl), so the memory demo installs and runs without them.
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { backendFromUrl, FastLimit } from '@fastlimit/core'

/**
 * Imports a backend package from here, where the full install puts @fastlimit/sqlite and
 * @fastlimit/redis (devDependencies: the memory demo's install leaves them out). A workspace package
 * does not get its optional peers linked, so core's own `import(name)` would not find them.
 */
const importer = (name: string): Promise<unknown> => import(name)

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
  const backend = await backendFromUrl(url, { importer }).catch((err: Error) => {
    if (!/not installed/.test(err.message)) throw err
    throw new Error(
      `${err.message} In this repository: run \`pnpm install\` at its root (the memory demo's install leaves SQLite and Redis out).`,
      { cause: err },
    )
  })
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
