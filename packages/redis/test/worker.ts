// A child process for the cross-process tests, run with `node --import tsx test/worker.ts`. It answers
// JSON lines on stdin with JSON lines on stdout. FASTLIMIT_SKEW_MS shifts this process's Date.now, as a
// server whose clock is off would.
import { createInterface } from 'node:readline'
import type { BackendResult, BucketConfig } from '@fastlimit/core'
import { RedisBackend, type RedisBackendOptions } from '../src'

const skew = Number(process.env.FASTLIMIT_SKEW_MS ?? 0)
if (skew !== 0) {
  const realNow = Date.now
  Date.now = () => realNow() + skew
}

/** A request from the parent. */
export type WorkerRequest =
  | {
      id: number
      op: 'open'
      name: string
      url: string
      options: Omit<RedisBackendOptions, 'url' | 'client' | 'clock'>
      /** With timeSource 'client': a clock that stands still at this time. */
      fixedNow?: number
    }
  | {
      id: number
      op: 'hammer'
      name: string
      /** Fired all at once: `calls` checks on each job. */
      jobs: Array<{ key: string; buckets: BucketConfig[]; calls: number }>
    }
  | { id: number; op: 'check'; name: string; key: string; bucket: BucketConfig; times: number }
  | { id: number; op: 'clear' | 'close'; name: string }

/** What `hammer` answers per job: how many calls were admitted, and the `remaining` each admitted call saw. */
export interface HammerResult {
  admitted: number
  remaining: number[]
}

const backends = new Map<string, RedisBackend>()

function backend(name: string): RedisBackend {
  const b = backends.get(name)
  if (!b) throw new Error(`no backend ${name}`)
  return b
}

async function handle(req: WorkerRequest): Promise<unknown> {
  switch (req.op) {
    case 'open': {
      const { fixedNow } = req
      const b = RedisBackend.fromUrl(req.url, {
        ...req.options,
        ...(fixedNow === undefined ? {} : { clock: () => fixedNow }),
      })
      backends.set(req.name, b)
      // Connected before the parent starts the clock on anything.
      await b.peek('warm-up', { algorithm: 'fixed-window', limit: 1, windowMs: 1000 })
      return 'ok'
    }
    case 'hammer': {
      const b = backend(req.name)
      return Promise.all(
        req.jobs.map(async (job): Promise<HammerResult> => {
          const results = await Promise.all(
            Array.from({ length: job.calls }, () =>
              job.buckets.length === 1
                ? b.checkAndIncrement(job.key, job.buckets[0] as BucketConfig, 1)
                : b.checkAndIncrementAll(job.key, job.buckets, 1).then((all) => ({
                    ...(all[0] as BackendResult),
                    allowed: all.every((r) => r.allowed),
                  })),
            ),
          )
          const admitted = results.filter((r) => r.allowed)
          return { admitted: admitted.length, remaining: admitted.map((r) => r.remaining) }
        }),
      )
    }
    case 'check': {
      const b = backend(req.name)
      const out: BackendResult[] = []
      for (let i = 0; i < req.times; i++) out.push(await b.checkAndIncrement(req.key, req.bucket, 1))
      return out
    }
    case 'clear':
      await backend(req.name).clear()
      return 'ok'
    case 'close':
      await backend(req.name).close()
      backends.delete(req.name)
      return 'ok'
  }
}

function reply(message: unknown): void {
  process.stdout.write(
    `${JSON.stringify(message, (_k, v) => (v === Number.POSITIVE_INFINITY ? 'Infinity' : v))}\n`,
  )
}

const lines = createInterface({ input: process.stdin })
lines.on('line', (line) => {
  const req = JSON.parse(line) as WorkerRequest
  handle(req).then(
    (result) => reply({ id: req.id, result }),
    (err: Error) => reply({ id: req.id, error: `${err.name}: ${err.message}` }),
  )
})
// The parent closed our stdin (or died): close every backend and leave.
lines.on('close', () => {
  Promise.all([...backends.values()].map((b) => b.close())).finally(() => process.exit(0))
})
reply({ ready: true })
