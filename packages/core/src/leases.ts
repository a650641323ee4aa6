// Concurrency leases in memory: per key, a short list of live leases sorted by expiry (bounded by the limit).

import { type AcquireResult, MAX_LEASE_LIMIT, type SlotConfig } from './backend'
import { FastlimitError, show } from './errors'

/** The most characters of a lease token. */
export const MAX_TOKEN_LENGTH = 128

/** 1 to 128 printable ASCII characters (a loop: cheaper than a regular expression for short tokens). */
function isToken(token: string): boolean {
  const n = token.length
  if (n < 1 || n > MAX_TOKEN_LENGTH) return false
  for (let i = 0; i < n; i++) {
    const c = token.charCodeAt(i)
    if (c < 0x21 || c > 0x7e) return false
  }
  return true
}

/**
 * Validates the arguments of `Backend.acquire` / `Backend.release`, for a backend to call first:
 * `slots.limit` a whole number from 1 to {@link MAX_LEASE_LIMIT}, `slots.leaseMs` from 1 to 2^31 - 1,
 * `token` 1 to 128 printable ASCII characters. Pass `slots` undefined for `release`.
 * @param tag the backend's name in the message (`'memory'`, `'sqlite'`)
 * @throws FastlimitError `ERR_FASTLIMIT_ARGUMENT`
 */
export function checkLeaseArguments(tag: string, slots: SlotConfig | undefined, token: unknown): void {
  const bad = (what: string) =>
    new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [${tag}] ${slots ? 'acquire' : 'release'}: ${what}.`,
    )
  if (typeof token !== 'string' || !isToken(token)) {
    throw bad(`token must be 1 to ${MAX_TOKEN_LENGTH} printable ASCII characters, got ${show(token)}`)
  }
  if (slots === undefined) return
  if (typeof slots !== 'object' || slots === null)
    throw bad(`slots must be { limit, leaseMs }, got ${show(slots)}`)
  const { limit, leaseMs } = slots
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LEASE_LIMIT) {
    throw bad(`limit must be a whole number from 1 to ${MAX_LEASE_LIMIT}, got ${show(limit)}`)
  }
  if (!Number.isSafeInteger(leaseMs) || leaseMs < 1 || leaseMs > 2 ** 31 - 1) {
    throw bad(`leaseMs must be a whole number of milliseconds from 1 to 2147483647, got ${show(leaseMs)}`)
  }
}

/** One key's live leases, sorted by expiry (earliest first); parallel arrays. */
interface Holders {
  tokens: string[]
  expires: number[]
}

/**
 * The lease state of {@link MemoryBackend}: at most `maxKeys` keys, each with at most its limit of
 * leases. A key with no live lease is dropped when touched or swept. Internal.
 */
export class LeaseTable {
  private readonly keys = new Map<string, Holders>()
  private readonly maxKeys: number
  /** The clock reading of the last full sweep made because the table was full (one per millisecond at most). */
  private lastFullSweep = Number.NEGATIVE_INFINITY

  constructor(maxKeys: number) {
    this.maxKeys = maxKeys
  }

  /** Keys holding leases (live or not yet swept). */
  get size(): number {
    return this.keys.size
  }

  acquire(key: string, slots: SlotConfig, token: string, now: number): AcquireResult {
    let h = this.keys.get(key)
    if (h !== undefined) drop(h, now)
    const limit = slots.limit
    const n = h === undefined ? 0 : h.tokens.length
    if (n >= limit) {
      const first = (h as Holders).expires[0] as number
      return { acquired: false, limit, holders: n, expiresMs: 0, retryAfterMs: first - now }
    }
    if (h === undefined) {
      if (this.keys.size >= this.maxKeys) this.makeRoom(now)
      h = { tokens: [], expires: [] }
      this.keys.set(key, h)
    }
    const at = now + slots.leaseMs
    // Insert in order (usually at the end: one leaseMs per key is the common case).
    let i = h.expires.length
    while (i > 0 && (h.expires[i - 1] as number) > at) i--
    if (i === h.expires.length) {
      h.tokens.push(token)
      h.expires.push(at)
    } else {
      h.tokens.splice(i, 0, token)
      h.expires.splice(i, 0, at)
    }
    return { acquired: true, limit, holders: n + 1, expiresMs: at, retryAfterMs: 0 }
  }

  release(key: string, token: string, now: number): boolean {
    const h = this.keys.get(key)
    if (h === undefined) return false
    const i = h.tokens.indexOf(token)
    let live = false
    if (i !== -1) {
      live = (h.expires[i] as number) > now
      h.tokens.splice(i, 1)
      h.expires.splice(i, 1)
    }
    // An emptied key stays (reused by its next acquire) until the sweep, or a full table, drops it.
    drop(h, now)
    return live
  }

  /** Drops every expired lease, and keys left empty. @returns how many keys were dropped */
  sweep(now: number): number {
    let dropped = 0
    for (const [key, h] of this.keys) {
      drop(h, now)
      if (h.tokens.length === 0) {
        this.keys.delete(key)
        dropped++
      }
    }
    return dropped
  }

  clear(): void {
    this.keys.clear()
  }

  /**
   * A new key arrives at a full table: sweep the expired ones; if none could go, the store is full
   * (dropping a key with live leases would admit over its limit).
   */
  private makeRoom(now: number): void {
    if (now !== this.lastFullSweep) {
      this.lastFullSweep = now
      this.sweep(now)
    }
    if (this.keys.size >= this.maxKeys) {
      throw new FastlimitError(
        'ERR_FASTLIMIT_STORE_FULL',
        `[fastlimit] [memory] ${this.keys.size} keys hold live leases (maxKeys): no new key can take one until a lease ` +
          'ends. FastLimit applies its onBackendError policy meanwhile; raise maxKeys, or shorten leaseMs.',
      )
    }
  }
}

/** Drops the expired leases at the front of a key's list. */
function drop(h: Holders, now: number): void {
  const e = h.expires
  let i = 0
  while (i < e.length && (e[i] as number) <= now) i++
  if (i > 0) {
    e.splice(0, i)
    h.tokens.splice(0, i)
  }
}
