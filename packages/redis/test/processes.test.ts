// Several Node processes share one limit: four child processes hammer the same keys at once and the
// total admitted is exactly the limit, for every algorithm, on standalone Redis and on a Cluster. Then
// two processes whose clocks are 5 minutes apart share one limit through the server's TIME, while the
// same setup with timeSource 'client' over-admits (the test can fail).
import { type ChildProcess, spawn } from 'node:child_process'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import {
  ALGORITHMS,
  type Algorithm,
  type BackendResult,
  type BucketConfig,
  MAX_WINDOW_MS,
} from '@fastlimit/core'
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { closeClient, rawClient, type Topology, urlOf } from './helpers'
import type { HammerResult, WorkerRequest } from './worker'

const here = path.dirname(fileURLToPath(import.meta.url))
const SKEWS = [-150_000, 150_000, 0, 45_000]

type Request = WorkerRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never

/** One child process running test/worker.ts. */
class Worker {
  readonly #child: ChildProcess
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  #next = 1
  #stderr = ''
  readonly ready: Promise<void>

  constructor(readonly skewMs: number) {
    this.#child = spawn(process.execPath, ['--import', 'tsx', path.join(here, 'worker.ts')], {
      cwd: path.join(here, '..'),
      env: { ...process.env, FASTLIMIT_SKEW_MS: String(skewMs) },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    this.#child.stderr?.on('data', (d: Buffer) => {
      this.#stderr = (this.#stderr + d.toString()).slice(-4000)
    })
    let markReady: () => void = () => undefined
    let failReady: (e: Error) => void = () => undefined
    this.ready = new Promise<void>((resolve, reject) => {
      markReady = resolve
      failReady = reject
    })
    this.#child.once('exit', (code) => {
      const err = new Error(`worker exited with ${code}: ${this.#stderr}`)
      failReady(err)
      for (const p of this.#pending.values()) p.reject(err)
      this.#pending.clear()
    })
    createInterface({ input: this.#child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      const msg = JSON.parse(line) as { ready?: true; id?: number; result?: unknown; error?: string }
      if (msg.ready) return markReady()
      const p = this.#pending.get(msg.id as number)
      if (!p) return
      this.#pending.delete(msg.id as number)
      if (msg.error !== undefined) p.reject(new Error(msg.error))
      else p.resolve(msg.result)
    })
  }

  request<T>(req: Request): Promise<T> {
    const id = this.#next++
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
      this.#child.stdin?.write(`${JSON.stringify({ ...req, id })}\n`)
    })
  }

  /** Ends the worker: closing its stdin makes it close its backends and exit; SIGKILL if it does not. */
  async stop(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return
    const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()))
    this.#child.stdin?.end()
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(timer)
  }

  kill(): void {
    if (this.#child.exitCode === null) this.#child.kill('SIGKILL')
  }
}

const workers: Worker[] = []
const killAll = () => {
  for (const w of workers) w.kill()
}

beforeAll(async () => {
  process.once('exit', killAll)
  for (const skew of SKEWS) workers.push(new Worker(skew))
  await Promise.all(workers.map((w) => w.ready))
}, 60_000)

afterAll(async () => {
  await Promise.all(workers.map((w) => w.stop()))
  process.off('exit', killAll)
}, 30_000)

const LIMIT = 150
const CALLS = 100 // per process and job: 400 calls in all for 150 admissions
const FIXED_NOW = 1_700_000_000_000

interface Job {
  name: string
  key: string
  buckets: BucketConfig[]
  calls: number
}

function jobsFor(algorithms: readonly Algorithm[], windowMs: number): Job[] {
  return algorithms.flatMap((algorithm) => {
    const bucket: BucketConfig = { algorithm, limit: LIMIT, windowMs }
    const wider: BucketConfig = { algorithm, limit: LIMIT + 5, windowMs }
    return [
      // Hash tags as FastLimit builds them, so a Cluster spreads the keys over its masters.
      { name: algorithm, key: `fl:{${algorithm}}:single`, buckets: [bucket], calls: CALLS },
      {
        name: `${algorithm} (all-or-nothing)`,
        key: `fl:{${algorithm}}:all`,
        buckets: [bucket, wider],
        calls: CALLS,
      },
    ]
  })
}

