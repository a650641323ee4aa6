// The adapter suite of the `concurrency` option: a real listening server, requests held in their handler,
// and fetch from the test, whose abort destroys the socket mid-request.

import { type Backend, type Decision, FastLimit, MemoryBackend } from '@fastlimit/core'
import { describe, expect, it } from 'vitest'
import type { AdapterAppOptions } from './adapter'

/** A server listening on 127.0.0.1 for {@link concurrencyConformance}. */
export interface ListeningApp {
  /** Its base URL, e.g. `http://127.0.0.1:41234`. */
  readonly url: string
  /** Stops it (closing every connection). */
  close(): Promise<void>
}

/** Options of {@link concurrencyConformance}. */
export interface ConcurrencyConformanceOptions {
  /** The suite's name in the report, e.g. `'@fastlimit/express'`. */
  name: string
  /**
   * Starts a real app listening on 127.0.0.1 that uses `rateLimit(options)` app-wide (the suite's
   * functions translated with `adaptOptions`), answers `GET /slow` with `200` and `ok` once
   * `await hold()` resolves (the suite decides when), and every other `GET` with `200` and `ok` at once.
   */
  listen: (options: AdapterAppOptions, hold: () => Promise<void>) => Promise<ListeningApp>
  /** Per-test timeout in ms. @default 30000 */
  timeoutMs?: number
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Requests held in `/slow`: how many have entered, and the release of all of them. */
function gate() {
  let entered = 0
  let open: () => void = () => undefined
  let opened = new Promise<void>((r) => {
    open = r
  })
  return {
    hold: async (): Promise<void> => {
      entered++
      await opened
    },
    get entered() {
      return entered
    },
    /** Lets every held request answer, and holds the next ones again. */
    release(): void {
      open()
      opened = new Promise<void>((r) => {
        open = r
      })
    },
    async until(n: number): Promise<void> {
      for (let i = 0; entered < n; i++) {
        if (i > 2000) throw new Error(`only ${entered} of ${n} requests reached the handler`)
        await sleep(5)
      }
    },
  }
}

/** Whether a slot of `identity` is free now (a probe lease, released at once). */
async function slotFree(limiter: FastLimit, limit: number, identity = 'k'): Promise<boolean> {
  const lease = await limiter.acquire(identity, { limit })
  await lease.release()
  return lease.allowed
}

/** Waits (polling) until a slot frees; throws after about 10 s. */
async function untilFree(limiter: FastLimit, limit: number): Promise<void> {
  for (let i = 0; !(await slotFree(limiter, limit)); i++) {
    if (i > 2000) throw new Error('the slot was never released')
    await sleep(5)
  }
}

/**
 * The cases every adapter runs for the `concurrency` option, against a real listening server: a
 * request over the limit is refused with 429 and problem details saying it is concurrency; slots are
 * released when responses end and when the client destroys its socket mid-request; a request refused
 * for concurrency is not charged by the rate rules, and one refused by the rate rules takes no slot;
 * shadow mode refuses nothing; a failed store under `'fail-closed'` is an outage (503).
 */
export function concurrencyConformance(options: ConcurrencyConformanceOptions): void {
  const timeout = options.timeoutMs ?? 30_000
  const start = async (appOptions: AdapterAppOptions) => {
    const g = gate()
    const app = await options.listen(appOptions, g.hold)
    const get = (path: string, signal?: AbortSignal) => {
      const p = (async () => {
        const res = await fetch(app.url + path, signal === undefined ? {} : { signal })
        return { status: res.status, headers: res.headers, body: await res.text() }
      })()
      // A request still held when a case fails must not become an unhandled rejection.
      p.catch(() => undefined)
      return p
    }
    return { g, app, get }
  }

  describe(`concurrency option: ${options.name}`, () => {
    it(
      'refuses a request over the limit with 429 and problem details, and frees slots as responses end',
      async () => {
        const limiter = new FastLimit({ backend: new MemoryBackend() })
        const { g, app, get } = await start({ limiter, key: () => 'k', concurrency: 2, rules: '1000/min' })
        try {
          const held = [get('/slow'), get('/slow')]
          await g.until(2)
          const refused = await get('/')
          expect(refused.status).toBe(429)
          expect(refused.headers.get('content-type')).toMatch(/^application\/problem\+json/)
          expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
          expect(refused.headers.get('ratelimit')).toBeNull()
          const body = JSON.parse(refused.body)
          expect(body).toMatchObject({ status: 429, concurrency: { limit: 2, inFlight: 2 } })
          expect(body.detail).toMatch(/in progress/)
          g.release()
          expect((await Promise.all(held)).map((r) => r.status)).toEqual([200, 200])
          await untilFree(limiter, 1)
          // Both slots came back: two requests may be held again.
          expect(await slotFree(limiter, 1)).toBe(true)
          const again = [get('/slow'), get('/slow')]
          await g.until(4)
          expect((await get('/')).status).toBe(429)
          g.release()
          await Promise.all(again)
          const ok = await get('/')
          expect(ok.status).toBe(200)
          expect(ok.headers.get('ratelimit')).not.toBeNull()
        } finally {
          g.release()
          await app.close()
        }
      },
      timeout,
    )

    it(
      'releases the slot of a request whose client destroyed its socket mid-request',
      async () => {
        const limiter = new FastLimit({ backend: new MemoryBackend() })
        const { g, app, get } = await start({ limiter, key: () => 'k', concurrency: 1 })
        try {
          const abort = new AbortController()
          const aborted = get('/slow', abort.signal).catch((err: unknown) => err)
          await g.until(1)
          expect((await get('/')).status).toBe(429)
          abort.abort()
          expect(await aborted).toBeInstanceOf(Error)
          // The handler is still held, but its client is gone: the slot comes back.
          await untilFree(limiter, 1)
          expect(g.entered).toBe(1)
          expect((await get('/')).status).toBe(200)
        } finally {
          g.release()
          await app.close()
        }
      },
      timeout,
    )

    it(
      'charges no rate rule for a concurrency refusal, and takes no slot for a rate refusal',
      async () => {
        const limiter = new FastLimit({ backend: new MemoryBackend() })
        const reasons: string[] = []
        const { g, app, get } = await start({
          limiter,
          key: () => 'k',
          concurrency: { limit: 1, leaseMs: 60_000 },
          rules: '2/min',
          onLimit: (_req, decision: Decision) => reasons.push(decision.reason),
        })
        try {
          const a = get('/slow')
          await g.until(1)
          expect((await get('/')).status).toBe(429)
          g.release()
          expect((await a).status).toBe(200)
          await untilFree(limiter, 1)
          // A and C are the only two charges: B, refused for concurrency, was not charged.
          expect((await get('/')).status).toBe(200)
          const d = await get('/')
          expect(d.status).toBe(429)
          expect(JSON.parse(d.body).concurrency).toBeUndefined()
          expect(reasons).toEqual(['concurrency-limited', 'rate-limited'])
          // D, refused by the rate rules, holds no slot.
          expect(await slotFree(limiter, 1)).toBe(true)
        } finally {
          g.release()
          await app.close()
        }
      },
      timeout,
    )

    it(
      'refuses nothing in shadow mode (onLimit still hears it), and releases every slot',
      async () => {
        const limiter = new FastLimit({ backend: new MemoryBackend() })
        const reasons: string[] = []
        const { g, app, get } = await start({
          limiter,
          key: () => 'k',
          concurrency: 1,
          mode: 'shadow',
          onLimit: (_req, decision: Decision) => reasons.push(decision.reason),
        })
        try {
          const a = get('/slow')
          await g.until(1)
          expect((await get('/')).status).toBe(200)
          expect(reasons).toEqual(['concurrency-limited'])
          g.release()
          await a
          await untilFree(limiter, 1)
        } finally {
          g.release()
          await app.close()
        }
      },
      timeout,
    )

    it(
      "answers 503 when the store fails under 'fail-closed', and lets requests in under 'fail-open'",
      async () => {
        const inner = new MemoryBackend()
        const broken: Backend = {
          checkAndIncrement: (k, b, c) => inner.checkAndIncrement(k, b, c),
          acquire: () => Promise.reject(new Error('connection refused')),
          release: () => Promise.reject(new Error('connection refused')),
        }
        const quiet = () => undefined
        for (const policy of ['fail-closed', 'fail-open'] as const) {
          const limiter = new FastLimit({ backend: broken, onBackendError: policy, onError: quiet })
          const { g, app, get } = await start({ limiter, key: () => 'k', concurrency: 1 })
          try {
            const res = await get('/')
            expect(res.status).toBe(policy === 'fail-closed' ? 503 : 200)
          } finally {
            g.release()
            await app.close()
          }
        }
      },
      timeout,
    )
  })
}
