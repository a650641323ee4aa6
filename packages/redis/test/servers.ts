// Test harness: real redis-server processes (standalone, Cluster, Sentinel) on free loopback ports in a
// temp dir, stopped by PID. Leftovers of a crashed run are killed (only ours) and removed on the next start.
// Used by the tests' global setup, the benchmarks and the reliability suite (import it by relative path).
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { Redis } from 'ioredis'

/** One redis-server (or sentinel) process we started. */
export interface RedisProcess {
  readonly host: '127.0.0.1'
  readonly port: number
  readonly pid: number
  /** Its working directory (config, log, cluster state). */
  readonly dir: string
  /** 'server' or 'sentinel'. */
  readonly role: 'server' | 'sentinel'
}

/** A standalone Redis. */
export interface StandaloneSetup {
  readonly server: RedisProcess
  readonly port: number
  /** `redis://127.0.0.1:PORT`. */
  readonly url: string
  /** Stops the server and removes its directory. */
  stop(): Promise<void>
}

/** A Redis Cluster. */
export interface ClusterSetup {
  readonly masters: readonly RedisProcess[]
  readonly replicas: readonly RedisProcess[]
  /** Every node as `{ host, port }`, for `new Cluster(nodes)`. */
  readonly nodes: ReadonlyArray<{ host: string; port: number }>
  /** `redis+cluster://127.0.0.1:A,127.0.0.1:B,...` (the masters). */
  readonly url: string
  stop(): Promise<void>
}

/** One master, its replicas, and sentinels watching it. */
export interface SentinelSetup {
  readonly master: RedisProcess
  readonly replicas: readonly RedisProcess[]
  readonly sentinels: readonly RedisProcess[]
  readonly masterName: string
  /** `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,.../mymaster`. */
  readonly url: string
  stop(): Promise<void>
}

const ROOT = path.join(os.tmpdir(), 'fastlimit-redis-test')
const OWNER_FILE = 'owner.pid'
const live = new Map<number, { child: ChildProcess; dir: string }>()
let runDir: string | undefined
let handlersInstalled = false

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Whether `pid` is a redis-server whose command line or working directory is inside `dir`. */
function isOurs(pid: number, dir: string): boolean {
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    if (!cmdline.includes('redis-server') && !cmdline.includes('redis-sentinel')) return false
    if (cmdline.includes(dir)) return true
    return fs.readlinkSync(`/proc/${pid}/cwd`).startsWith(dir)
  } catch {
    return false
  }
}

/**
 * Kills the redis-servers of earlier runs whose owning process is gone (a crash, a kill -9) and
 * removes their directories. Never touches a process that was not started from one of our directories.
 */
export function cleanupLeftovers(): void {
  let entries: string[]
  try {
    entries = fs.readdirSync(ROOT)
  } catch {
    return
  }
  for (const entry of entries) {
    const dir = path.join(ROOT, entry)
    let owner = 0
    try {
      owner = Number(fs.readFileSync(path.join(dir, OWNER_FILE), 'utf8'))
    } catch {
      // No owner file: a run that died while creating its directory.
    }
    if (owner > 0 && owner !== process.pid && alive(owner)) continue
    if (owner === process.pid) continue
    for (const sub of safeReaddir(dir)) {
      try {
        const pid = Number(fs.readFileSync(path.join(dir, sub, 'redis.pid'), 'utf8'))
        if (pid > 0 && alive(pid) && isOurs(pid, dir)) process.kill(pid, 'SIGKILL')
      } catch {
        // No pid file: the server never started.
      }
    }
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir)
  } catch {
    return []
  }
}

function killAllSync(): void {
  for (const [pid] of live) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // Already gone.
    }
  }
  live.clear()
  if (runDir) fs.rmSync(runDir, { recursive: true, force: true })
  runDir = undefined
}

function installHandlers(): void {
  if (handlersInstalled) return
  handlersInstalled = true
  process.on('exit', killAllSync)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = () => {
      killAllSync()
      process.off(signal, handler)
      // With no other listener, die of the signal as Node would have.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
    }
    process.on(signal, handler)
  }
}

