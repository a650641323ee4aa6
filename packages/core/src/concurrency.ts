// Concurrency (in-flight) limits: the options of FastLimit.acquire, the Lease it returns, lease tokens.

import {
  type AcquireResult,
  type Backend,
  MAX_LEASE_LIMIT,
  type SlotConfig,
  type SyncBackend,
} from './backend'
import { ConfigError, type FastlimitError, show } from './errors'

/** Options of {@link FastLimit.acquire}. */
export interface AcquireOptions {
  /** The most leases held at once per identity (and scope): a whole number from 1 to 10,000. */
  limit: number
  /**
   * How long a lease lives unless released, in milliseconds (1 to 2147483647): a holder that crashes
   * or hangs loses its slot after this long. Take it above the longest time a holder may hold a slot
   * (a request's timeout): a lease that expires while its holder still works lets one more in.
   * @default 60_000
   */
  leaseMs?: number
  /** A key space of its own, as for `check` ({@link CheckOptions.scope}). @default none */
  scope?: string
  /** For observers only, as for `check`: `'shadow'` marks a lease whose refusal is not enforced. @default 'enforce' */
  mode?: 'enforce' | 'shadow'
}

/**
 * Why a lease came out as it did:
 * - `'ok'`: taken; release it when done.
 * - `'concurrency-limited'`: `limit` leases are held; retry after `retryAfterMs` (the earliest expiry,
 *   an upper bound: a holder may release sooner).
 * - `'fail-open'`, `'fail-closed'`: the store failed, timed out, or was kept off by the breaker or
 *   `maxInFlight` (`error` says which): the policy decided, and nothing is held in the store.
 */
export type LeaseReason = 'ok' | 'concurrency-limited' | 'fail-open' | 'fail-closed'

/**
 * The answer of {@link FastLimit.acquire}: whether a slot was taken, and `release()` to give it back.
 *
 * A lease the store granted (`source: 'backend'` or `'fallback'`, `allowed: true`) holds a slot until
 * `release()` or until `expiresMs`, whichever comes first. A lease the error policy decided
 * (`source: 'policy'`) holds nothing: under `'fail-open'` it is allowed and its `release()` does
 * nothing; under `'fail-closed'` it is refused. A refused lease's `release()` does nothing either.
 */
export interface Lease {
  /** Whether the caller may proceed (a slot was taken, or the `'fail-open'` policy admitted). */
  readonly allowed: boolean
  /** Why; see {@link LeaseReason}. */
  readonly reason: LeaseReason
  /** Who decided: the backend, the fallback backend of `onBackendError`, or the policy. */
  readonly source: 'backend' | 'fallback' | 'policy'
  /** The most holders at once. */
  readonly limit: number
  /** How long the lease lives unless released, in milliseconds. */
  readonly leaseMs: number
  /** Live leases after this call, this one included when taken; `undefined` when the policy decided. */
  readonly holders: number | undefined
  /** Slots still free after this call (`limit - holders`, at least 0); `undefined` when the policy decided. */
  readonly remaining: number | undefined
  /**
   * 0 when allowed; when refused, milliseconds until the earliest live lease expires (a slot frees then
   * at the latest); 1000 under `'fail-closed'`.
   */
  readonly retryAfterMs: number
  /** When taken: epoch milliseconds, on the store's clock, at which the lease expires unless released. */
  readonly expiresMs: number | undefined
  /** The store failure behind a policy or fallback decision. */
  readonly error?: FastlimitError
  /** Whether `release()` was called. */
  readonly released: boolean
  /**
   * Gives the slot back. Idempotent: every call after the first returns the first call's promise. A
   * release after the lease expired changes nothing (each lease has a token of its own, so it never
   * frees another holder's slot). Breaker, timeout and `onBackendError` as for `check`: when the store
   * fails, the failure goes to `onError` and `'error'` listeners and the promise resolves (rejects
   * under `'throw'`); the slot then frees when the lease expires.
   */
  release(): Promise<void>
}

/** The default {@link AcquireOptions.leaseMs}. */
export const DEFAULT_LEASE_MS = 60_000
const NAMES = ['limit', 'leaseMs', 'scope', 'mode']

