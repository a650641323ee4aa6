// Test databases: one of our own per run on the machine's PostgreSQL (dropped at the end), and a whole
// server of our own (initdb in a temp dir, a free loopback port) for the tests that stop or kill it.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import pg from 'pg'

/** The server the tests use: the machine's PostgreSQL (trust auth), or FASTLIMIT_PG_URL. */
export const ADMIN_URL = process.env.FASTLIMIT_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'

/** A database created for this run, with a random name; `drop()` removes it (and only it). */
export interface TestDatabase {
  readonly name: string
  readonly url: string
  drop(): Promise<void>
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url)
  u.pathname = `/${name}`
  return u.toString()
}

async function admin<T>(url: string, run: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 })
  client.on('error', () => undefined)
  await client.connect()
  try {
    return await run(client)
  } finally {
    await client.end().catch(() => undefined)
  }
}

/**
 * Creates `fastlimit_test_<random>` on the server of `adminUrl`, in the server's default encoding or
 * in `encoding` (e.g. `'LATIN1'`, `'SQL_ASCII'`: a database whose text cannot hold every key).
 */
export async function createDatabase(
  adminUrl = ADMIN_URL,
  { encoding }: { encoding?: string } = {},
): Promise<TestDatabase> {
  const name = `fastlimit_test_${crypto.randomBytes(6).toString('hex')}`
  const options = encoding ? ` ENCODING '${encoding}' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'` : ''
  await admin(adminUrl, (c) => c.query(`CREATE DATABASE "${name}"${options}`))
  return {
    name,
    url: withDatabase(adminUrl, name),
    // A pool's end() resolves before its connections have closed on the server: wait (up to 5 s) for the
    // database's sessions to go, so that FORCE does not terminate a client still ending (whose 'error'
    // no one listens to any more), then drop whatever is left.
    drop: () =>
      admin(adminUrl, async (c) => {
        for (let i = 0; i < 100; i++) {
          const { rows } = await c.query(
            'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1',
            [name],
          )
          if ((rows[0] as { n: number }).n === 0) break
          await new Promise((r) => setTimeout(r, 50))
        }
        await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
      }).then(() => undefined),
  }
}

/** A free TCP port on 127.0.0.1 (asked of the kernel, then released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo
      srv.close(() => resolve(port))
    })
  })
}

/** The directory of PostgreSQL's server binaries (the newest under /usr/lib/postgresql, or pg_config's). */
export function postgresBin(): string {
  const root = '/usr/lib/postgresql'
  if (fs.existsSync(root)) {
    const versions = fs
      .readdirSync(root)
      .filter((v) => fs.existsSync(path.join(root, v, 'bin', 'postgres')))
      .sort((a, b) => Number(b) - Number(a))
    if (versions[0] !== undefined) return path.join(root, versions[0], 'bin')
  }
  return execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim()
}

/** PostgreSQL refuses to run as root: as root, its files and processes belong to the `postgres` user. */
function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim())
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim())
  return { uid, gid }
}

/** A PostgreSQL server of our own: its data directory in a temp dir, on a free loopback port. */
export class OwnServer {
  readonly dir: string
  readonly port: number
  readonly #bin: string
  readonly #user: { uid: number; gid: number } | undefined
  #process: ChildProcess | undefined
  #exited: Promise<void> = Promise.resolve()

  private constructor(
    dir: string,
    port: number,
    bin: string,
    user: { uid: number; gid: number } | undefined,
  ) {
    this.dir = dir
    this.port = port
    this.#bin = bin
    this.#user = user
  }

  /** `initdb`s a new cluster (trust auth, user postgres) and starts it. */
  static async start(): Promise<OwnServer> {
    const bin = postgresBin()
    const user = runAs()
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-pg-'))
    if (user) fs.chownSync(dir, user.uid, user.gid)
    execFileSync(
      path.join(bin, 'initdb'),
      [
        '-D',
        path.join(dir, 'data'),
        '-U',
        'postgres',
        '--auth=trust',
        '-E',
        'UTF8',
        '--no-sync',
        '--locale=C',
      ],
      { stdio: 'ignore', ...(user ?? {}), cwd: dir },
    )
    const server = new OwnServer(dir, await freePort(), bin, user)
    await server.startProcess()
    return server
  }

  /** The admin connection string (database `postgres`). */
  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`
  }

  get pid(): number | undefined {
    return this.#process?.pid
  }

  /** Starts the server process (again) on the same port and data directory; resolves once it accepts connections. */
  async startProcess(): Promise<void> {
    const child = spawn(
      path.join(this.#bin, 'postgres'),
      [
        '-D',
        path.join(this.dir, 'data'),
        '-p',
        String(this.port),
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        `unix_socket_directories=${this.dir}`,
        '-c',
        'fsync=off',
        '-c',
        'max_connections=100',
      ],
      { stdio: 'ignore', ...(this.#user ?? {}), cwd: this.dir },
    )
    this.#process = child
    this.#exited = new Promise((resolve) => child.once('exit', () => resolve()))
    const started = Date.now()
    for (;;) {
      try {
        await admin(this.url, (c) => c.query('SELECT 1'))
        return
      } catch (err) {
        if (child.exitCode !== null || Date.now() - started > 20_000) {
          throw new Error(`our PostgreSQL on port ${this.port} did not start: ${(err as Error).message}`)
        }
        await new Promise((r) => setTimeout(r, 50))
      }
    }
  }

  /** Kills the server process with `signal` (SIGKILL: a crash; SIGINT: a fast shutdown) and waits for it to exit. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.#process
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
    child.kill(signal)
    await this.#exited
    if (signal === 'SIGKILL') {
      // The postmaster's children notice its death and exit on their own; wait for the pid file's
      // processes to be gone so the next start does not find shared memory in use.
      await new Promise((r) => setTimeout(r, 300))
    }
  }

  /**
   * Sends `signal` to the postmaster and every process it started (SIGSTOP freezes the whole server:
   * connections stay open and nothing answers; SIGCONT thaws it).
   */
  signalAll(signal: NodeJS.Signals): void {
    const pid = this.#process?.pid
    if (pid === undefined) return
    const send = (p: number) => {
      try {
        process.kill(p, signal)
      } catch {
        // Gone already.
      }
    }
    // The postmaster first: frozen, it forks no new backend while its children are listed.
    send(pid)
    let children: number[] = []
    try {
      children = execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
        .split('\n')
        .filter(Boolean)
        .map(Number)
    } catch {
      // pgrep exits 1 when there are none.
    }
    for (const p of children) send(p)
  }

  /** Stops the server (fast shutdown) and removes its directory. */
  async stop(): Promise<void> {
    this.signalAll('SIGCONT')
    await this.kill('SIGINT')
    fs.rmSync(this.dir, { recursive: true, force: true })
  }
}
