// Concurrency leases on real Redis (server TIME): 1,000 acquirers in 4 processes at limit 5 never hold
// more than 5 slots at once (counted by the holders in Redis), on standalone and on a 3-master Cluster; a
// holder killed with SIGKILL loses its slot within leaseMs; a late release frees nothing; a late call is
// refused; the lease set expires with its leases; NOSCRIPT is survived.
import { spawn } from 'node:child_process'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { FastLimit } from '@fastlimit/core'
import { leaseCrowd } from '@fastlimit/core/testing'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, inject, it } from 'vitest'
import { RedisBackend } from '../src'
import { backendOn, closeClient, rawClient, scanKeys, type Topology, urlOf } from './helpers'

const here = path.dirname(fileURLToPath(import.meta.url))
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const opened: RedisBackend[] = []
afterAll(async () => {
  await Promise.all(opened.map((b) => b.close()))
})
function backend(topology: Topology, prefix: string, options = {}): RedisBackend {
  const b = backendOn(topology, { keyPrefix: prefix, ...options })
  opened.push(b)
  return b
}

/** Starts test/lease-child.ts; resolves its first line of output (JSON), with the child. */
function child(args: Record<string, unknown>) {
  const proc = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(here, 'lease-child.ts'), JSON.stringify(args)],
    { cwd: path.join(here, '..'), stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let stderr = ''
  proc.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000)
  })
  const line = new Promise<Record<string, unknown>>((resolve, reject) => {
    createInterface({ input: proc.stdout as NodeJS.ReadableStream }).once('line', (l) =>
      resolve(JSON.parse(l)),
    )
    proc.once('exit', (code) => reject(new Error(`child exited with ${code}: ${stderr.slice(-1500)}`)))
  })
  return { proc, line }
}

for (const topology of ['standalone', 'cluster'] as const) {
  describe(`RedisBackend leases (${topology})`, () => {
    it('1,000 acquirers in 4 processes at limit 5: never more than 5 holders at once', async () => {
      const t = inject('redis')
      const prefix = `leases-crowd-${topology}:`
      const counter = topology === 'cluster' ? { nodes: t.cluster.nodes } : { port: t.standalone.port }
      const common = {
        mode: 'crowd',
        url: urlOf(topology),
        counter,
        prefix,
        identity: 'hot',
        limit: 5,
        leaseMs: 60_000,
        holdMs: 2,
      }
      const runs = Array.from({ length: 4 }, () => child({ ...common, n: 250 }).line)
      const results = (await Promise.all(runs)) as Array<{ max: number; done: number }>
      expect(results.reduce((s, r) => s + r.done, 0)).toBe(1000)
      const max = Math.max(...results.map((r) => r.max))
      expect(max).toBeLessThanOrEqual(5)
      expect(max).toBeGreaterThanOrEqual(2)
      // Every slot came back.
      const limiter = new FastLimit({ backend: backend(topology, prefix) })
      expect((await limiter.acquire('hot', { limit: 5 })).holders).toBe(1)
    }, 120_000)
  })
}

