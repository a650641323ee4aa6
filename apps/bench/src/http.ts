// HTTP: each framework bare, with fastlimit's middleware and with its usual peer; servers in child
// processes, autocannon in this one, A/B/C alternating over the rounds; server CPU per request read
// from /proc/<pid>/stat, which is steadier than req/s on a shared machine.
import { type ChildProcess, execFileSync, fork } from 'node:child_process'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { rotate, type Stat, stat } from './harness'

const here = path.dirname(fileURLToPath(import.meta.url))

export const FRAMEWORKS = ['express', 'hono', 'koa', 'fastify', 'nestjs'] as const
export const FLAVOURS = ['bare', 'noop', 'fastlimit', 'peer'] as const
export const PEERS: Record<(typeof FRAMEWORKS)[number], string> = {
  express: 'express-rate-limit',
  hono: 'hono-rate-limiter',
  koa: 'koa-ratelimit',
  fastify: '@fastify/rate-limit',
  nestjs: '@nestjs/throttler',
}

interface Server {
  variant: string
  child: ChildProcess
  port: number
}

/** The server's own CPU time so far, in µs (from `process.cpuUsage()` in the server, over IPC). */
function cpuUsage(child: ChildProcess): Promise<{ user: number; system: number }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the server did not report its CPU time')), 5000)
    const onMessage = (m: { cpu?: { user: number; system: number } }) => {
      if (!m.cpu) return
      clearTimeout(timer)
      child.off('message', onMessage)
      resolve(m.cpu)
    }
    child.on('message', onMessage)
    child.send('cpu')
  })
}

/** Pins a process to one CPU when the machine has two or more and `taskset` exists (best effort). */
function pin(pid: number, cpu: number): void {
  if (os.cpus().length < 2) return
  try {
    execFileSync('taskset', ['-acp', String(cpu), String(pid)], { stdio: 'ignore' })
  } catch {
    // No taskset: the measurement still holds, with more noise.
  }
}

async function start(variant: string): Promise<Server> {
  const child = fork(path.join(here, 'http-server.ts'), [variant, '0'], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${variant} did not start within 120 s`)), 120_000)
    child.once('message', (m: { port: number }) => {
      clearTimeout(timer)
      resolve(m.port)
    })
    child.once('exit', (code) => reject(new Error(`${variant} exited with ${code}`)))
  })
  // Servers on CPU 0, the load generator (this process) on CPU 1: they do not steal each other's time.
  pin(child.pid as number, 0)
  return { variant, child, port }
}

export interface HttpResult {
  framework: string
  flavour: string
  reqPerSec: Stat
  cpuUsPerReq: Stat
  /** CPU µs per request over the bare framework, per round. */
  overheadUs: Stat
  /** User-space CPU µs per request (the JavaScript a middleware runs). */
  userUsPerReq: Stat
  /** User-space CPU µs per request over the bare framework, per round. */
  userOverheadUs: Stat
  non2xx: number
}

/** Runs the HTTP benchmark: `rounds` rounds of `seconds` per variant, rotating the order each round. */
export async function httpBench({
  rounds,
  seconds,
  connections = 10,
  warmup = 'long',
  onRound,
}: {
  rounds: number
  seconds: number
  connections?: number
  /** `'long'`: 1 s of load per server before measuring; `'short'`: 1,000 requests (the quick run). */
  warmup?: 'long' | 'short'
  /** Told before each measured slice: the 1-based round, the variant, slices done and their total. */
  onRound?: (round: number, variant: string, done: number, total: number) => void
}): Promise<HttpResult[]> {
  const servers: Server[] = []
  pin(process.pid, 1)
  try {
    // Started together (nothing is measured yet), each pinned to its CPU by start().
    const variants = FRAMEWORKS.flatMap((f) => FLAVOURS.map((fl) => `${f}-${fl}`))
    for (const started of await Promise.allSettled(variants.map((v) => start(v)))) {
      if (started.status === 'fulfilled') servers.push(started.value)
    }
    const failed = variants.length - servers.length
    if (failed > 0) throw new Error(`${failed} HTTP server(s) failed to start`)
    const samples = new Map<string, { rps: number[]; cpu: number[]; user: number[]; non2xx: number }>()
    for (const s of servers) samples.set(s.variant, { rps: [], cpu: [], user: [], non2xx: 0 })
    // Warm up every server (JIT) before measuring.
    for (const s of servers)
      await autocannon({
        url: `http://127.0.0.1:${s.port}/`,
        connections,
        ...(warmup === 'long' ? { duration: 1 } : { amount: 1000 }),
      })
    let slices = 0
    for (let r = 0; r < rounds; r++) {
      for (const f of FRAMEWORKS) {
        const group = servers.filter((s) => s.variant.startsWith(`${f}-`))
        for (const s of rotate(group, r)) {
          onRound?.(r + 1, s.variant, slices++, rounds * servers.length)
          const before = await cpuUsage(s.child)
          const result = await autocannon({
            url: `http://127.0.0.1:${s.port}/`,
            connections,
            duration: seconds,
          })
          const after = await cpuUsage(s.child)
          const total = Math.max(1, result.requests.total)
          const entry = samples.get(s.variant)
          if (!entry) continue
          entry.rps.push(result.requests.total / seconds)
          entry.cpu.push((after.user + after.system - before.user - before.system) / total)
          entry.user.push((after.user - before.user) / total)
          entry.non2xx += result.non2xx
        }
      }
    }
    const out: HttpResult[] = []
    for (const f of FRAMEWORKS) {
      const bare = samples.get(`${f}-bare`)
      for (const fl of FLAVOURS) {
        const s = samples.get(`${f}-${fl}`)
        if (!s || !bare) continue
        out.push({
          framework: f,
          flavour: fl,
          reqPerSec: stat(s.rps),
          cpuUsPerReq: stat(s.cpu),
          overheadUs: stat(s.cpu.map((c, i) => c - (bare.cpu[i] as number))),
          userUsPerReq: stat(s.user),
          userOverheadUs: stat(s.user.map((c, i) => c - (bare.user[i] as number))),
          non2xx: s.non2xx,
        })
      }
    }
    return out
  } finally {
    for (const s of servers) s.child.kill('SIGKILL')
  }
}
