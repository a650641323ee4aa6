// Sustained load on a demo app (apps/express-demo, unchanged, on the memory backend) behind real HTTP on
// 127.0.0.1: hundreds of requests per second from hundreds of client addresses (127.x.y.z), exact counts per
// client, a flat heap and event-loop delay under 10 ms p99, measured inside the server with perf_hooks.
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import { afterAll, describe, expect, it } from 'vitest'
import { formatTally, percentile, Recorder, round, sleep, tally } from './helpers'
import { killWorkers, startWorker } from './workers'

const recorder = new Recorder('load', 'load')

afterAll(() => {
  killWorkers()
  recorder.save()
})

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })
}

/** What each client does, and what the demo's rules must answer (exactly). */
const SCRIPT: ReadonlyArray<{ method: 'GET' | 'POST'; path: string; expect: number }> = [
  // POST /login: 5 per 15 minutes per IP, then 429 (wrong password: 401 while admitted).
  ...Array.from({ length: 8 }, (_, i) => ({
    method: 'POST' as const,
    path: '/login',
    expect: i < 5 ? 401 : 429,
  })),
  // GET /search?limit=100 costs 10 of 30 units a minute: 3 admitted, then 429 (20 s to refill 10 units).
  ...Array.from({ length: 4 }, (_, i) => ({
    method: 'GET' as const,
    path: '/search?q=x&limit=100',
    expect: i < 3 ? 200 : 429,
  })),
  // Everything counts against the app-wide 100/min, which these 20 requests never reach.
  ...Array.from({ length: 8 }, () => ({ method: 'GET' as const, path: '/', expect: 200 })),
]

/** Client `i`'s source address on the loopback network (the demo keys by IP, without proxies). */
function clientAddress(i: number): string {
  return `127.${1 + Math.floor(i / 64_516)}.${1 + (Math.floor(i / 254) % 254)}.${1 + (i % 254)}`
}

interface Sent {
  readonly client: number
  readonly expect: number
  status: number
  latencyMs: number
  error?: string
}

function send(
  agent: http.Agent,
  port: number,
  localAddress: string,
  step: (typeof SCRIPT)[number],
): Promise<number> {
  return new Promise((resolve, reject) => {
    const body = step.method === 'POST' ? JSON.stringify({ user: 'load', password: 'wrong' }) : undefined
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        localAddress,
        agent,
        method: step.method,
        path: step.path,
        headers: body
          ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
          : {},
        timeout: 10_000,
      },
      (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      },
    )
    req.on('timeout', () => req.destroy(new Error('timed out after 10 s')))
    req.on('error', reject)
    req.end(body)
  })
}

