import {
  adjustAll,
  type Backend,
  type BackendResult,
  type BucketConfig,
  bucketId,
  type Charge,
  checkAdjustArguments,
  decodeState,
  encodeState,
  step,
  stepAll,
} from '@fastlimit/core'

/** A complete backend on a key-value map with expiry, written against the public protocol only. */
export class MapBackend implements Backend {
  readonly kind = 'map'
  readonly #data = new Map<string, { state: string; expiresAt: number }>()
  readonly #clock: () => number

  /** @param options.clock epoch milliseconds; the conformance suite injects a fake one */
  constructor(options: { clock?: () => number } = {}) {
    this.#clock = options.clock ?? Date.now
  }

  // One entry per (key, bucket). JSON keeps every pair apart, whatever the key holds
  // (braces, NUL, lone surrogates): never build a storage key by plain concatenation.
  #slot(key: string, bucket: BucketConfig): string {
    return JSON.stringify([key, bucketId(bucket)])
  }

  #read(slot: string, now: number): number[] | undefined {
    const entry = this.#data.get(slot)
    if (entry === undefined) return undefined
    if (entry.expiresAt <= now) {
      this.#data.delete(slot)
      return undefined
    }
    return decodeState(entry.state)
  }

  async checkAndIncrement(key: string, bucket: BucketConfig, cost: number): Promise<BackendResult> {
    return (await this.checkAndIncrementAll(key, [bucket], cost))[0] as BackendResult
  }

  async checkAndIncrementAll(
    key: string,
    buckets: readonly BucketConfig[],
    cost: number,
  ): Promise<BackendResult[]> {
    // Read, step and write in one synchronous turn: atomic in JavaScript. A networked store does the
    // same inside one transaction (a row lock, a Lua script, a conditional write).
    const now = Math.floor(this.#clock())
    const slots = buckets.map((bucket) => this.#slot(key, bucket))
    const out = stepAll(
      slots.map((slot) => this.#read(slot, now)),
      now,
      buckets,
      cost,
    )
    out.outputs.forEach((o, i) => {
      // Write when charged, or when the state was moved back to now after the clock stepped back.
      if (out.allowed || o.rebased) {
        this.#data.set(slots[i] as string, { state: encodeState(o.state), expiresAt: now + o.ttlMs })
      }
    })
    // An admitting call reports its clock: a reservation hands it back to adjust.
    return out.allowed ? out.results.map((r) => ({ ...r, atMs: now })) : out.results
  }

  // A reservation's settle, cancel, or a refund: the same read, step (adjustAll) and write.
  async adjust(
    key: string,
    buckets: readonly BucketConfig[],
    delta: number,
    charges: readonly Charge[] | undefined,
  ): Promise<BackendResult[]> {
    checkAdjustArguments('map', buckets, delta, charges)
    const now = Math.floor(this.#clock())
    const slots = buckets.map((bucket) => this.#slot(key, bucket))
    const outs = adjustAll(
      slots.map((slot) => this.#read(slot, now)),
      now,
      buckets,
      delta,
      charges,
    )
    outs.forEach((o, i) => {
      if (o.changed || o.rebased) {
        this.#data.set(slots[i] as string, { state: encodeState(o.state), expiresAt: now + o.ttlMs })
      }
    })
    return outs.map((o) => o.result)
  }

  async peek(key: string, bucket: BucketConfig): Promise<BackendResult> {
    const now = Math.floor(this.#clock())
    return step(this.#read(this.#slot(key, bucket), now), now, bucket, 0).result
  }

  async reset(key: string): Promise<void> {
    for (const slot of [...this.#data.keys()]) {
      if ((JSON.parse(slot) as [string, string])[0] === key) this.#data.delete(slot)
    }
  }

  async clear(): Promise<void> {
    this.#data.clear()
  }
}