/** Validates the options of `acquire`. @throws ConfigError */
export function slotConfig(options: unknown): SlotConfig {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigError(
      `[fastlimit] [core] acquire() takes options { limit, leaseMs?, scope? }, got ${show(options)}. For example { limit: 5, leaseMs: 30000 }.`,
    )
  }
  for (const key in options) {
    if (key !== 'limit' && key !== 'leaseMs' && key !== 'scope' && key !== 'mode') {
      throw new ConfigError(
        `[fastlimit] [core] Unknown acquire() option ${show(key)}: it takes ${NAMES.join(', ')}.`,
      )
    }
  }
  const { limit, leaseMs = DEFAULT_LEASE_MS } = options as AcquireOptions
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LEASE_LIMIT) {
    throw new ConfigError(
      `[fastlimit] [core] acquire() limit must be a whole number from 1 to ${MAX_LEASE_LIMIT}, got ${show(limit)}. For example { limit: 5 }.`,
    )
  }
  if (!Number.isSafeInteger(leaseMs) || leaseMs < 1 || leaseMs > 2 ** 31 - 1) {
    throw new ConfigError(
      `[fastlimit] [core] acquire() leaseMs must be a whole number of milliseconds from 1 to 2147483647, got ${show(leaseMs)}. For example { leaseMs: 30000 }.`,
    )
  }
  return { limit, leaseMs }
}

/** Whether a backend can hold leases. */
export function canLease(backend: Backend): boolean {
  const b = backend as Partial<SyncBackend>
  return (
    (typeof b.acquire === 'function' || typeof b.acquireSync === 'function') &&
    (typeof b.release === 'function' || typeof b.releaseSync === 'function')
  )
}

/** Whether a value is an {@link AcquireResult}. */
export function isAcquireResult(r: unknown): r is AcquireResult {
  if (typeof r !== 'object' || r === null) return false
  const x = r as Record<string, unknown>
  return (
    typeof x.acquired === 'boolean' &&
    typeof x.holders === 'number' &&
    typeof x.limit === 'number' &&
    typeof x.retryAfterMs === 'number' &&
    typeof x.expiresMs === 'number'
  )
}

let tokenPrefix: string | undefined
let tokenCounter = 0

/**
 * A lease token unique across processes: 80 random bits per process (made at the first lease, never
 * at import) and a counter.
 */
export function newToken(): string {
  if (tokenPrefix === undefined) {
    const bytes = new Uint8Array(10)
    const crypto = (globalThis as { crypto?: { getRandomValues?(a: Uint8Array): Uint8Array } }).crypto
    if (typeof crypto?.getRandomValues === 'function') crypto.getRandomValues(bytes)
    else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256)
    tokenPrefix = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
  }
  tokenCounter++
  return `${tokenPrefix}.${tokenCounter.toString(36)}`
}

/** The one implementation of {@link Lease}. */
export class LeaseImpl implements Lease {
  readonly allowed: boolean
  readonly reason: LeaseReason
  readonly source: 'backend' | 'fallback' | 'policy'
  readonly limit: number
  readonly leaseMs: number
  readonly holders: number | undefined
  readonly remaining: number | undefined
  readonly retryAfterMs: number
  readonly expiresMs: number | undefined
  declare readonly error?: FastlimitError
  readonly #release: (() => Promise<void>) | undefined
  #released: Promise<void> | undefined

  constructor(
    slots: SlotConfig,
    source: 'backend' | 'fallback' | 'policy',
    result: AcquireResult | { readonly allowed: boolean; readonly retryAfterMs: number },
    error: FastlimitError | undefined,
    release: (() => Promise<void>) | undefined,
  ) {
    this.limit = slots.limit
    this.leaseMs = slots.leaseMs
    this.source = source
    if ('acquired' in result) {
      this.allowed = result.acquired
      this.reason = result.acquired ? 'ok' : 'concurrency-limited'
      this.holders = result.holders
      this.remaining = Math.max(0, slots.limit - result.holders)
      this.retryAfterMs = result.acquired ? 0 : Math.max(0, result.retryAfterMs)
      this.expiresMs = result.acquired ? result.expiresMs : undefined
    } else {
      this.allowed = result.allowed
      this.reason = result.allowed ? 'fail-open' : 'fail-closed'
      this.holders = undefined
      this.remaining = undefined
      this.retryAfterMs = result.retryAfterMs
      this.expiresMs = undefined
    }
    if (error !== undefined) this.error = error
    // Only a lease the store granted has anything to give back.
    this.#release = this.allowed && source !== 'policy' ? release : undefined
  }

  get released(): boolean {
    return this.#released !== undefined
  }

  release(): Promise<void> {
    if (this.#released === undefined) {
      const release = this.#release
      this.#released = release === undefined ? Promise.resolve() : release()
    }
    return this.#released
  }

  toJSON(): unknown {
    const { error, ...rest } = {
      allowed: this.allowed,
      reason: this.reason,
      source: this.source,
      limit: this.limit,
      leaseMs: this.leaseMs,
      holders: this.holders,
      remaining: this.remaining,
      retryAfterMs: this.retryAfterMs,
      expiresMs: this.expiresMs,
      released: this.released,
      error: this.error,
    }
    return error === undefined ? rest : { ...rest, error: { code: error.code, message: error.message } }
  }
}
