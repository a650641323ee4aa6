// A child process for the lease tests, run with `node --import tsx test/lease-child.ts <json>`: either a
// crowd of acquirers that count themselves in a Redis counter (each holder INCRs it after its acquire and
// DECRs it before its release, and keeps the highest count it saw), or a holder that takes one lease,
// says so, and hangs until it is killed.
import { FastLimit } from '@fastlimit/core'
import { Cluster, Redis } from 'ioredis'
import { RedisBackend } from '../src'

interface Args {
  mode: 'crowd' | 'hold'
  url: string
  counter: { port: number } | { nodes: Array<{ host: string; port: number }> }
  prefix: string
  identity: string
  limit: number
  leaseMs: number
  n: number
  holdMs: number
}

const args = JSON.parse(process.argv[2] as string) as Args
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const backend = RedisBackend.fromUrl(args.url, { keyPrefix: args.prefix })
const limiter = new FastLimit({ backend, onBackendError: 'throw', timeoutMs: 10_000 })

if (args.mode === 'hold') {
  const lease = await limiter.acquire(args.identity, { limit: args.limit, leaseMs: args.leaseMs })
  process.stdout.write(`${JSON.stringify({ allowed: lease.allowed, expiresMs: lease.expiresMs })}\n`)
  setInterval(() => undefined, 60_000)
} else {
  const c = args.counter
  const counter = 'nodes' in c ? new Cluster(c.nodes) : new Redis({ port: c.port, host: '127.0.0.1' })
  const key = `${args.prefix}holders`
  let max = 0
  let done = 0
  await Promise.all(
    Array.from({ length: args.n }, async () => {
      for (;;) {
        const lease = await limiter.acquire(args.identity, { limit: args.limit, leaseMs: args.leaseMs })
        if (!lease.allowed) {
          await sleep(Math.min(5 + Math.random() * 10, lease.retryAfterMs))
          continue
        }
        const now = await counter.incr(key)
        if (now > max) max = now
        await sleep(args.holdMs)
        await counter.decr(key)
        await lease.release()
        done++
        return
      }
    }),
  )
  process.stdout.write(`${JSON.stringify({ max, done })}\n`)
  counter.disconnect()
  await backend.close()
  process.exit(0)
}
