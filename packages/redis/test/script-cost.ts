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
  /** A script of its own instead of fastlimit's (the floors), measured once per round. */
  readonly lua?: string
  /** The reply's check (a number for the floors); fastlimit's start with `1,` or `0,` (allowed, denied). */
  readonly reply?: RegExp
}

const G = 'gcra:1000000:60000:1000000'
const FW = 'fixed-window:1000000:60000:1000000'
/** Limits of 1 per hour: the warm-up's call charges each key, every measured call is denied. */
const G1 = 'gcra:1:3600000:1'
const FW1 = 'fixed-window:1:3600000:1'

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
  { name: 'gcra denied', args: [G1], reply: /^0,/ },
  { name: 'fixed-window denied', args: [FW1], reply: /^0,/ },
  { name: 'gcra x2 rules', args: ['', '1', '', G, '', 'gcra:2000000:3600000:2000000', ''] },
  { name: 'gcra x2 rules denied', args: ['', '1', '', G, '', G1, ''], reply: /^[01],/ },
  { name: 'fixed-window x2 rules', args: ['', '1', '', FW, '', 'fixed-window:2000000:3600000:2000000', ''] },
  { name: 'fixed-window x2 denied', args: ['', '1', '', FW, '', FW1, ''], reply: /^[01],/ },
  // The floors: the bench's (INCR, PEXPIRE on the first hit), and the calls our check makes with no Lua
  // work around them (TIME, HGET, HSET, PTTL), as issue 20 measured them.
  {
    name: 'floor: INCR+PEXPIRE',
    args: ['60000'],
    lua: "local n = redis.call('INCR', KEYS[1])\nif n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end\nreturn n",
    reply: /^\d+$/,
  },
  {
    name: 'floor: TIME+HGET+HSET+PTTL',
    args: ['f'],
    lua: "local t = redis.call('TIME')\nlocal v = redis.call('HGET', KEYS[1], ARGV[1])\nredis.call('HSET', KEYS[1], ARGV[1], t[1])\nif redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], 60000) end\nreturn 1",
    reply: /^\d+$/,
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
        // The floors once per round (on the first version's turn).
        if (c.lua !== undefined && scriptFor !== versions[0]?.[1]) continue
        const sha = c.lua === undefined ? script.sha : ((await client.script('LOAD', c.lua)) as string)
        const expect = c.reply ?? /^1,/
        // Keys of one length for every version and round (the key's hash costs by its length); an
        // adjustment refunds what the gcra checks charged.
        const prefix = `r${round}:${c.adjust === true ? 0 : CASES.indexOf(c)}:`
        const run = async (calls: number, expected = expect) => {
          for (let i = 0; i < calls; i += 50) {
            const p = client.pipeline()
            for (let j = i; j < i + 50; j++) p.evalsha(sha, 1, `${prefix}${j % KEYS}`, ...c.args)
            for (const [err, reply] of (await p.exec()) ?? []) {
              if (err) throw err
              if (!expected.test(String(reply))) throw new Error(`${c.name}: reply ${reply}`)
            }
          }
        }
        // The warm-up touches every key (a denied case's first call per key is allowed: it charges the one unit).
        await run(KEYS, c.lua === undefined ? /^[01],/ : expect)
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
