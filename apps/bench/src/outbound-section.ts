// The outbound section: a 1,000-job run at a fixed rate through fastlimit's throttle() (on Redis, one
// process and four sharing the limit), beside bottleneck (minTime; in memory, and with its Redis
// clustering, one process and four) and p-throttle (in-process only; four processes each with their
// own limit show what that means). Each process is a child of its own; every job is a no-op that notes
// when it starts. Figures: the rate achieved against the limit, the most jobs started in any 1-second
// window (over-admission above the limit), and the CPU spent per job in the processes and in Redis.
import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { RuleObject } from '@fastlimit/core'
import { Redis } from 'ioredis'
import { startStandalone } from '../../../packages/redis/test/servers'
import type { OutboundConfig, OutboundLib, OutboundResult } from './outbound-child'
import { progress } from './progress'
import { processCpuSeconds } from './redis-measure'
import { type Headline, type Section, table } from './report'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..')
/** The limit every library is given: jobs per second. */
const RATE = 100

interface OutboundCase {
  readonly name: string
  readonly lib: OutboundLib
  readonly processes: number
  /** fastlimit's rule, when not the default of the child (gcra, `RATE`/s, burst 1). */
  readonly rule?: RuleObject
  /** How many jobs the throttle lets start at once (its burst): the rate is measured after them. */
  readonly burst: number
  readonly note: string
}

const CASES: readonly OutboundCase[] = [
  {
    name: 'fastlimit throttle, gcra burst 2, Redis',
    lib: 'fastlimit-redis',
    processes: 1,
    rule: { limit: RATE, window: '1s', burst: 2 },
    burst: 2,
    note: 'evenly spaced, one unit of slack',
  },
  {
    name: 'fastlimit throttle, gcra burst 2, Redis',
    lib: 'fastlimit-redis',
    processes: 4,
    rule: { limit: RATE, window: '1s', burst: 2 },
    burst: 2,
    note: 'one limit shared by 4 processes',
  },
  {
    name: 'fastlimit throttle, sliding-log, Redis',
    lib: 'fastlimit-redis',
    processes: 1,
    rule: { limit: RATE, window: '1s', algorithm: 'sliding-log' },
    burst: RATE,
    note: 'exact: never more than the limit in any window',
  },
  {
    name: 'fastlimit throttle, sliding-log, Redis',
    lib: 'fastlimit-redis',
    processes: 4,
    rule: { limit: RATE, window: '1s', algorithm: 'sliding-log' },
    burst: RATE,
    note: 'one limit shared by 4 processes',
  },
  {
    name: 'fastlimit throttle, gcra burst 1, Redis',
    lib: 'fastlimit-redis',
    processes: 1,
    rule: { limit: RATE, window: '1s', burst: 1 },
    burst: 1,
    note: 'no slack: a late timer is lost time',
  },
  {
    name: 'bottleneck minTime, in memory',
    lib: 'bottleneck-memory',
    processes: 1,
    burst: 1,
    note: 'its default datastore',
  },
  {
    name: 'bottleneck minTime, Redis clustering',
    lib: 'bottleneck-redis',
    processes: 1,
    burst: 1,
    note: 'datastore ioredis',
  },
  {
    name: 'bottleneck minTime, Redis clustering',
    lib: 'bottleneck-redis',
    processes: 4,
    burst: 1,
    note: 'one id shared by 4 processes',
  },
  { name: 'p-throttle', lib: 'p-throttle', processes: 1, burst: RATE, note: 'windowed (its default)' },
  { name: 'p-throttle strict', lib: 'p-throttle-strict', processes: 1, burst: RATE, note: 'sliding' },
  { name: 'p-throttle', lib: 'p-throttle', processes: 4, burst: 4 * RATE, note: 'in-process only: 4 limits' },
]