function ensureRunDir(): string {
  if (runDir) return runDir
  fs.mkdirSync(ROOT, { recursive: true })
  cleanupLeftovers()
  runDir = fs.mkdtempSync(path.join(ROOT, `run-${process.pid}-`))
  fs.writeFileSync(path.join(runDir, OWNER_FILE), String(process.pid))
  installHandlers()
  return runDir
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

/** A port that is free now (and so is port + 10000, the Cluster bus port). Never 6379. */
async function freePort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20_000 + (randomBytes(2).readUInt16BE(0) % 20_000)
    if (await portFree(port)) {
      if (await portFree(port + 10_000)) return port
    }
  }
  throw new Error('[servers] no free loopback port found')
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function tail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-15).join('\n')
  } catch {
    return '(no log)'
  }
}

/** Sends one command with a short-lived connection (protocol 2, no retries) and disconnects. */
export async function command(port: number, ...args: Array<string | number>): Promise<unknown> {
  const client = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    retryStrategy: null,
    maxRetriesPerRequest: 0,
    enableReadyCheck: false,
    protocol: 2,
    connectTimeout: 2000,
    disableClientInfo: true,
  })
  client.on('error', () => undefined)
  try {
    await client.connect()
    return await client.call(String(args[0]), ...args.slice(1).map(String))
  } finally {
    // disconnect(), not quit(): sentinels too.
    client.disconnect()
  }
}

async function waitFor(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs: number,
  log?: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    try {
      if (await check()) return
    } catch (err) {
      last = err
    }
    await sleep(100)
  }
  throw new Error(
    `[servers] timed out waiting for ${what}${last ? ` (${(last as Error).message})` : ''}${log ? `\n${tail(log)}` : ''}`,
  )
}

/** Starts one redis-server with `config` lines (port, dir and logging are added) and waits for PING. */
async function startProcess(
  config: string[],
  role: 'server' | 'sentinel' = 'server',
  fixedPort?: number,
): Promise<RedisProcess> {
  const root = ensureRunDir()
  for (let attempt = 0; ; attempt++) {
    const port = fixedPort ?? (await freePort())
    const dir = path.join(root, String(port))
    fs.mkdirSync(dir, { recursive: true })
    const conf = path.join(dir, role === 'sentinel' ? 'sentinel.conf' : 'redis.conf')
    const log = path.join(dir, 'redis.log')
    fs.writeFileSync(
      conf,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        'protected-mode no',
        'daemonize no',
        `dir ${dir}`,
        `logfile ${log}`,
        ...(role === 'server' ? ['save ""', 'appendonly no'] : []),
        ...config,
        '',
      ].join('\n'),
    )
    const args = role === 'sentinel' ? [conf, '--sentinel'] : [conf]
    const child = spawn('redis-server', args, { cwd: dir, stdio: 'ignore' })
    const pid = child.pid
    if (pid === undefined) throw new Error('[servers] could not spawn redis-server: is it installed?')
    fs.writeFileSync(path.join(dir, 'redis.pid'), String(pid))
    live.set(pid, { child, dir })
    let exited = false
    child.once('exit', () => {
      exited = true
      live.delete(pid)
    })
    try {
      await waitFor(
        `redis-server on port ${port}`,
        async () => {
          if (exited) throw new Error('the process exited')
          return (await command(port, 'PING')) === 'PONG'
        },
        10_000,
        log,
      )
      return { host: '127.0.0.1', port, pid, dir, role }
    } catch (err) {
      await stopProcess({ host: '127.0.0.1', port, pid, dir, role })
      // Another process took the port between the check and the bind: try another one.
      if (
        fixedPort === undefined &&
        attempt < 4 &&
        /already in use|exited/i.test(`${(err as Error).message}`)
      )
        continue
      throw err
    }
  }
}

