// Picks where the demo keeps its counts from FASTLIMIT_BACKEND: memory (default), sqlite:<path> or redis://...
// and prints the startup lines every demo shares.
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { type Backend, FastLimit } from '@fastlimit/core'

/** The backends' packages, imported only when chosen (so the memory demo needs neither Redis nor SQLite). */
const SQLITE = '@fastlimit/sqlite'
const REDIS = '@fastlimit/redis'

interface SQLiteModule {
  SQLiteBackend: new (path: string) => Backend
}
interface RedisModule {
  RedisBackend: { fromUrl(url: string): Backend }
}

/** The limiter every route shares, on the backend FASTLIMIT_BACKEND names, and a label for the log. */
export async function limiterFromEnv(
  setting = process.env.FASTLIMIT_BACKEND ?? 'memory',
): Promise<{ limiter: FastLimit; label: string; close: () => Promise<void> }> {
  let backend: Backend | undefined
  let label = 'memory'
  if (setting === '' || setting === 'memory') {
    backend = undefined
  } else if (setting.startsWith('sqlite:')) {
    const path = setting.slice('sqlite:'.length)
    if (path === '')
      throw new Error('FASTLIMIT_BACKEND=sqlite:<path> needs a path, e.g. sqlite:./data/limits.db')
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
    const { SQLiteBackend } = (await import(SQLITE)) as SQLiteModule
    backend = new SQLiteBackend(path)
    label = `SQLite at ${path}`
  } else if (/^rediss?:\/\//.test(setting)) {
    const { RedisBackend } = (await import(REDIS)) as RedisModule
    backend = RedisBackend.fromUrl(setting)
    label = `Redis at ${setting.replace(/\/\/[^@/]*@/, '//***@')}`
  } else {
    throw new Error(
      `FASTLIMIT_BACKEND=${JSON.stringify(setting)} is not a backend: use memory, sqlite:./data/limits.db or redis://localhost:6379.`,
    )
  }
  const limiter = new FastLimit(backend === undefined ? {} : { backend })
  return {
    limiter,
    label,
    close: async () => {
      await limiter.close()
      await backend?.close?.()
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
