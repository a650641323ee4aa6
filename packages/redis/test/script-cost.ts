// Instructions the Redis server spends per script call, counted by callgrind (independent of load):
//
//   npx tsx --conditions=@fastlimit/source packages/redis/test/script-cost.ts [scripts.ts of other versions...]
//
// Starts redis-server under `valgrind --tool=callgrind` on a free loopback port (its own temp dir, stopped
// by PID), sends each case's calls (EVALSHA, 50 per round trip, rotating over 1,000 keys, after a warm-up
// that touches every key), and reads the server's instruction count around them (callgrind_control
// zeroes the counters, then dumps them): the instructions of processCommand per call (the command's
// lookup, the script, the reply queued), or with WHOLE=1 the whole server's (reading and parsing the
// request, writing the reply, and its timers, which run by real time and so vary with load).
// With the paths of other versions of scripts.ts (e.g. `git show main:packages/redis/src/scripts.ts >
// /tmp/main-scripts.ts`), every version is measured, one after the other on the same server. CASES=a,b
// measures only the cases of those names.
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
  /** An adjustment: measured only on a version that has them (this tree), on the keys of case 0. */
  readonly adjust?: boolean
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
  // RedisBackend.adjust of one gcra bucket: a refund of 1 with no charge given, and with one.
  { name: 'gcra refund', args: ['', '-1', '', '', 'gcra:1000000:60000:1000000', ''], adjust: true },
  {
    name: 'gcra refund of a charge',
    args: ['', '-1', '', `1,${Date.now() + 120_000},${Date.now()}`, 'gcra:1000000:60000:1000000', ''],
    adjust: true,
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
  const versions: Array<[string, ScriptFor]> = []
  for (const other of process.argv.slice(2)) {
    const mod = (await import(path.resolve(other))) as { scriptFor: ScriptFor }
    versions.push([path.basename(other), mod.scriptFor])
  }
  versions.push(['this tree', current])
  // CASES="gcra check,gcra peek" measures only those.
  const only = process.env.CASES?.split(',')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-script-cost-'))
  const port = await freePort()
  const child = spawn(
    'valgrind',
    [
      '--tool=callgrind',
      `--callgrind-out-file=${path.join(dir, 'cg.out')}`,
      // Only the command's own work (parsing done, the script, the reply queued): without the network
      // and the server's timers (serverCron runs by real time, which valgrind stretches: noise).
      ...(process.env.WHOLE === '1' ? [] : ['--toggle-collect=processCommand']),
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
        if (c.adjust === true && scriptFor !== current) continue
        if (only !== undefined && !only.includes(c.name)) continue
        // Keys of one length for every version and round (the key's hash costs by its length); an
        // adjustment refunds what the gcra checks charged.
        const prefix = `r${round}:${c.adjust === true ? 0 : CASES.indexOf(c)}:`
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