async function runLoad(
  demo: string,
  seconds: number,
  ratePerSec: number,
  concurrency: number,
): Promise<void> {
  const port = await freePort()
  const server = startWorker('demo-server', { demo, port }, ['--expose-gc'])
  // Other test suites share these 2 cores: give the server under test CPU priority (when allowed), so the
  // event-loop delay measured is the app's, not the time the scheduler gave to a neighbour.
  let priority = 'default'
  try {
    os.setPriority(server.child.pid as number, -10)
    priority = 'nice -10'
  } catch {
    // Not permitted (not root): measure at the default priority.
  }
  await server.next('ready')
  const clients = Math.floor((seconds * ratePerSec) / SCRIPT.length)
  const sent: Sent[] = []
  // Warm up the server (JIT) on an address no measured client uses.
  const warm = new http.Agent({ keepAlive: true, maxSockets: 4 })
  for (let i = 0; i < 200; i++)
    await send(warm, port, '127.254.254.254', { method: 'GET', path: '/health', expect: 200 })
  warm.destroy()
  server.child.send({ type: 'start', everyMs: Math.max(2000, (seconds * 1000) / 6) })
  const t0 = performance.now()
  let slot = 0
  /** Resolves at this request's turn: requests start at a steady rate. */
  const turn = async () => {
    const at = t0 + (slot++ * 1000) / ratePerSec
    const wait = at - performance.now()
    if (wait > 0) await sleep(wait)
  }
  let next = 0
  const worker = async () => {
    for (;;) {
      const client = next++
      if (client >= clients) return
      const localAddress = clientAddress(client)
      // One keep-alive connection per client, as a browser would hold.
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
      try {
        for (const step of SCRIPT) {
          await turn()
          const s: Sent = { client, expect: step.expect, status: 0, latencyMs: -1 }
          sent.push(s)
          const start = performance.now()
          try {
            s.status = await send(agent, port, localAddress, step)
          } catch (err) {
            s.error = (err as Error).message
          }
          s.latencyMs = performance.now() - start
        }
      } finally {
        agent.destroy()
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  const elapsed = (performance.now() - t0) / 1000
  server.child.send({ type: 'stop' })
  const stats = await server.next<{
    resolutionMs: number
    samples: number
    p50DelayMs: number
    p99DelayMs: number
    maxDelayMs: number
    p99RawMs: number
    heapSamples: Array<{ atMs: number; mb: number }>
  }>('stats')
  server.child.kill('SIGKILL')
  await server.exited

  const errors = sent.filter((s) => s.error !== undefined)
  const wrong = sent.filter((s) => s.error === undefined && s.status !== s.expect)
  const latencies = sent.map((s) => s.latencyMs)
  const heap = stats.heapSamples.map((h) => h.mb)
  const firstHeap = Math.min(...heap.slice(0, 2))
  const lastHeap = Math.max(...heap.slice(-2))
  const row = {
    demo,
    // A retried run (below) shows as attempt 2, next to the first.
    attempt: recorder.rows.filter((r) => r.demo === demo).length + 1,
    seconds: round(elapsed),
    requests: sent.length,
    ratePerSec: round(sent.length / elapsed),
    clients,
    concurrency,
    serverPriority: priority,
    statuses: formatTally(tally(sent, (s) => (s.error ? 'error' : String(s.status)))),
    errors: errors.length,
    exactPerClient: `${clients - new Set(wrong.map((w) => w.client)).size}/${clients} clients exactly 5 logins + 3 searches admitted`,
    latencyP50Ms: round(percentile(latencies, 50)),
    latencyP99Ms: round(percentile(latencies, 99)),
    latencyMaxMs: round(Math.max(...latencies)),
    eventLoopDelayP50Ms: round(stats.p50DelayMs, 2),
    eventLoopDelayP99Ms: round(stats.p99DelayMs, 2),
    eventLoopDelayMaxMs: round(stats.maxDelayMs, 2),
    eventLoopSamples: stats.samples,
    heapAfterGcMb: heap.map((h) => round(h)).join(' → '),
  }
  recorder.add(row)
  recorder.details[demo] = {
    stats,
    expectedPerClient: SCRIPT.map((s) => `${s.method} ${s.path}: ${s.expect}`),
  }
  expect(errors.map((e) => e.error).slice(0, 5), 'request errors').toEqual([])
  expect(wrong.slice(0, 5), 'responses that differ from the exact expectation').toEqual([])
  // Sustained: the planned rate, give or take a loaded machine.
  expect(sent.length).toBe(clients * SCRIPT.length)
  expect(elapsed).toBeLessThan(seconds * 1.5 + 5)
  expect(stats.p99DelayMs, 'event-loop delay p99 (ms)').toBeLessThan(10)
  // Flat: the heap after GC at the end is within a few MB of the start (the demo's keys take ~0.3 MB).
  expect(lastHeap - firstHeap, `heap after GC ${heap.join(', ')}`).toBeLessThan(8)
}

// One retry: these run alone, but on a shared VM the host can still take a core away for tens of ms (CPU
// steal), which lands in the event-loop delay. A regression in the app fails both attempts; the results
// file keeps both rows.
describe('sustained load on the demos', { retry: 1 }, () => {
  it('express-demo: 60 s at 400 req/s from 1,200 client addresses', async () => {
    await runLoad('express-demo', 60, 400, 24)
  }, 180_000)

  it.each(['hono-demo', 'koa-demo'])(
    '%s: 12 s at 400 req/s',
    async (demo) => {
      await runLoad(demo, 12, 400, 24)
    },
    60_000,
  )
})
