// Instructions the Redis server spends per script call, counted by callgrind (independent of load):
//
//   npx tsx --conditions=@fastlimit/source packages/redis/test/script-cost.ts [scripts.ts of another version]
//
// Starts redis-server under `valgrind --tool=callgrind` on a free loopback port (its own temp dir, stopped
// by PID), sends each case's calls (EVALSHA, 50 per round trip, rotating over 1,000 keys, after a warm-up
// that touches every key), and reads the server's instruction count around them (callgrind_control
// zeroes the counters, then dumps them): the whole server's work per call (parsing, the script, the reply).
// With the path of another version of scripts.ts (e.g. `git show main:packages/redis/src/scripts.ts >
// /tmp/main-scripts.ts`), both versions are measured, one after the other on the same server.
import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { Redis } from 'ioredis'
import { scriptFor as current } from '../src/scripts'

type ScriptFor = typeof current

const CALLS = 5000
const KEYS = 1000

interface Case {
  readonly name: string
  /** The arguments after the key, as RedisBackend sends them (deadline slot filled in far ahead). */
  readonly args: string[]
}

const FAR = String(Date.now() + 86_400_000)
const CASES: Case[] = [
  { name: 'gcra check', args: ['gcra:1000000:60000:1000000'] },
  { name: 'gcra check, deadline', args: ['gcra:1000000:60000:1000000', FAR] },
  { name: 'gcra peek', args: ['gcra:1000000:60000:1000000', '', '0'] },
  { name: 'fixed-window check', args: ['fixed-window:1000000:60000:1000000'] },
  { name: 'sliding-window check', args: ['sliding-window:1000000:60000:1000000'] },
  { name: 'sliding-log check', args: ['sliding-log:1000000:60000:1000000'] },
  {
    name: 'gcra + fixed-window, all',
    args: ['', '1', '', 'gcra:1000000:60000:1000000', '', 'fixed-window:1000000:60000:1000000', ''],
  },
]

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Instructions counted since the last zeroing, read from a dump of the running server. */
function dump(pid: number, dir: string): number {
  for (const f of fs.readdirSync(dir)) if (f.startsWith('cg.out.')) fs.rmSync(path.join(dir, f))
  execFileSync('callgrind_control', ['-d', String(pid)], { cwd: dir, stdio: 'ignore' })
  const file = fs.readdirSync(dir).find((f) => f.startsWith('cg.out.'))
  if (file === undefined) throw new Error('callgrind wrote no dump')
  const m = /^(?:summary|totals):\s*(\d+)/m.exec(fs.readFileSync(path.join(dir, file), 'utf8'))
  if (!m) throw new Error('no totals in the callgrind dump')
  return Number(m[1])
}

async function main(): Promise<void> {
  const versions: Array<[string, ScriptFor]> = [['this tree', current]]
  const other = process.argv[2]
  if (other !== undefined) {
    const mod = (await import(path.resolve(other))) as { scriptFor: ScriptFor }
    versions.unshift([path.basename(other), mod.scriptFor])
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-script-cost-'))
  const port = await freePort()
  const child = spawn(
    'valgrind',
    [
      '--tool=callgrind',
      `--callgrind-out-file=${path.join(dir, 'cg.out')}`,
      'redis-server',
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
    ],
    { cwd: dir, stdio: 'ignore' },
  )
  const pid = child.pid as number
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true })
  client.on('error', () => undefined)
  try {
    // valgrind takes a few seconds to start the server.
    for (let i = 0; !(await listening(port)); i++) {
      if (i > 150) throw new Error('redis-server under valgrind did not start')
      await sleep(200)
    }
    await client.connect()
    const rows: string[] = []
    // Each version twice, interleaved (A B A B): the spread between a version's two rounds is the noise.
    for (const [round, [version, scriptFor]] of [...versions, ...versions].entries()) {
      const script = scriptFor(1000, 0)
      await client.script('LOAD', script.lua)
      for (const c of CASES) {
        // Keys of one length for every version and round (the key's hash costs by its length).
        const prefix = `r${round}:${CASES.indexOf(c)}:`
        const run = async (calls: number) => {
          for (let i = 0; i < calls; i += 50) {
            const p = client.pipeline()
            for (let j = i; j < i + 50; j++) p.evalsha(script.sha, 1, `${prefix}${j % KEYS}`, ...c.args)
            for (const [err, reply] of (await p.exec()) ?? []) {
              if (err) throw err
              if (typeof reply !== 'string' || !/^[01],/.test(reply)) throw new Error(`reply ${reply}`)
            }
          }
        }
        await run(KEYS)
        execFileSync('callgrind_control', ['-z', String(pid)], { cwd: dir, stdio: 'ignore' })
        await run(CALLS)
        const per = dump(pid, dir) / CALLS
        rows.push(`${version.padEnd(20)} ${c.name.padEnd(28)} ${(per / 1000).toFixed(1)}k instructions/call`)
      }
    }
    console.log(rows.join('\n'))
  } finally {
    client.disconnect()
    process.kill(pid, 'SIGTERM')
    await new Promise((r) => child.once('exit', r))
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
