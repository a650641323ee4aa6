// A child process for the lease tests, run with `node --import tsx test/lease-child.ts <json>`: either a
// crowd of acquirers that count themselves in a shared counter database (each holder increments it in
// one transaction after its acquire and decrements it before its release, and keeps the highest count
// it saw), or a holder that takes one lease, says so, and hangs until it is killed.
import { FastLimit } from '@fastlimit/core'
import Database from 'better-sqlite3'
import { SQLiteBackend } from '../src'

interface Args {
  mode: 'crowd' | 'hold'
  file: string
  counter: string
  identity: string
  limit: number
  leaseMs: number
  n: number
  holdMs: number
}

const args = JSON.parse(process.argv[2] as string) as Args
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const limiter = new FastLimit({ backend: new SQLiteBackend(args.file, { cleanupIntervalMs: 0 }) })

if (args.mode === 'hold') {
  const lease = await limiter.acquire(args.identity, { limit: args.limit, leaseMs: args.leaseMs })
  process.stdout.write(`${JSON.stringify({ allowed: lease.allowed, expiresMs: lease.expiresMs })}\n`)
  setInterval(() => undefined, 60_000)
} else {
  const counter = new Database(args.counter)
  counter.pragma('busy_timeout = 5000')
  const up = counter.prepare('UPDATE holders SET n = n + 1 RETURNING n').pluck()
  const down = counter.prepare('UPDATE holders SET n = n - 1')
  let max = 0
  let done = 0
  await Promise.all(
    Array.from({ length: args.n }, async () => {
      for (;;) {
        const lease = await limiter.acquire(args.identity, { limit: args.limit, leaseMs: args.leaseMs })
        if (!lease.allowed) {
          await sleep(Math.min(3, lease.retryAfterMs))
          continue
        }
        const now = up.get() as number
        if (now > max) max = now
        await sleep(args.holdMs)
        down.run()
        await lease.release()
        done++
        return
      }
    }),
  )
  process.stdout.write(`${JSON.stringify({ max, done })}\n`)
  process.exit(0)
}