/** Stops one process by PID (SIGTERM, then SIGKILL after 5 s) and removes its directory. */
export async function stopProcess(proc: RedisProcess): Promise<void> {
  const entry = live.get(proc.pid)
  if (entry) {
    const exited = new Promise<void>((resolve) => {
      if (entry.child.exitCode !== null || entry.child.signalCode !== null) resolve()
      else entry.child.once('exit', () => resolve())
    })
    try {
      process.kill(proc.pid, 'SIGTERM')
    } catch {
      // Already gone.
    }
    const timer = setTimeout(() => {
      try {
        process.kill(proc.pid, 'SIGKILL')
      } catch {
        // Already gone.
      }
    }, 5000)
    await exited
    clearTimeout(timer)
    live.delete(proc.pid)
  }
  fs.rmSync(proc.dir, { recursive: true, force: true })
}

/** Kills a process at once (SIGKILL), as a crash would; for reliability tests. Its directory stays. */
export function killProcess(proc: RedisProcess): void {
  try {
    process.kill(proc.pid, 'SIGKILL')
  } catch {
    // Already gone.
  }
}

async function stopMany(procs: readonly RedisProcess[]): Promise<void> {
  await Promise.all(procs.map((p) => stopProcess(p)))
}

/**
 * Starts a standalone Redis on a free loopback port (or on `port`, e.g. to restart one where it was).
 * `config`: extra redis.conf lines.
 */
export async function startStandalone(
  options: { config?: string[]; port?: number } = {},
): Promise<StandaloneSetup> {
  const server = await startProcess(options.config ?? [], 'server', options.port)
  return {
    server,
    port: server.port,
    url: `redis://127.0.0.1:${server.port}`,
    stop: () => stopProcess(server),
  }
}

export function infoField(info: unknown, field: string): string | undefined {
  const m = new RegExp(`^${field}:(.*)$`, 'm').exec(String(info))
  return m?.[1]?.trim()
}

/**
 * Starts a Redis Cluster: `masters` primaries (at least 3) and `replicasPerMaster` replicas each,
 * and waits until every node agrees that all 16384 slots are served and every replica is in sync.
 */
export async function startCluster(
  options: { masters?: number; replicasPerMaster?: number; nodeTimeoutMs?: number } = {},
): Promise<ClusterSetup> {
  const masters = options.masters ?? 3
  const perMaster = options.replicasPerMaster ?? 0
  if (masters < 3) throw new Error('[servers] a Redis Cluster needs at least 3 masters')
  const total = masters * (1 + perMaster)
  const started: RedisProcess[] = []
  try {
    const procs = await Promise.all(
      Array.from({ length: total }, () =>
        startProcess([
          'cluster-enabled yes',
          'cluster-config-file nodes.conf',
          `cluster-node-timeout ${options.nodeTimeoutMs ?? 3000}`,
          'cluster-require-full-coverage yes',
        ]).then((p) => {
          started.push(p)
          return p
        }),
      ),
    )
    const addresses = procs.map((p) => `127.0.0.1:${p.port}`)
    await new Promise<void>((resolve, reject) => {
      execFile(
        'redis-cli',
        ['--cluster', 'create', ...addresses, '--cluster-replicas', String(perMaster), '--cluster-yes'],
        { timeout: 30_000 },
        (err, stdout, stderr) =>
          err
            ? reject(
                new Error(
                  `[servers] redis-cli --cluster create failed: ${err.message}\n${stdout}\n${stderr}`,
                ),
              )
            : resolve(),
      )
    })
    await waitFor(
      'the cluster to agree on its slots',
      async () => {
        for (const p of procs) {
          const info = await command(p.port, 'CLUSTER', 'INFO')
          if (infoField(info, 'cluster_state') !== 'ok') return false
          if (infoField(info, 'cluster_slots_ok') !== '16384') return false
          if (infoField(info, 'cluster_known_nodes') !== String(total)) return false
        }
        return true
      },
      30_000,
    )
    const roles = await Promise.all(
      procs.map(async (p) => infoField(await command(p.port, 'INFO', 'replication'), 'role')),
    )
    const masterProcs = procs.filter((_, i) => roles[i] === 'master')
    const replicaProcs = procs.filter((_, i) => roles[i] !== 'master')
    await waitFor(
      'the cluster replicas to sync',
      async () => {
        for (const p of replicaProcs) {
          const info = await command(p.port, 'INFO', 'replication')
          if (infoField(info, 'master_link_status') !== 'up') return false
        }
        return true
      },
      30_000,
    )
    return {
      masters: masterProcs,
      replicas: replicaProcs,
      nodes: procs.map((p) => ({ host: p.host, port: p.port })),
      url: `redis+cluster://${masterProcs.map((p) => `127.0.0.1:${p.port}`).join(',')}`,
      stop: () => stopMany(procs),
    }
  } catch (err) {
    await stopMany(started)
    throw err
  }
}