describe('RedisBackend leases (standalone)', () => {
  it('1,000 concurrent acquirers in one process at limit 5, auto-pipelined or not', async () => {
    const port = inject('redis').standalone.port
    const piped = new Redis({ port, host: '127.0.0.1', enableAutoPipelining: true })
    try {
      for (const b of [
        backend('standalone', 'leases-one:'),
        new RedisBackend({ client: piped, keyPrefix: 'leases-piped:' }),
      ]) {
        const limiter = new FastLimit({ backend: b })
        const r = await leaseCrowd(limiter, 'k', {
          n: 1000,
          limit: 5,
          leaseMs: 60_000,
          holdMs: 1,
          pollMs: 10,
        })
        expect(r).toMatchObject({ max: 5, done: 1000 })
      }
    } finally {
      await closeClient(piped)
    }
  }, 120_000)

  it('reclaims the slot of a holder killed with SIGKILL within leaseMs, and a late release frees nothing', async () => {
    const prefix = 'leases-kill:'
    const leaseMs = 1500
    const holder = child({
      mode: 'hold',
      url: urlOf('standalone'),
      counter: {},
      prefix,
      identity: 'job',
      limit: 1,
      leaseMs,
      n: 0,
      holdMs: 0,
    })
    const held = await holder.line
    expect(held.allowed).toBe(true)
    holder.proc.kill('SIGKILL')
    await new Promise((r) => holder.proc.once('exit', r))
    const limiter = new FastLimit({ backend: backend('standalone', prefix) })
    const refused = await limiter.acquire('job', { limit: 1, leaseMs })
    expect(refused).toMatchObject({ allowed: false, holders: 1 })
    expect(refused.retryAfterMs).toBeGreaterThan(0)
    expect(refused.retryAfterMs).toBeLessThanOrEqual(leaseMs)
    await sleep(refused.retryAfterMs + 5)
    const mine = await limiter.acquire('job', { limit: 1, leaseMs: 200 })
    expect(mine.allowed).toBe(true)
    // Mine expires unreleased; another takes the slot; my late release must not free it.
    await sleep(250)
    const theirs = await limiter.acquire('job', { limit: 1, leaseMs: 60_000 })
    expect(theirs.allowed).toBe(true)
    await mine.release()
    expect(await limiter.acquire('job', { limit: 1, leaseMs: 60_000 })).toMatchObject({
      allowed: false,
      holders: 1,
    })
    await theirs.release()
    expect((await limiter.acquire('job', { limit: 1, leaseMs: 60_000 })).allowed).toBe(true)
  }, 60_000)

  it('keeps the lease set beside the hash, in the hash tag of the identity, expiring with its last lease', async () => {
    const prefix = 'leases-keys:'
    const b = backend('standalone', prefix)
    const limiter = new FastLimit({ backend: b })
    await limiter.check('user', '10/min')
    const lease = await limiter.acquire('user', { limit: 2, leaseMs: 30_000 })
    const raw = rawClient('standalone')
    try {
      const keys = (await scanKeys(raw, `${prefix}*`)).map((k) => k.toString())
      expect(keys.sort()).toEqual([`${prefix}:fl:{user}`, `${prefix}:\u0000Lfl:{user}`].sort())
      const ttl = await raw.pttl(`${prefix}:\u0000Lfl:{user}`)
      // The lease's 30 s plus the expiry margin (1 s by default).
      expect(ttl).toBeGreaterThan(29_000)
      expect(ttl).toBeLessThanOrEqual(31_000)
      await lease.release()
      // The set emptied: Redis dropped it.
      expect(await raw.exists(`${prefix}:\u0000Lfl:{user}`)).toBe(0)
    } finally {
      await closeClient(raw)
    }
  })

  it('refuses an acquire that reaches Redis past its deadline, and survives SCRIPT FLUSH', async () => {
    const b = backend('standalone', 'leases-late:')
    await expect(
      b.acquire('k', { limit: 1, leaseMs: 1000 }, 'tok-1', { deadline: Date.now() - 1 }),
    ).rejects.toMatchObject({
      code: 'ERR_FASTLIMIT_TIMEOUT',
    })
    const raw = rawClient('standalone')
    try {
      expect(await b.acquire('k', { limit: 1, leaseMs: 1000 }, 'tok-2')).toMatchObject({ acquired: true })
      await raw.script('FLUSH')
      expect(await b.release('k', 'tok-2')).toBe(true)
      expect(
        await b.acquire('k', { limit: 1, leaseMs: 1000 }, 'tok-3', { deadline: Date.now() + 5000 }),
      ).toMatchObject({
        acquired: true,
        holders: 1,
      })
    } finally {
      await closeClient(raw)
    }
  })
})
