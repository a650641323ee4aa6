// A backend written the way a user would, against the public protocol only: an "external" async
// key-value store that can only get and set strings, made atomic by a per-key lock. It proves the
// protocol and the conformance suite are enough to write a correct backend from outside.
import {
  type Backend,
  type BackendResult,
  type BucketConfig,
  bucketId,
  decodeState,
  encodeState,
  step,
  stepAll,
} from '@fastlimit/core'
import { backendConformance } from '@fastlimit/core/testing'

/** Stands in for a remote store: every operation takes a trip through the event loop. */
class AsyncKV {
  readonly data = new Map<string, { value: string; expiresAt: number }>()
  constructor(private readonly now: () => number) {}
  async get(key: string): Promise<string | undefined> {
    await new Promise((r) => setImmediate(r))
    const e = this.data.get(key)
    return e && e.expiresAt > this.now() ? e.value : undefined
  }
  async set(key: string, value: string, ttlMs: number): Promise<void> {
    await new Promise((r) => setImmediate(r))
    this.data.set(key, { value, expiresAt: this.now() + ttlMs })
  }
  async deletePrefix(prefix: string): Promise<void> {
    for (const key of [...this.data.keys()]) if (key.startsWith(prefix)) this.data.delete(key)
  }
}

class KVBackend implements Backend {
  readonly #locks = new Map<string, Promise<unknown>>()
  constructor(
    readonly kv: AsyncKV,
    readonly now: () => number,
  ) {}

  /** Runs `fn` after every earlier call on the same key: a transaction, for a store without one. */
  #locked<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.#locks.get(key) ?? Promise.resolve()
    const run = before.then(fn, fn)
    const tail = run.catch(() => undefined)
    this.#locks.set(key, tail)
    tail.then(() => {
      if (this.#locks.get(key) === tail) this.#locks.delete(key)
    })
    return run
  }

  // One storage key per bucket; JSON-encoding the key makes it injective whatever characters it holds.
  #slot(key: string, bucket: BucketConfig): string {
    return `${JSON.stringify(key)}/${bucketId(bucket)}`
  }

  checkAndIncrement(key: string, bucket: BucketConfig, cost: number): Promise<BackendResult> {
    return this.checkAndIncrementAll(key, [bucket], cost).then((r) => r[0] as BackendResult)
  }

  checkAndIncrementAll(
    key: string,
    buckets: readonly BucketConfig[],
    cost: number,
  ): Promise<BackendResult[]> {
    return this.#locked(key, async () => {
      const now = this.now()
      const states = []
      for (const bucket of buckets) states.push(decodeState(await this.kv.get(this.#slot(key, bucket))))
      const all = stepAll(states, now, buckets, cost)
      for (const [i, o] of all.outputs.entries()) {
        // Charged, or moved back to now after the clock stepped back.
        if (all.allowed || o.rebased) {
          await this.kv.set(this.#slot(key, buckets[i] as BucketConfig), encodeState(o.state), o.ttlMs)
        }
      }
      return all.results
    })
  }

  async peek(key: string, bucket: BucketConfig): Promise<BackendResult> {
    return step(decodeState(await this.kv.get(this.#slot(key, bucket))), this.now(), bucket, 0).result
  }

  reset(key: string): Promise<void> {
    return this.#locked(key, () => this.kv.deletePrefix(`${JSON.stringify(key)}/`))
  }

  async clear(): Promise<void> {
    this.kv.data.clear()
  }

  async close(): Promise<void> {}
}

backendConformance({
  name: 'a user-written key-value backend',
  make: (clock) => new KVBackend(new AsyncKV(clock), clock),
  countKeys: async (backend) => {
    let live = 0
    for (const e of backend.kv.data.values()) if (e.expiresAt > backend.now()) live++
    return live
  },
  concurrency: 300,
})

// The seed's protocol is one method: a backend with only checkAndIncrement passes the cases it can.
backendConformance({
  name: 'a backend with only checkAndIncrement',
  make: (clock): Backend => {
    const full = new KVBackend(new AsyncKV(clock), clock)
    return { checkAndIncrement: (key, bucket, cost) => full.checkAndIncrement(key, bucket, cost) }
  },
  concurrency: 300,
})
