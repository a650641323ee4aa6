// Generated logs for the replay tests, and an independent count of admissions with core's steps.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { type Algorithm, type BucketConfig, parseRules, type State, step, stepAll } from '@fastlimit/core'

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const cli = path.join(root, 'src', 'cli.ts')
/** tsx's loader by its file URL, so that the CLI runs from any working directory. */
export const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']
const p2 = (x: number) => String(x).padStart(2, '0')

/** `[dd/Mon/yyyy:HH:MM:SS +hhmm]`'s inside for epoch ms `t`, in the zone `offsetMin` minutes east of UTC. */
export function clfDate(t: number, offsetMin = 0): string {
  const d = new Date(t + offsetMin * 60_000)
  const sign = offsetMin < 0 ? '-' : '+'
  const o = Math.abs(offsetMin)
  return `${p2(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())} ${sign}${p2(Math.floor(o / 60))}${p2(o % 60)}`
}

/** A small deterministic PRNG (mulberry32). */
export function random(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export interface Traffic {
  /** Epoch ms of each request, whole seconds (the CLF's resolution). */
  times: Float64Array
  /** The client of each request. */
  clients: string[]
  keys: Int32Array
}

/**
 * `n` requests over about a day from 5,000 clients: most send a few, forty heavy ones send bursts.
 * Time moves forward by whole seconds (several requests share one), as in a real access log.
 */
export function traffic(n: number, seed = 1): Traffic {
  const rnd = random(seed)
  const clients = Array.from({ length: 5000 }, (_, i) =>
    i < 4000 ? `198.51.${Math.floor(i / 250)}.${i % 250}` : `2001:db8::${(i - 4000).toString(16)}`,
  )
  const times = new Float64Array(n)
  const keys = new Int32Array(n)
  let t = Date.UTC(2026, 10, 16, 0, 0, 0)
  let burstClient = -1
  let burstLeft = 0
  for (let i = 0; i < n; i++) {
    if (rnd() < 0.08) t += 1000 * (1 + Math.floor(rnd() * 2))
    times[i] = t
    if (burstLeft > 0) {
      keys[i] = burstClient
      burstLeft--
    } else if (rnd() < 0.002) {
      burstClient = Math.floor(rnd() * 40)
      burstLeft = 50 + Math.floor(rnd() * 300)
      keys[i] = burstClient
    } else {
      keys[i] = rnd() < 0.5 ? Math.floor(rnd() * 40) : 40 + Math.floor(rnd() * 4960)
    }
  }
  return { times, clients, keys }
}

/** Writes traffic as a combined log format file, with `malformed` garbage lines at known places. */
export function writeClf(file: string, tr: Traffic, malformedEvery = 0): number[] {
  const fd = fs.openSync(file, 'w')
  const bad: number[] = []
  let buf: string[] = []
  let line = 0
  let lastT = Number.NaN
  let date = ''
  for (let i = 0; i < tr.times.length; i++) {
    if (malformedEvery > 0 && i > 0 && i % malformedEvery === 0) {
      line++
      bad.push(line)
      buf.push(`this is not a request ${i}`)
    }
    const t = tr.times[i] as number
    if (t !== lastT) {
      // Alternate zones: the same instant written in UTC+1 or UTC-5 must give the same time.
      date = clfDate(t, (t / 1000) % 2 === 0 ? 60 : -300)
      lastT = t
    }
    line++
    buf.push(
      `${tr.clients[tr.keys[i] as number]} - - [${date}] "GET /api/items?page=${i % 7} HTTP/1.1" 200 ${512 + (i % 300)} "https://example.com/" "Mozilla/5.0 (X11; Linux x86_64)"`,
    )
    if (buf.length >= 20_000) {
      fs.writeSync(fd, `${buf.join('\n')}\n`)
      buf = []
    }
  }
  if (buf.length > 0) fs.writeSync(fd, `${buf.join('\n')}\n`)
  fs.closeSync(fd)
  return bad
}

/** Admitted and denied per algorithm, counted with core's step functions directly (no backend). */
export function directCount(
  tr: Traffic,
  rules: string | string[],
  algorithm: Algorithm,
): { admitted: number; denied: number; deniedByClient: Map<number, number> } {
  const buckets: readonly BucketConfig[] = parseRules(rules, algorithm).rules
  const states = new Map<number, Array<State | undefined>>()
  let admitted = 0
  let denied = 0
  const deniedByClient = new Map<number, number>()
  for (let i = 0; i < tr.times.length; i++) {
    const k = tr.keys[i] as number
    const now = tr.times[i] as number
    const s = states.get(k) ?? buckets.map(() => undefined)
    let allowed: boolean
    if (buckets.length === 1) {
      const out = step(s[0], now, buckets[0] as BucketConfig, 1)
      allowed = out.result.allowed
      if (allowed || out.rebased) s[0] = out.state
    } else {
      const out = stepAll(s, now, buckets, 1)
      allowed = out.allowed
      out.outputs.forEach((o, j) => {
        if (allowed || o.rebased) s[j] = o.state
      })
    }
    states.set(k, s)
    if (allowed) admitted++
    else {
      denied++
      deniedByClient.set(k, (deniedByClient.get(k) ?? 0) + 1)
    }
  }
  return { admitted, denied, deniedByClient }
}

/** Runs the replay CLI as a real process; resolves its exit code and output. */
export function runCli(
  args: string[],
  options: { timeoutMs?: number; cwd?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', tsx, cli, ...args], {
      cwd: options.cwd ?? root,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d
    })
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d
    })
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}
