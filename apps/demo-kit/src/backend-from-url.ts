// A stand-in for core's backendFromUrl(url) until it lands: memory:, sqlite:<path>, redis://... and
// rediss://... to a Backend. The SQLite and Redis packages are imported only when chosen, so the
// memory demo installs and runs without them (and without compiling better-sqlite3).
import { type Backend, ConfigError, MemoryBackend } from '@fastlimit/core'

/** Imports a backend package, or says how to install it when the memory-only install left it out. */
async function load<T>(name: string, url: string, importer: () => Promise<T>): Promise<T> {
  try {
    return await importer()
  } catch (err) {
    // The package itself, or what it imports (better-sqlite3, ioredis), is not installed.
    const code = (err as { code?: string }).code
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw err
    throw new ConfigError(
      `[fastlimit] [demo] ${url.split(':')[0]}: needs ${name} and its dependencies, which the memory demo's install leaves out: run \`pnpm install\` at the repository's root. (${(err as Error).message.split('\n')[0]})`,
      { cause: err },
    )
  }
}

/** The backend a URL names; the packages of SQLite and Redis are loaded only for their URLs. */
export async function backendFromUrl(url: string): Promise<Backend> {
  if (url === 'memory:') return new MemoryBackend()
  if (url.startsWith('sqlite:')) {
    const { SQLiteBackend } = await load('@fastlimit/sqlite', url, () => import('@fastlimit/sqlite'))
    return new SQLiteBackend(url.slice('sqlite:'.length))
  }
  if (/^rediss?:\/\//.test(url)) {
    const { RedisBackend } = await load('@fastlimit/redis', url, () => import('@fastlimit/redis'))
    return RedisBackend.fromUrl(url)
  }
  throw new ConfigError(
    `[fastlimit] [demo] ${JSON.stringify(url)} is not a backend URL: use memory:, sqlite:./data/limits.db or redis://localhost:6379.`,
  )
}
