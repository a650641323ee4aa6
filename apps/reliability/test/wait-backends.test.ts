// limiter.wait() on every store and every algorithm: two processes (one on memory, whose store is its
// own) wait on one identity per algorithm at once; every admission stays within the algorithm's bound
// over any interval (from the store's own time), the waits finish about when the rate allows, FIFO per
// process, and each process exits by itself. SQLite on a real file, Redis standalone and Cluster.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { Algorithm, RuleObject } from '@fastlimit/core'
import { afterAll, describe, expect, it } from 'vitest'
import { startCluster, startStandalone, stopAll } from '../../../packages/redis/test/servers'
import { Recorder } from './helpers'
import { admissionsOf, type Finished, mostWithin, runWaitWorkers, type WaitWorkerConfig } from './wait-shared'
import { killWorkers } from './workers'

const recorder = new Recorder('wait-backends', 'wait')
const ALGORITHMS: readonly Algorithm[] = [
  'gcra',
  'token-bucket',
  'leaky-bucket',
  'fixed-window',
  'sliding-window',
  'sliding-log',
]
const LIMIT = 4
const WINDOW_MS = 1000
/** Waits per process and algorithm. */
const N = 12
const BUCKETS = new Set<Algorithm>(['gcra', 'token-bucket', 'leaky-bucket'])

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-wait-'))

afterAll(async () => {
  killWorkers()
  await stopAll()
  fs.rmSync(dir, { recursive: true, force: true })
  recorder.save()
})

/** The most an algorithm admits within a closed interval of `WINDOW_MS - 1` ms (its documented bound). */
function bound(algorithm: Algorithm): number {
  const d = WINDOW_MS - 1
  if (BUCKETS.has(algorithm)) return Math.floor(LIMIT + (LIMIT * d) / WINDOW_MS)
  if (algorithm === 'sliding-log') return LIMIT
  // fixed and sliding window: limit * (ceil(d / W) + 1)
  return LIMIT * (Math.ceil(d / WINDOW_MS) + 1)
}

function rule(algorithm: Algorithm): RuleObject {
  return { limit: LIMIT, window: WINDOW_MS, algorithm }
}

async function run(
  store: string,
  processes: number,
  config: (startAt: number) => Omit<WaitWorkerConfig, 'tag' | 'startAt' | 'jobs'>,
): Promise<void> {
  const done: Finished[] = await runWaitWorkers(processes, (i, startAt) => ({
    ...config(startAt),
    tag: `${store}-${i}`,
    startAt,
    jobs: ALGORITHMS.map((algorithm) => ({ identity: algorithm, rule: rule(algorithm), n: N })),
    // The second process goes through throttle(), the first through limiter.wait().
    throttle: i === 1,
  }))
  const figures: string[] = []
  for (const d of done) {
    expect(d.exit, `${d.report.tag} exits by itself`).toEqual({ code: 0, signal: null })
    expect(d.exitAfterMs).toBeLessThan(5000)
    for (const job of d.report.jobs) {
      expect(job.errors).toEqual([])
      expect(job.order).toEqual(Array.from({ length: N }, (_, i) => i))
    }
  }
  const start = Math.min(...done.map((d) => d.report.started))
  for (const algorithm of ALGORITHMS) {
    const brackets = done.flatMap((d) => admissionsOf(d.report, algorithm))
    expect(brackets).toHaveLength(processes * N)
    const most = mostWithin(brackets, WINDOW_MS - 1)
    expect(most, `${store} ${algorithm}: admissions within any ${WINDOW_MS - 1} ms`).toBeLessThanOrEqual(
      bound(algorithm),
    )
    // Progress: the waits end about when the rate allows (a full bucket, then LIMIT per window), with
    // a generous margin for a loaded machine; a lost wake-up would take far longer.
    const lastMs = Math.max(...brackets.map(([, b]) => b)) - start
    const ideal = ((processes * N - LIMIT) / LIMIT) * WINDOW_MS
    expect(lastMs, `${store} ${algorithm}: the last admission`).toBeLessThan(2 * ideal + 3000)
    figures.push(`${algorithm} ${most}/${bound(algorithm)} in ${Math.round(lastMs)} ms`)
  }
  recorder.add({
    class: `wait: every algorithm, ${store}, ${processes} process${processes > 1 ? 'es' : ''}`,
    cases: ALGORITHMS.length * processes * N,
    result: `most admitted within 999 ms / bound, last admission: ${figures.join('; ')}`,
  })
}

describe('wait on every store, every algorithm', () => {
  it('memory (one process: its store is its own)', async () => {
    await run('memory', 1, () => ({ store: 'memory' }))
  }, 120_000)

  it('SQLite, two processes on one file', async () => {
    const file = path.join(dir, 'wait.db')
    await run('sqlite', 2, () => ({ store: 'sqlite', file }))
  }, 120_000)

  it('Redis standalone, two processes', async () => {
    const redis = await startStandalone()
    try {
      await run('redis', 2, () => ({ store: 'redis', url: redis.url }))
    } finally {
      await redis.stop()
    }
  }, 120_000)

  it('Redis Cluster (3 masters), two processes', async () => {
    const cluster = await startCluster({ masters: 3, replicasPerMaster: 0 })
    try {
      await run('cluster', 2, () => ({ store: 'redis', url: cluster.url }))
    } finally {
      await cluster.stop()
    }
  }, 120_000)
})