describe.each<Topology>(['standalone', 'cluster'])('exact across 4 processes (%s)', (topology) => {
  const prefix = `processes-${topology}:`

  beforeAll(async () => {
    await Promise.all(
      workers.flatMap((w) => [
        w.request({
          op: 'open',
          name: `${topology}-client`,
          url: urlOf(topology),
          options: { keyPrefix: prefix, timeSource: 'client' },
          fixedNow: FIXED_NOW,
        }),
        w.request({
          op: 'open',
          name: `${topology}-server`,
          url: urlOf(topology),
          options: { keyPrefix: prefix },
        }),
      ]),
    )
    await workers[0]?.request({ op: 'clear', name: `${topology}-server` })
  }, 60_000)

  afterAll(async () => {
    await workers[0]?.request({ op: 'clear', name: `${topology}-server` })
    await Promise.all(
      workers.flatMap((w) => [
        w.request({ op: 'close', name: `${topology}-client` }),
        w.request({ op: 'close', name: `${topology}-server` }),
      ]),
    )
  })

  it('every algorithm admits exactly the limit, each admission seeing its own remaining', async () => {
    // Client time standing still (no refill, no window boundary) for all six; server time for the ones
    // a 365-day window makes boundary-free: the meters (one unit refills in 44 hours) and the log.
    const runs = [
      { backend: `${topology}-client`, tag: 'client', jobs: jobsFor(ALGORITHMS, 60_000) },
      {
        backend: `${topology}-server`,
        tag: 'server',
        jobs: jobsFor(['gcra', 'token-bucket', 'leaky-bucket', 'sliding-log'], MAX_WINDOW_MS).map((j) => ({
          ...j,
          key: `${j.key}:server`,
        })),
      },
    ]
    const answers = await Promise.all(
      runs.flatMap((run) =>
        workers.map((w) =>
          w.request<HammerResult[]>({
            op: 'hammer',
            name: run.backend,
            jobs: run.jobs.map(({ key, buckets, calls }) => ({ key, buckets, calls })),
          }),
        ),
      ),
    )
    let k = 0
    for (const run of runs) {
      const perWorker = answers.slice(k, k + workers.length)
      k += workers.length
      run.jobs.forEach((job, j) => {
        const results = perWorker.map((a) => a[j] as HammerResult)
        const where = `${job.name}, ${run.tag} time`
        expect(
          results.reduce((sum, r) => sum + r.admitted, 0),
          where,
        ).toBe(LIMIT)
        const remaining = results.flatMap((r) => r.remaining).sort((a, b) => a - b)
        expect(remaining, where).toEqual(Array.from({ length: LIMIT }, (_, i) => i))
      })
    }
  })
})

describe('clock skew: two processes whose clocks are 5 minutes apart', () => {
  const prefix = 'processes-skew:'
  const bucketOf = (algorithm: Algorithm): BucketConfig => ({ algorithm, limit: 5, windowMs: 60_000 })
  let raw: Redis
  let behind: Worker
  let ahead: Worker

  beforeAll(async () => {
    raw = rawClient('standalone') as Redis
    behind = workers[0] as Worker
    ahead = workers[1] as Worker
    expect(ahead.skewMs - behind.skewMs).toBe(300_000)
    for (const w of [behind, ahead]) {
      await w.request({
        op: 'open',
        name: 'skew-server',
        url: urlOf('standalone'),
        options: { keyPrefix: prefix },
      })
      await w.request({
        op: 'open',
        name: 'skew-client',
        url: urlOf('standalone'),
        options: { keyPrefix: prefix, timeSource: 'client' },
      })
    }
    await behind.request({ op: 'clear', name: 'skew-server' })
  }, 60_000)

  afterAll(async () => {
    await behind.request({ op: 'clear', name: 'skew-server' })
    for (const w of [behind, ahead]) {
      await w.request({ op: 'close', name: 'skew-server' })
      await w.request({ op: 'close', name: 'skew-client' })
    }
    await closeClient(raw)
  })

  /**
   * The window algorithms count per 60 s window: wait, if needed, until `clock` is at least 5 s from the
   * end of one, so the few checks of a race stay inside it.
   */
  async function awayFromBoundary(clock: () => Promise<number>): Promise<void> {
    const left = 60_000 - ((await clock()) % 60_000)
    if (left < 5000) await new Promise((r) => setTimeout(r, left + 200))
  }

  /** The slower process charges 6, then the faster one tries 5, on every algorithm at once. */
  async function race(backend: string): Promise<{ first: number[]; second: number[] }> {
    const first = await Promise.all(
      ALGORITHMS.map((a) =>
        behind.request<BackendResult[]>({
          op: 'check',
          name: backend,
          key: `${backend}:${a}`,
          bucket: bucketOf(a),
          times: 6,
        }),
      ),
    )
    const second = await Promise.all(
      ALGORITHMS.map((a) =>
        ahead.request<BackendResult[]>({
          op: 'check',
          name: backend,
          key: `${backend}:${a}`,
          bucket: bucketOf(a),
          times: 5,
        }),
      ),
    )
    const admitted = (rs: BackendResult[]) => rs.filter((r) => r.allowed).length
    return { first: first.map(admitted), second: second.map(admitted) }
  }

  it("with the server's TIME (the default) they share one limit exactly", async () => {
    await awayFromBoundary(async () => {
      const [s, us] = await raw.time()
      return Number(s) * 1000 + Math.floor(Number(us) / 1000)
    })
    const { first, second } = await race('skew-server')
    expect(first).toEqual(ALGORITHMS.map(() => 5))
    expect(second).toEqual(ALGORITHMS.map(() => 0))
  })

  it("with timeSource 'client' the same setup disagrees: the process ahead admits a second limit", async () => {
    await awayFromBoundary(async () => Date.now() + behind.skewMs)
    const { first, second } = await race('skew-client')
    expect(first).toEqual(ALGORITHMS.map(() => 5))
    expect(second).toEqual(ALGORITHMS.map(() => 5))
  })
})