/** Runs one child and parses the JSON line it prints. */
function child(config: OutboundConfig): Promise<OutboundResult> {
  return new Promise((resolve, reject) => {
    const proc = spawn(
      process.execPath,
      ['--import', 'tsx', path.join(here, 'outbound-child.ts'), JSON.stringify(config)],
      {
        cwd: root,
        env: { ...process.env, TSX_DISABLE_CACHE: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    let out = ''
    let err = ''
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString()
    })
    proc.stderr.on('data', (d: Buffer) => {
      err += d.toString()
    })
    const timer = setTimeout(() => proc.kill('SIGKILL'), 120_000)
    proc.on('close', (code) => {
      clearTimeout(timer)
      const line = out.trim().split('\n').pop() ?? ''
      if (code !== 0 || !line.startsWith('{'))
        reject(new Error(`[bench] ${config.lib} failed (${code}): ${err}`))
      else resolve(JSON.parse(line) as OutboundResult)
    })
  })
}

interface Row {
  readonly c: OutboundCase
  readonly rate: number
  readonly mostInWindow: number
  readonly clientUs: number
  readonly redisUs: number | undefined
  readonly scripts: number | undefined
}

/** The most starts in any half-open window [t, t + 1000) beginning at a start. */
function mostInAnySecond(sorted: readonly number[]): number {
  let most = 0
  let j = 0
  for (let i = 0; i < sorted.length; i++) {
    while (j < sorted.length && (sorted[j] as number) < (sorted[i] as number) + 1000) j++
    most = Math.max(most, j - i)
  }
  return most
}

export async function outboundSection({ quick }: { quick: boolean }): Promise<Section> {
  const jobs = quick ? 200 : 1000
  console.log(`[bench] outbound: ${jobs} jobs at ${RATE}/s through each throttle, 1 and 4 processes`)
  const server = await startStandalone()
  const admin = new Redis(server.url)
  const rows: Row[] = []
  try {
    let run = 0
    for (const c of CASES) {
      progress.update({ case: `${c.name}, ${c.processes} process(es)`, done: run, total: CASES.length })
      const id = `outbound-${run++}`
      const scripts = async () => {
        let n = 0
        for (const m of (await admin.info('commandstats')).matchAll(
          /^cmdstat_(?:eval|evalsha):calls=(\d+)/gm,
        ))
          n += Number(m[1])
        return n
      }
      await admin.config('RESETSTAT')
      const cpu0 = processCpuSeconds(server.server.pid)
      const startAt = Date.now() + 3000
      const per = Math.floor(jobs / c.processes)
      const results = await Promise.all(
        Array.from({ length: c.processes }, () =>
          child({
            lib: c.lib,
            rate: RATE,
            jobs: per,
            port: server.port,
            id,
            startAt,
            ...(c.rule ? { rule: c.rule } : {}),
          }),
        ),
      )
      const cpu1 = processCpuSeconds(server.server.pid)
      const scriptsRun = await scripts()
      const starts = results.flatMap((r) => r.starts).sort((a, b) => a - b)
      const n = starts.length
      const first = starts[0] as number
      const last = starts[n - 1] as number
      const usesRedis = c.lib.endsWith('-redis')
      // The sustained rate: the jobs after the burst the throttle lets start at once, over the time from
      // the first start to the last.
      rows.push({
        c,
        rate: ((n - c.burst) / (last - first)) * 1000,
        mostInWindow: mostInAnySecond(starts),
        clientUs: results.reduce((s, r) => s + r.cpuUs, 0) / n,
        redisUs: usesRedis ? ((cpu1 - cpu0) * 1e6) / n : undefined,
        scripts: usesRedis ? scriptsRun / n : undefined,
      })
    }
  } finally {
    admin.disconnect()
    await server.stop()
  }
  const fmt = (x: number | undefined, digits = 0) => (x === undefined ? '—' : x.toFixed(digits))
  const body = [
    `${jobs} no-op jobs submitted at once, to be run at most ${RATE} a second, split evenly over the processes (all`,
    'started at one instant, each a child process of its own, on one redis-server on loopback). A job notes when it',
    'starts; the rate is the jobs after the burst the throttle lets start at once (1, 2 or the limit, as configured)',
    'over the time from the first start to the last. "Most in any 1 s" counts the starts',
    `in every window [t, t + 1 s) from one start: above ${RATE} is over-admission as the called API would see it.`,
    'CPU per job is the user + system time the processes spent from the submission to the last start, and that of',
    'redis-server over the run, divided by the jobs; "scripts/job" counts the EVAL/EVALSHA calls Redis ran (bottleneck',
    'also sends PUBLISH and other commands besides).',
    '',
    table(
      [
        'throttle',
        'processes',
        'rate (jobs/s)',
        `most in any 1 s (limit ${RATE})`,
        'process CPU µs/job',
        'Redis CPU µs/job',
        'scripts/job',
        'note',
      ],
      rows.map((r) => [
        r.c.name,
        String(r.c.processes),
        `${r.rate.toFixed(1)} (${((100 * r.rate) / RATE).toFixed(0)}%)`,
        `${r.mostInWindow}${r.mostInWindow > RATE ? ` (+${r.mostInWindow - RATE})` : ''}`,
        fmt(r.clientUs),
        fmt(r.redisUs),
        fmt(r.scripts, 1),
        r.c.note,
      ]),
    ),
    '',
    'fastlimit waits the exact retry time the store gives (no polling) and every start is an admission the store',
    "made, so a shared limit holds across processes within the algorithm's bound (gcra: burst + limit × d / window",
    'over d ms; sliding-log: the limit in every window, as measured on the store; a start noted late makes a',
    'window of starts hold one more). With `burst: 1` a timer that fires a millisecond late loses that millisecond',
    "of the rate (timers are millisecond-grained); `burst: 2` absorbs it. bottleneck's minTime reserves each",
    'job a slot in its store ahead of time; p-throttle keeps its limit in the process, so N processes get N limits.',
  ].join('\n')
  const headlines: Headline[] = []
  const ours = rows.find((r) => r.c.lib === 'fastlimit-redis' && r.c.processes === 4 && r.c.rule?.burst === 2)
  const theirs = rows.find((r) => r.c.lib === 'bottleneck-redis' && r.c.processes === 4)
  if (ours?.redisUs !== undefined && theirs?.redisUs !== undefined) {
    headlines.push({
      label: 'outbound 4 processes: Redis CPU per job, bottleneck / fastlimit',
      ratio: theirs.redisUs / ours.redisUs,
      detail: `${ours.redisUs.toFixed(0)} vs ${theirs.redisUs.toFixed(0)} µs per job`,
    })
  }
  return { title: `Outbound throttling (${jobs} jobs at ${RATE}/s)`, body, headlines }
}