/**
 * Starts one master, `replicas` replicas of it and `sentinels` sentinels (quorum: a majority), and waits
 * until the replicas are in sync and every sentinel knows the master, its replicas and the other sentinels.
 */
export async function startSentinel(
  options: {
    replicas?: number
    sentinels?: number
    masterName?: string
    downAfterMs?: number
    /**
     * The port the replicas replicate from, given the master's: e.g. a proxy in between, to cut the
     * replication link on purpose. @default the master's port
     */
    replicateFrom?: (masterPort: number) => Promise<number>
  } = {},
): Promise<SentinelSetup> {
  const replicaCount = options.replicas ?? 1
  const sentinelCount = options.sentinels ?? 3
  const name = options.masterName ?? 'mymaster'
  const started: RedisProcess[] = []
  const track = (p: RedisProcess) => {
    started.push(p)
    return p
  }
  try {
    const master = track(await startProcess([]))
    const from = (await options.replicateFrom?.(master.port)) ?? master.port
    const replicas = await Promise.all(
      Array.from({ length: replicaCount }, () =>
        startProcess([`replicaof 127.0.0.1 ${from}`, 'replica-announce-ip 127.0.0.1']).then(track),
      ),
    )
    const quorum = Math.floor(sentinelCount / 2) + 1
    const sentinels = await Promise.all(
      Array.from({ length: sentinelCount }, () =>
        startProcess(
          [
            `sentinel monitor ${name} 127.0.0.1 ${master.port} ${quorum}`,
            `sentinel down-after-milliseconds ${name} ${options.downAfterMs ?? 2000}`,
            `sentinel failover-timeout ${name} 10000`,
            `sentinel parallel-syncs ${name} 1`,
            'sentinel announce-ip 127.0.0.1',
          ],
          'sentinel',
        ).then(track),
      ),
    )
    await waitFor(
      'the replicas to sync',
      async () => {
        for (const r of replicas) {
          const info = await command(r.port, 'INFO', 'replication')
          if (infoField(info, 'master_link_status') !== 'up') return false
        }
        return true
      },
      20_000,
    )
    await waitFor(
      'the sentinels to discover each other',
      async () => {
        for (const s of sentinels) {
          const addr = (await command(s.port, 'SENTINEL', 'get-master-addr-by-name', name)) as string[] | null
          if (!addr || Number(addr[1]) !== master.port) return false
          const flat = (await command(s.port, 'SENTINEL', 'master', name)) as string[]
          const field = (k: string) => flat[flat.indexOf(k) + 1]
          if (Number(field('num-other-sentinels')) !== sentinelCount - 1) return false
          if (Number(field('num-slaves')) !== replicaCount) return false
        }
        return true
      },
      30_000,
    )
    return {
      master,
      replicas,
      sentinels,
      masterName: name,
      url: `redis+sentinel://${sentinels.map((s) => `127.0.0.1:${s.port}`).join(',')}/${name}`,
      stop: () => stopMany(started),
    }
  } catch (err) {
    await stopMany(started)
    throw err
  }
}

/** Stops every process this module started (in this process) and removes the run directory. */
export async function stopAll(): Promise<void> {
  const procs = [...live.entries()].map(([pid, e]) => ({
    host: '127.0.0.1' as const,
    port: 0,
    pid,
    dir: e.dir,
    role: 'server' as const,
  }))
  await stopMany(procs)
  if (runDir) fs.rmSync(runDir, { recursive: true, force: true })
  runDir = undefined
}

/** The PIDs of the processes this module started and that still run. */
export function runningPids(): number[] {
  return [...live.keys()]
}
