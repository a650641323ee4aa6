// backendFromUrl: one function from a URL (an environment variable) to a backend, loading its package only when chosen.
import type { Backend } from './backend'
import { ConfigError, show } from './errors'
import { MemoryBackend } from './memory'

/** Options of {@link backendFromUrl}. */
export interface BackendFromUrlOptions {
  /**
   * Options for the backend's constructor, besides what the URL says: `{ keyPrefix }` for Redis,
   * `{ tableName }` for SQLite, `{ maxKeys }` for memory.
   * @default {}
   */
  options?: Record<string, unknown>
  /**
   * Loads a backend package by name. The default, `import(name)`, resolves it from `@fastlimit/core`'s
   * own place (an optional peer dependency, so your app's install provides it). Pass
   * `(name) => import(name)` from your own module when a bundler or an unusual layout needs the
   * import to be yours.
   * @default (name) => import(name)
   */
  importer?: (specifier: string) => Promise<unknown>
}

/** The URL forms, for the error of a URL that is none of them. */
const FORMS =
  "'memory:', 'sqlite:<path>' (or 'sqlite::memory:'), 'redis://[user:password@]host:port[/db]', 'rediss://...', " +
  "'redis://host1:port1,host2:port2/0' (a Cluster), 'redis+cluster://...', 'redis+sentinel://...', " +
  "'postgres://[user:password@]host[:port]/database'"

const REDIS_SCHEMES = new Set([
  'redis',
  'rediss',
  'redis+cluster',
  'rediss+cluster',
  'redis+sentinel',
  'rediss+sentinel',
  'valkey',
  'valkeys',
])

/** The scheme of a URL, lower case, without its colon; `''` when there is none. */
function schemeOf(url: string): string {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(url)
  return m === null ? '' : (m[1] as string).toLowerCase()
}

/** `import(name)` that bundlers leave alone: the specifier is not a literal. */
const defaultImporter = (specifier: string): Promise<unknown> => import(/* @vite-ignore */ specifier)

async function load(
  specifier: string,
  scheme: string,
  install: string,
  importer: (specifier: string) => Promise<unknown>,
): Promise<Record<string, unknown>> {
  try {
    return (await importer(specifier)) as Record<string, unknown>
  } catch (err) {
    const code = (err as { code?: unknown } | null)?.code
    const notFound =
      code === 'ERR_MODULE_NOT_FOUND' ||
      code === 'MODULE_NOT_FOUND' ||
      /Cannot find (module|package)/i.test(String((err as Error)?.message))
    throw new ConfigError(
      notFound
        ? `[fastlimit] [core] A ${scheme}: URL needs the package ${specifier}, which is not installed: ${install}.`
        : `[fastlimit] [core] Loading ${specifier} for a ${scheme}: URL failed: ${(err as Error)?.message ?? show(err)}`,
      { cause: err },
    )
  }
}

/**
 * Builds the backend a URL names, loading its package only when chosen, so one environment variable
 * switches an app between stores (the backend packages are optional peers of core):
 *
 * - `memory:` — a new {@link MemoryBackend} (per process);
 * - `sqlite:<path>` — a `SQLiteBackend` on that file (`sqlite:./limits.db`, `sqlite:/var/lib/app/limits.db`;
 *   a leading `//` is dropped, so `sqlite:///var/lib/app/limits.db` is the absolute path; `sqlite::memory:`
 *   for an in-memory database), from `@fastlimit/sqlite`;
 * - `redis://`, `rediss://`, `redis+cluster://`, `redis+sentinel://` and the other forms
 *   `RedisBackend.fromUrl` takes (`redis://h1:p1,h2:p2/0` for a Cluster, `?sentinelMasterName=`), from
 *   `@fastlimit/redis`;
 * - `postgres://` or `postgresql://` — a `PostgresBackend` on that connection string, from `@fastlimit/postgres`.
 *
 * The backend is yours to close (`FastLimit` does not close a backend you pass it).
 *
 * @throws ConfigError for a URL of another kind, or naming the package to install when it is missing
 *
 * @example
 * ```ts
 * // RATE_LIMIT_DB=redis://localhost:6379/0, sqlite:./limits.db, or unset for memory
 * const backend = await backendFromUrl(process.env.RATE_LIMIT_DB ?? 'memory:')
 * const limiter = new FastLimit({ backend })
 * ```
 */
export async function backendFromUrl(url: string, options: BackendFromUrlOptions = {}): Promise<Backend> {
  if (typeof url !== 'string' || url.trim() === '') {
    throw new ConfigError(
      `[fastlimit] [core] backendFromUrl needs a URL, got ${show(url)}: use one of ${FORMS}.`,
    )
  }
  if (typeof options !== 'object' || options === null) {
    throw new ConfigError(
      `[fastlimit] [core] backendFromUrl options must be an object, got ${show(options)}.`,
    )
  }
  const { options: backendOptions = {}, importer = defaultImporter } = options
  if (typeof importer !== 'function') {
    throw new ConfigError(
      '[fastlimit] [core] backendFromUrl importer must be a function: (name) => import(name).',
    )
  }
  const text = url.trim()
  const scheme = schemeOf(text)
  if (scheme === 'memory') {
    const rest = text.slice('memory:'.length).replace(/^\/\//, '')
    if (rest !== '') {
      throw new ConfigError(
        `[fastlimit] [core] A memory: URL takes nothing after the scheme, got ${show(text)}: pass { options: { maxKeys } } instead.`,
      )
    }
    return new MemoryBackend(backendOptions as never)
  }
  if (scheme === 'sqlite') {
    let file = text.slice('sqlite:'.length)
    if (file.startsWith('//')) file = file.slice(2)
    if (file === '') {
      throw new ConfigError(
        `[fastlimit] [core] A sqlite: URL needs a file path, got ${show(text)}: e.g. 'sqlite:./limits.db'.`,
      )
    }
    const mod = await load(
      '@fastlimit/sqlite',
      scheme,
      'npm install @fastlimit/sqlite better-sqlite3',
      importer,
    )
    const SQLiteBackend = mod.SQLiteBackend as new (file: string, options?: object) => Backend
    return new SQLiteBackend(file, backendOptions)
  }
  if (REDIS_SCHEMES.has(scheme)) {
    const mod = await load('@fastlimit/redis', scheme, 'npm install @fastlimit/redis ioredis', importer)
    const RedisBackend = mod.RedisBackend as { fromUrl(url: string, options?: object): Backend }
    return RedisBackend.fromUrl(text, backendOptions)
  }
  if (scheme === 'postgres' || scheme === 'postgresql') {
    const mod = await load('@fastlimit/postgres', scheme, 'npm install @fastlimit/postgres pg', importer)
    const PostgresBackend = mod.PostgresBackend as new (database: string, options?: object) => Backend
    return new PostgresBackend(text, backendOptions)
  }
  // Never echo the URL: it may hold a password.
  throw new ConfigError(
    `[fastlimit] [core] backendFromUrl does not know the scheme ${scheme === '' ? '(none)' : show(`${scheme}:`)}: use one of ${FORMS}.`,
  )
}
