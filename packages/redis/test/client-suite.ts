// The client matrix: RedisBackend on one client library (node-redis v6 or v5, iovalkey, Valkey GLIDE), on
// the global setup's standalone server and Cluster: core's conformance suite, clear() on every primary, key
// prefixes, hash tags, server time, NOSCRIPT after SCRIPT FLUSH, ownership; and on a server of its own,
// SIGSTOPped: the limiter applies its policy within its timeout, and nothing is charged late. (The Lua
// differential test runs on the same clients in differential.test.ts.)
import { type BucketConfig, FastLimit, FastlimitError, parseRule } from '@fastlimit/core'
import { backendConformance } from '@fastlimit/core/testing'
import type { Cluster, Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RedisBackend, type RedisBackendOptions } from '../src'
import { type MatrixClient, type MatrixKind, matrixTarget, openClient } from './clients'
import { closeClient, rawClient, scanKeys } from './helpers'
import { type StandaloneSetup, startStandalone } from './servers'

const bucket: BucketConfig = parseRule('5/h')
const margin = 4000

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Everything below, for one client library. */
export function clientMatrix(kind: MatrixKind): void {
  for (const topology of ['standalone', 'cluster'] as const) {
    describe(`${kind} (${topology})`, () => {
      let opened: Promise<MatrixClient> | undefined
      const client = () => {
        opened ??= openClient(kind, matrixTarget(topology))
        return opened
      }
      let raw: Redis | Cluster
      beforeAll(() => {
        raw = rawClient(topology)
      })
      afterAll(async () => {
        await closeClient(raw)
        if (opened !== undefined) await (await opened).close()
      })
      const backend = async (options: Omit<RedisBackendOptions, 'url' | 'client'>) =>
        new RedisBackend({ ...options, client: (await client()).client })

      const prefix = `matrix-${kind}-${topology}:`
      backendConformance({
        name: `RedisBackend on ${kind} (${topology})`,
        make: (clock) =>
          backend({
            keyPrefix: prefix,
            timeSource: 'client',
            clock,
            maxClockSkewMs: margin / 2,
            expiryMarginMs: margin,
          }),
        // The expiry test waits 9 s of real time for Redis's own PEXPIRE, the same whichever client sent the
        // script: on node-redis 6 (and on ioredis in conformance.*.test.ts) only, to keep the suite short.
        ...(kind === 'node-redis'
          ? {
              countKeys: async () => (await scanKeys(raw, `${prefix}*`)).length,
              expiryWaitMs: 2 * margin + 1000,
            }
          : {}),
        deadlines: true,
      })

      it('uses the server time, and never closes the client', async () => {
        const b = await backend({ keyPrefix: `${prefix}time` })
        try {
          const before = Date.now()
          const first = await b.checkAndIncrement('k', bucket, 1)
          expect(first).toMatchObject({ allowed: true, remaining: 4 })
          // GCRA: empty again one emission interval (720 s) after now, on the server's clock.
          expect(first.resetMs).toBeGreaterThanOrEqual(before + 720_000 - 1000)
          expect(first.resetMs).toBeLessThanOrEqual(Date.now() + 720_000 + 1000)
          expect(
            (await b.checkAndIncrementAll('k', [bucket, parseRule('2/min')], 1)).map((r) => r.remaining),
          ).toEqual([3, 1])
          await b.reset('k')
          expect((await b.peek('k', bucket)).remaining).toBe(5)
        } finally {
          await b.clear()
          await b.close()
        }
        // Closed backend, open client: another backend still works on it.
        const again = await backend({ keyPrefix: `${prefix}time` })
        expect((await again.peek('k', bucket)).remaining).toBe(5)
        await again.close()
        await expect(again.peek('k', bucket)).rejects.toMatchObject({ code: 'ERR_FASTLIMIT_CLOSED' })
      })

      it('clear() deletes its keys on every primary and only its keys; FastLimit keys keep one slot', async () => {
        const mine = await backend({ keyPrefix: `${prefix}clear` })
        const other = await backend({ keyPrefix: `${prefix}keep` })
        const limiter = new FastLimit({ backend: mine, onBackendError: 'throw' })
        try {
          const keys = Array.from({ length: 60 }, (_, i) => `key-${i}`)
          await Promise.all(keys.map((k) => mine.checkAndIncrement(k, bucket, 1)))
          await other.checkAndIncrement('key-0', bucket, 1)
          // Two rules on one identity: FastLimit's key holds the identity as hash tag, one slot.
          const decision = await limiter.check('user:1', ['3/min', '10/h'])
          expect(decision.allowed).toBe(true)
          const found = await scanKeys(raw, `${prefix}clear::*`)
          expect(found.length).toBe(61)
          if (topology === 'cluster') {
            const masters = (raw as Cluster).nodes('master')
            const per = await Promise.all(
              masters.map(async (node) => (await node.keys(`${prefix}clear::*`)).length),
            )
            expect(per.filter((n) => n > 0).length).toBeGreaterThan(1)
          }
          await mine.clear()
          expect(await scanKeys(raw, `${prefix}clear::*`)).toEqual([])
          expect((await other.peek('key-0', bucket)).remaining).toBe(4)
        } finally {
          await limiter.close()
          await other.clear()
          await other.close()
          await mine.close()
        }
      })

      it('reconnect() (the breaker opening) leaves the client serving, and never closes it', async () => {
        const b = await backend({ keyPrefix: `${prefix}reconnect` })
        try {
          expect((await b.checkAndIncrement('k', bucket, 1)).remaining).toBe(4)
          b.reconnect(new Error('the breaker opened'))
          let remaining: number | undefined
          for (let i = 0; i < 200 && remaining === undefined; i++) {
            try {
              remaining = (await b.checkAndIncrement('k', bucket, 1)).remaining
            } catch (err) {
              if (!(err instanceof FastlimitError)) throw err
              await delay(25)
            }
          }
          expect(remaining).toBe(3)
          // Every primary serves again (clear() visits each one).
          await b.clear()
          expect((await b.peek('k', bucket)).remaining).toBe(5)
        } finally {
          await b.close()
        }
      })

      it('sends the script again after SCRIPT FLUSH (NOSCRIPT), counting on', async () => {
        const b = await backend({ keyPrefix: `${prefix}flush` })
        try {
          const keys = ['a', 'b', 'c', 'd', 'e', 'f']
          for (const k of keys) expect((await b.checkAndIncrement(k, bucket, 1)).remaining).toBe(4)
          const nodes = topology === 'cluster' ? (raw as Cluster).nodes('master') : [raw as Redis]
          await Promise.all(nodes.map((node) => node.script('FLUSH')))
          const after = await Promise.all(keys.map((k) => b.checkAndIncrement(k, bucket, 1)))
          expect(after.map((r) => r.remaining)).toEqual(keys.map(() => 3))
          for (const k of keys) expect((await b.checkAndIncrement(k, bucket, 1)).remaining).toBe(2)
        } finally {
          await b.clear()
          await b.close()
        }
      })
    })
  }

  describe(`${kind} on a server that stops (SIGSTOP)`, () => {
    let server: StandaloneSetup
    let opened: MatrixClient
    beforeAll(async () => {
      server = await startStandalone()
      opened = await openClient(kind, { topology: 'standalone', port: server.port })
    })
    afterAll(async () => {
      try {
        process.kill(server.server.pid, 'SIGCONT')
      } catch {
        // Gone already.
      }
      await opened?.close()
      await server?.stop()
    })

    it('the limiter applies its policy within its timeout; nothing is charged late; then it serves again', async () => {
      const backend = new RedisBackend({ client: opened.client, keyPrefix: 'stopped' })
      const limiter = new FastLimit({
        backend,
        timeoutMs: 300,
        onBackendError: 'fail-closed',
        breaker: { failures: 3, openMs: 200 },
      })
      try {
        expect((await limiter.check('warm', '5/h')).source).toBe('backend')
        process.kill(server.server.pid, 'SIGSTOP')
        const decisions = []
        for (let i = 0; i < 5; i++) decisions.push(await limiter.check('k', '5/h'))
        // Every decision is the policy's (fail-closed): the calls timed out, then the breaker opened.
        expect(decisions.map((d) => `${d.source} ${d.allowed}`)).toEqual(decisions.map(() => 'policy false'))
        // A call with a deadline sent meanwhile: it reaches the server only once it wakes, past its deadline.
        const late = backend.checkAndIncrement('k', bucket, 1, { deadline: Date.now() + 100 }).then(
          () => 'answered',
          (err: FastlimitError) => err.code,
        )
        await delay(300)
        process.kill(server.server.pid, 'SIGCONT')
        // Refused: past its deadline (ERR_FASTLIMIT_TIMEOUT), or dropped by reconnect()/GLIDE's requestTimeout.
        expect(['ERR_FASTLIMIT_TIMEOUT', 'ERR_FASTLIMIT_BACKEND']).toContain(await late)
        // Serves again, and the calls made while it was stopped charged nothing.
        let remaining: number | undefined
        for (let i = 0; i < 200 && remaining === undefined; i++) {
          try {
            remaining = (await backend.peek('k', bucket)).remaining
          } catch {
            await delay(50)
          }
        }
        expect(remaining).toBe(5)
      } finally {
        process.kill(server.server.pid, 'SIGCONT')
        await limiter.close()
        await backend.clear().catch(() => undefined)
        await backend.close()
      }
    })

    it('reconnect() while the server is stopped: calls in flight settle, none charges, the client still works', async () => {
      const backend = new RedisBackend({ client: opened.client, keyPrefix: 'dropped' })
      try {
        await backend.peek('warm', bucket)
        process.kill(server.server.pid, 'SIGSTOP')
        // As FastLimit sends them (timeoutMs): a call that reaches the server late charges nothing.
        const deadline = Date.now() + 150
        const settled: string[] = []
        const calls = Array.from({ length: 20 }, (_, i) =>
          backend.checkAndIncrement(`k${i % 5}`, bucket, 1, { deadline }).then(
            () => 'answered',
            (err: unknown) => {
              const code = err instanceof FastlimitError ? err.code : String(err)
              settled.push(code)
              return code
            },
          ),
        )
        await delay(200)
        backend.reconnect(new Error('the breaker opened'))
        if (kind !== 'glide') {
          // Dropped at once, while the server is still stopped (GLIDE has no connection to drop: its
          // requestTimeout fails them).
          await delay(100)
          expect(settled).toEqual(calls.map(() => 'ERR_FASTLIMIT_BACKEND'))
        }
        process.kill(server.server.pid, 'SIGCONT')
        const outcomes = new Set(await Promise.all(calls))
        expect(outcomes.has('answered')).toBe(false)
        let ok = false
        for (let i = 0; i < 200 && !ok; i++) {
          try {
            for (let k = 0; k < 5; k++) expect((await backend.peek(`k${k}`, bucket)).remaining).toBe(5)
            ok = true
          } catch (err) {
            if (!(err instanceof FastlimitError)) throw err
            await delay(50)
          }
        }
        expect(ok).toBe(true)
        expect((await backend.checkAndIncrement('after', bucket, 1)).remaining).toBe(4)
      } finally {
        process.kill(server.server.pid, 'SIGCONT')
        await backend.clear().catch(() => undefined)
        await backend.close()
      }
    })
  })
}
