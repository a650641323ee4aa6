// The local tier: a deny cache and token leases in front of any backend, with a stated over-admission bound.
import { drain, charge as meterCharge } from './algorithms/meter'
import type { Backend, BackendResult, BucketConfig, CallOptions, Charge, SyncBackend } from './backend'
import { bucketId, isSyncBackend } from './backend'
import { ConfigError, show } from './errors'

/**
 * Options of {@link localTier}. Every field is optional; with `leases: false` and `denyCache: false`
 * the tier changes nothing (every call goes to the store as it is).
 */
export interface LocalTierOptions {
  /**
   * The clock, in epoch milliseconds. The tier measures only durations with it (how long a denial
   * holds, how long a lease lives), so it need not agree with the store's clock.
   * @default Date.now
   */
  clock?: () => number
  /**
   * Keep the store's denials and answer the same question locally, with no store call, while the
   * store's answer provably still holds (see {@link localTier}). Exact: it denies only what the store
   * would deny, with the fields the store would report, unless another process refunds or resets the key.
   * @default true
   */
  denyCache?: boolean
  /**
   * Take batches of units from the store on a hot key and admit from them locally. Needs a backend
   * with `adjust` (to give unused units back): without it, leases are off and only the deny cache works.
   * @default true
   */
  leases?: boolean
  /**
   * The most (key, rule) pairs the tier remembers in each of its tables (denials, leases, rates);
   * the oldest entry goes first beyond that.
   * @default 10000
   */
  maxKeys?: number
  /**
   * A key is hot, and gets leases, once this process calls it at least this many times per second
   * (measured over the last quarter of a second or more).
   * @default 50
   */
  hotRate?: number
  /**
   * How long a lease lives, in milliseconds. A lease of a window algorithm also ends with the window
   * that counted it. Unused units go back to the store when it ends (at the next call that sees it ended,
   * or at `flush()` / `close()`: the tier starts no timer).
   * @default 1000
   */
  leaseMs?: number
  /**
   * The most units one lease takes. A lease takes what the key used in `leaseMs` at its measured rate,
   * bounded by this and by `maxLeaseShare`.
   * @default 100
   */
  maxLease?: number
  /**
   * The most of a rule's capacity (`limit`, or `burst`) one lease takes, as a fraction (at least one unit).
   * @default 0.05
   */
  maxLeaseShare?: number
}

/** What a {@link LocalTierBackend} did since it was built: the figures the bound and the bench are about. */
export interface LocalTierStats {
  /** Calls made to the inner backend (checks, leases, refunds, peeks, resets, adjustments). */
  storeCalls: number
  /** Checks admitted from a lease, without a store call. */
  localAdmits: number
  /** Checks denied from the deny cache, without a store call. */
  localDenials: number
  /** Leases taken (a check of `size` units that the store admitted). */
  leases: number
  /** Lease requests the store denied. */
  leaseDenials: number
  /** Units leased in total. */
  leasedUnits: number
  /** Units given back to the store when leases ended. */
  refundedUnits: number
  /** Refunds that failed (their units stay charged: the tier errs on the side of the limit). */
  refundErrors: number
  /** Units held now in live leases (charged at the store, not admitted yet). */
  heldUnits: number
}

/**
 * A backend with a local tier in front: what {@link localTier} returns. It is a {@link SyncBackend}
 * (local decisions are made in the same turn, even in front of Redis) that forwards every other member
 * of the protocol the inner backend has.
 */
export interface LocalTierBackend extends SyncBackend {
  /** The backend behind the tier. */
  readonly inner: Backend
  /** Whether leases are on (the option, and the inner backend has `adjust`). */
  readonly leasesEnabled: boolean
  /** A copy of the tier's counters. */
  stats(): LocalTierStats
  /** Ends every lease now and gives its unused units back; resolves when the refunds are done. */
  flush(): Promise<void>
  /** `flush()`, then closes the inner backend. Idempotent. */
  close(): Promise<void>
}

/** A denial the store gave, kept to answer the same question locally. */
interface Denial {
  readonly key: string
  readonly cost: number
  readonly result: BackendResult
  /** This process's clock right before the store call: the store decided at or after it. */
  readonly t0: number
}

/** Units taken from the store in one call, admitted locally until the lease ends. */
interface Lease {
  readonly key: string
  readonly bucket: BucketConfig
  units: number
  readonly charge: Charge
  readonly start: number
  readonly expires: number
  readonly limit: number
  readonly storeRemaining: number
  readonly resetMs: number
  readonly atMs: number | undefined
  /** How many units a lease of the key takes (this one, or with the one it follows, at most). */
  readonly size: number
  /** The lease taken ahead, before this one ran out (its units and this one's add up to at most `size`). */
  next: Lease | undefined
}

/** A key's call rate in this process, and when it may try a lease again after one was denied. */
interface Rate {
  since: number
  calls: number
  perSecond: number
  noLeaseUntil: number
  /** When the store last denied a call on the key (this process's clock). */
  deniedAt: number
}

const RATE_PERIOD_MS = 250
/** The shortest span a rate is measured over (a burst within one millisecond is not 1,000x the rate). */
const MIN_SPAN_MS = 10
const SEP = '\u0000'

const METERS = new Set(['gcra', 'token-bucket', 'leaky-bucket'])

function denial(limit: number, remaining: number, resetMs: number, retryAfterMs: number): BackendResult {
  return { allowed: false, limit, remaining, resetMs, retryAfterMs }
}

/**
 * What the store would answer now for `cost`, from a denial it gave `e` ms ago, if the key has not
 * changed since (a denied call charges nothing): `undefined` unless every field is known exactly.
 *
 * - Every algorithm: the same cost, denied with `remaining === cost - 1`, stays denied with the same
 *   `remaining` and `resetMs` until its `retryAfterMs` has passed (the bucket only empties as time
 *   passes, and while it cannot take `cost` it holds at most `cost - 1`).
 * - `'fixed-window'`: the window's count is fixed until its end, so any cost above `remaining` is
 *   denied until then.
 * - The meters: the level right after the denial lies in an interval one millisecond's drain wide
 *   (from `retryAfterMs` and `remaining`); both ends, drained by `e`, must give the same answer.
 * - An admission that carries the store's clock (`atMs`), for `'fixed-window'` and the meters: a
 *   cost above its `remaining` is denied as above (the level from `resetMs - atMs` and `remaining`;
 *   the window's count until its end).
 */
export function cachedDenial(
  d: { readonly cost: number; readonly result: BackendResult; readonly t0: number },
  bucket: BucketConfig,
  cost: number,
  now: number,
): BackendResult | undefined {
  const r = d.result
  const e = now - d.t0
  if (e < 0) return undefined
  const L = bucket.limit
  const W = bucket.windowMs
  const B = bucket.burst ?? L
  const cap = B * W
  let lo: number
  let hi: number
  if (r.allowed) {
    // An admission, with the store's clock (atMs): resetMs - atMs is a duration on the store's clock.
    if (r.atMs === undefined || cost <= r.remaining) return undefined
    const k = r.resetMs - r.atMs
    if (bucket.algorithm === 'fixed-window') {
      // The window's count stays until its end, k ms after the admission.
      return e < k && cost <= L ? denial(r.limit, r.remaining, r.resetMs, k - e) : undefined
    }
    if (!METERS.has(bucket.algorithm)) return undefined
    // resetMs = atMs + ceil(level / L).
    lo = (k - 1) * L + 1
    hi = k * L
  } else {
    const R = r.retryAfterMs
    if (e >= R) return undefined
    if (cost === d.cost && r.remaining === cost - 1) return denial(r.limit, r.remaining, r.resetMs, R - e)
    if (bucket.algorithm === 'fixed-window') {
      if (cost > r.remaining && cost <= L) return denial(r.limit, r.remaining, r.resetMs, R - e)
      return undefined
    }
    if (!METERS.has(bucket.algorithm)) return undefined
    // retryAfterMs = ceil((level + c W - cap) / L); remaining = floor((cap - level) / W) (0 above cap).
    lo = cap - d.cost * W + (R - 1) * L + 1
    hi = cap - d.cost * W + R * L
  }
  const fromRemaining = cap - (r.remaining + 1) * W + 1
  if (fromRemaining > lo) lo = fromRemaining
  if (r.remaining > 0 && cap - r.remaining * W < hi) hi = cap - r.remaining * W
  if (lo > hi || lo <= 0) return undefined
  const a = drain(lo, e, L)
  const b = drain(hi, e, L)
  if (a <= 0) return undefined
  const x = meterCharge(a, now, bucket, cost)
  const y = meterCharge(b, now, bucket, cost)
  if (x.allowed || y.allowed || x.remaining !== y.remaining || x.retryAfterMs !== y.retryAfterMs)
    return undefined
  return denial(r.limit, x.remaining, r.resetMs, x.retryAfterMs)
}

/** How long a kept answer may serve: a denial until its retry time, an admission until the bucket is full again. */
function keptFor(r: BackendResult): number {
  return r.allowed ? (r.atMs === undefined ? 0 : r.resetMs - r.atMs) : r.retryAfterMs
}

/** The most a rule admits at once. */
function capacity(bucket: BucketConfig): number {
  return METERS.has(bucket.algorithm) ? (bucket.burst ?? bucket.limit) : bucket.limit
}

/** Checks a result's shape enough to keep it. */
function usable(r: unknown): r is BackendResult {
  if (typeof r !== 'object' || r === null) return false
  const x = r as BackendResult
  return (
    typeof x.allowed === 'boolean' &&
    Number.isSafeInteger(x.remaining) &&
    Number.isSafeInteger(x.limit) &&
    Number.isSafeInteger(x.resetMs) &&
    typeof x.retryAfterMs === 'number'
  )
}

function positive(name: string, value: unknown, integer: boolean, example: string): number {
  if (
    typeof value !== 'number' ||
    !Number.isFinite(value) ||
    value <= 0 ||
    (integer && !Number.isSafeInteger(value))
  ) {
    throw new ConfigError(
      `[fastlimit] [local-tier] ${name} must be a positive ${integer ? 'whole number' : 'number'}, got ${show(value)}. For example ${example}.`,
    )
  }
  return value
}

const OPTION_NAMES = [
  'clock',
  'denyCache',
  'leases',
  'maxKeys',
  'hotRate',
  'leaseMs',
  'maxLease',
  'maxLeaseShare',
] as const

/** The tier's state and logic; {@link localTier} exposes it as a backend. */
class Tier {
  readonly inner: Backend
  readonly #sync: SyncBackend | undefined
  readonly #clock: () => number
  readonly #denyOn: boolean
  readonly leasing: boolean
  readonly #maxKeys: number
  readonly #hotRate: number
  readonly #leaseMs: number
  readonly #maxLease: number
  readonly #share: number
  readonly #denials = new Map<string, Denial>()
  readonly #leases = new Map<string, Lease>()
  readonly #rates = new Map<string, Rate>()
  readonly #inflight = new Map<string, Promise<unknown>>()
  readonly #refunds = new Set<Promise<unknown>>()
  /** The id whose rate the synchronous path counted before handing the call to the asynchronous one. */
  #counted: string | undefined
  #closed = false
  readonly stats: LocalTierStats = {
    storeCalls: 0,
    localAdmits: 0,
    localDenials: 0,
    leases: 0,
    leaseDenials: 0,
    leasedUnits: 0,
    refundedUnits: 0,
    refundErrors: 0,
    heldUnits: 0,
  }

  /** The counters, with the units held in leases now. */
  snapshot(): LocalTierStats {
    let held = 0
    for (const l of this.#leases.values()) held += l.units + (l.next?.units ?? 0)
    return { ...this.stats, heldUnits: held }
  }

  constructor(inner: Backend, options: LocalTierOptions) {
    if (inner === null || typeof inner !== 'object' || typeof inner.checkAndIncrement !== 'function') {
      throw new ConfigError(
        '[fastlimit] [local-tier] localTier(backend) needs a backend with checkAndIncrement, e.g. localTier(new RedisBackend({ url })).',
      )
    }
    if (options === null || typeof options !== 'object') {
      throw new ConfigError(`[fastlimit] [local-tier] options must be an object, got ${show(options)}.`)
    }
    for (const key of Object.keys(options)) {
      if (!(OPTION_NAMES as readonly string[]).includes(key)) {
        throw new ConfigError(
          `[fastlimit] [local-tier] Unknown option ${show(key)}: localTier takes ${OPTION_NAMES.join(', ')}.`,
        )
      }
    }
    const o = options
    if (o.clock !== undefined && typeof o.clock !== 'function') {
      throw new ConfigError(
        '[fastlimit] [local-tier] clock must be a function returning epoch milliseconds, e.g. Date.now.',
      )
    }
    for (const flag of ['denyCache', 'leases'] as const) {
      if (o[flag] !== undefined && typeof o[flag] !== 'boolean') {
        throw new ConfigError(`[fastlimit] [local-tier] ${flag} must be true or false, got ${show(o[flag])}.`)
      }
    }
    this.inner = inner
    this.#sync = isSyncBackend(inner) ? inner : undefined
    this.#clock = o.clock ?? Date.now
    this.#denyOn = o.denyCache ?? true
    this.leasing = (o.leases ?? true) && typeof inner.adjust === 'function'
    this.#maxKeys = positive('maxKeys', o.maxKeys ?? 10_000, true, '10000')
    this.#hotRate = positive('hotRate', o.hotRate ?? 50, false, '50')
    this.#leaseMs = positive('leaseMs', o.leaseMs ?? 1000, true, '1000')
    this.#maxLease = positive('maxLease', o.maxLease ?? 100, true, '100')
    this.#share = positive('maxLeaseShare', o.maxLeaseShare ?? 0.05, false, '0.05')
    if (this.#share > 1) {
      throw new ConfigError(
        `[fastlimit] [local-tier] maxLeaseShare is a fraction of the capacity, at most 1, got ${show(this.#share)}. For example 0.05.`,
      )
    }
  }

  /** The largest lease a rule allows. */
  maxLeaseOf(bucket: BucketConfig): number {
    const byShare = Math.max(1, Math.floor(capacity(bucket) * this.#share))
    return byShare < this.#maxLease ? byShare : this.#maxLease
  }

  #now(): number {
    return Math.floor(this.#clock())
  }

  /** Sets `map[id] = value` as the newest entry, dropping the oldest beyond `maxKeys`. */
  #put<V>(map: Map<string, V>, id: string, value: V): void {
    map.delete(id)
    map.set(id, value)
    if (map.size > this.#maxKeys) {
      const oldest = map.keys().next().value as string
      if (map === (this.#leases as Map<string, unknown>))
        this.#endLease(oldest, this.#leases.get(oldest) as Lease)
      else map.delete(oldest)
    }
  }

  /** Ends the oldest lease if it has expired (the tier's only sweep: one look per call, no timer). */
  #sweep(now: number): void {
    const first = this.#leases.entries().next()
    if (!first.done) {
      const [id, lease] = first.value
      if (now >= lease.expires || now < lease.start) this.#endLease(id, lease)
    }
    const d = this.#denials.entries().next()
    if (!d.done) {
      const [id, entry] = d.value
      if (now - entry.t0 >= keptFor(entry.result) || now < entry.t0) this.#denials.delete(id)
    }
  }

  /** A decision made without the store (a lease's unit, or a cached denial), or `undefined`. */
  local(id: string, bucket: BucketConfig, cost: number, now: number): BackendResult | undefined {
    if (this.leasing) {
      let lease = this.#leases.get(id)
      if (lease !== undefined) {
        const ended = now >= lease.expires || now < lease.start
        if (ended || lease.units < cost) {
          const next = lease.next
          if (next !== undefined && now < next.expires && now >= next.start) {
            // The lease taken ahead takes over; what is left of this one goes back.
            lease.next = undefined
            this.#endLease(id, lease)
            this.#put(this.#leases, id, next)
            lease = next
          } else if (ended) {
            this.#endLease(id, lease)
            lease = undefined
          }
        }
        if (lease !== undefined && lease.units >= cost) {
          lease.units -= cost
          this.stats.localAdmits++
          const left = lease.storeRemaining + lease.units
          const out: { -readonly [K in keyof BackendResult]: BackendResult[K] } = {
            allowed: true,
            limit: lease.limit,
            remaining: left < lease.limit ? left : lease.limit,
            resetMs: lease.resetMs,
            retryAfterMs: 0,
          }
          if (lease.atMs !== undefined) out.atMs = lease.atMs
          if (lease.units * 4 <= lease.size && lease.next === undefined) this.#ahead(id, lease, now)
          return out
        }
      }
    }
    if (this.#denyOn) {
      const d = this.#denials.get(id)
      if (d !== undefined) {
        const r = cachedDenial(d, bucket, cost, now)
        if (r !== undefined) {
          this.stats.localDenials++
          return r
        }
        if (now - d.t0 >= keptFor(d.result) || now < d.t0) this.#denials.delete(id)
      }
    }
    return undefined
  }

  /**
   * Takes the next lease ahead, in the background, when a lease is down to a quarter (in front of an
   * asynchronous store only): calls keep being admitted locally meanwhile. It takes what the lease
   * lacks of its size, so the two never hold more than one lease's size together.
   */
  #ahead(id: string, lease: Lease, now: number): void {
    const size = lease.size - lease.units
    const rate = this.#rates.get(id)
    if (this.#sync !== undefined || size <= 0 || rate === undefined || this.#inflight.has(id)) return
    if (now < rate.noLeaseUntil) return
    this.stats.storeCalls++
    const call = this.inner.checkAndIncrement(lease.key, lease.bucket, size).then((r) => {
      this.#install(id, lease.key, lease.bucket, size, now, r, rate, lease)
    })
    this.#track(id, call)
  }

  /** Counts a call on `id` and returns the key's rate (calls per second) in this process. */
  #count(id: string, now: number): Rate {
    let rate = this.#rates.get(id)
    if (rate === undefined) {
      rate = { since: now, calls: 1, perSecond: 0, noLeaseUntil: 0, deniedAt: Number.NEGATIVE_INFINITY }
      this.#put(this.#rates, id, rate)
      return rate
    }
    rate.calls++
    const span = now - rate.since
    if (span >= RATE_PERIOD_MS || span < 0) {
      rate.perSecond = span > 0 ? (rate.calls * 1000) / span : 0
      rate.since = now
      rate.calls = 0
    } else if (rate.calls >= (this.#hotRate * RATE_PERIOD_MS) / 1000) {
      // A period's worth of calls already: hot now, rather than at the end of the period.
      const early = (rate.calls * 1000) / (span > MIN_SPAN_MS ? span : MIN_SPAN_MS)
      if (early > rate.perSecond) rate.perSecond = early
    }
    return rate
  }

  /** The lease to ask for, or 0 when the key is not hot enough (or the cost fills a lease already). */
  #leaseSize(rate: Rate, bucket: BucketConfig, cost: number, now: number): number {
    if (!this.leasing || rate.perSecond < this.#hotRate || now < rate.noLeaseUntil) return 0
    const want = Math.ceil((rate.perSecond * this.#leaseMs) / 1000)
    const most = this.maxLeaseOf(bucket)
    const size = want < most ? want : most
    return size > cost ? size : 0
  }

  /** Keeps what the store said about a plain check. */
  #record(
    id: string,
    key: string,
    bucket: BucketConfig,
    cost: number,
    t0: number,
    r: BackendResult,
    rate: Rate,
  ): void {
    if (!this.#denyOn || !usable(r)) return
    if (r.allowed) {
      // Admitted with room left: calls on the key go to the store at once again. With none left, the
      // key stays one store call at a time (the next call is denied anyway). The admission itself says
      // which costs the key now denies (fixed-window, meters, with atMs).
      if (r.remaining > 0) rate.deniedAt = Number.NEGATIVE_INFINITY
      if (r.atMs !== undefined && (bucket.algorithm === 'fixed-window' || METERS.has(bucket.algorithm)))
        this.#put(this.#denials, id, { key, cost, result: r, t0 })
      else this.#denials.delete(id)
      return
    }
    rate.deniedAt = t0
    if (Number.isFinite(r.retryAfterMs) && r.retryAfterMs > 0)
      this.#put(this.#denials, id, { key, cost, result: r, t0 })
  }

  /** Keeps a lease the store granted (or notes that it denied one). */
  #install(
    id: string,
    key: string,
    bucket: BucketConfig,
    size: number,
    t0: number,
    r: BackendResult,
    rate: Rate,
    ahead?: Lease,
  ): void {
    if (!usable(r)) return
    if (!r.allowed) {
      this.stats.leaseDenials++
      // A denial of `size` units: the deny cache answers the costs it implies (exactly, or not at all).
      this.#record(id, key, bucket, size, t0, r, rate)
      // No lease until `size` would fit, or leaseMs, whichever first: plain checks (and their denials) meanwhile.
      const wait =
        Number.isFinite(r.retryAfterMs) && r.retryAfterMs < this.#leaseMs ? r.retryAfterMs : this.#leaseMs
      rate.noLeaseUntil = t0 + wait
      return
    }
    this.stats.leases++
    this.stats.leasedUnits += size
    this.#denials.delete(id)
    let life = this.#leaseMs
    const at = r.atMs
    if (bucket.algorithm === 'fixed-window' || bucket.algorithm === 'sliding-window') {
      // A window's lease ends with the window that counted it (a duration on the store's clock).
      const end = bucket.algorithm === 'fixed-window' ? r.resetMs : r.resetMs - bucket.windowMs
      const left = at === undefined ? 0 : end - at
      if (left < life) life = left
    }
    const charge: Charge =
      at === undefined ? { cost: size, resetMs: r.resetMs } : { cost: size, resetMs: r.resetMs, atMs: at }
    const lease: Lease = {
      key,
      bucket,
      units: size,
      charge,
      start: t0,
      expires: t0 + (life > 0 ? life : 0),
      limit: r.limit,
      storeRemaining: r.remaining,
      resetMs: r.resetMs,
      atMs: at,
      // A lease taken ahead keeps the size of the lease it follows (what the two may hold together).
      size: ahead?.size ?? size,
      next: undefined,
    }
    if (ahead !== undefined) {
      // Taken ahead of `ahead`: it follows it, or stands alone if `ahead` is gone; else it goes back.
      const current = this.#leases.get(id)
      if (current === ahead && ahead.next === undefined) ahead.next = lease
      else if (current === undefined) this.#put(this.#leases, id, lease)
      else this.#endLease(id, lease)
      return
    }
    const old = this.#leases.get(id)
    if (old !== undefined) this.#endLease(id, old)
    this.#put(this.#leases, id, lease)
  }

  /** Ends a lease: its unused units go back to the store (once), and a denial kept for it is dropped. */
  #endLease(id: string, lease: Lease): void {
    if (this.#leases.get(id) === lease) this.#leases.delete(id)
    const next = lease.next
    lease.next = undefined
    if (next !== undefined) this.#endLease(id, next)
    const n = lease.units
    lease.units = 0
    if (n <= 0) return
    this.#denials.delete(id)
    this.stats.storeCalls++
    const inner = this.inner
    const fail = () => {
      this.stats.refundErrors++
    }
    try {
      const sync = this.#sync?.adjustSync
      if (sync !== undefined) {
        const done = sync.call(this.#sync, lease.key, [lease.bucket], -n, [lease.charge])
        if (done !== undefined) {
          this.stats.refundedUnits += n
          return
        }
      }
      const p = (inner.adjust as NonNullable<Backend['adjust']>)
        .call(inner, lease.key, [lease.bucket], -n, [lease.charge])
        .then(() => {
          this.stats.refundedUnits += n
        }, fail)
      this.#refunds.add(p)
      p.then(() => this.#refunds.delete(p))
    } catch {
      fail()
    }
  }

  checkSync(key: string, bucket: BucketConfig, cost: number): BackendResult | undefined {
    const now = this.#now()
    const id = key + SEP + bucketId(bucket)
    this.#sweep(now)
    const rate = this.#count(id, now)
    const local = this.local(id, bucket, cost, now)
    if (local !== undefined) return local
    const sync = this.#sync
    if (sync === undefined || this.#inflight.has(id)) {
      this.#counted = id
      return undefined
    }
    const size = this.#leaseSize(rate, bucket, cost, now)
    if (size > 0) {
      this.stats.storeCalls++
      const r = sync.checkAndIncrementSync(key, bucket, size)
      if (r === undefined) {
        this.#counted = id
        return undefined
      }
      this.#install(id, key, bucket, size, now, r, rate)
      const from = this.local(id, bucket, cost, now)
      if (from !== undefined) {
        // Decided by the lease's own store call: not a local decision.
        if (from.allowed) this.stats.localAdmits--
        else this.stats.localDenials--
        return from
      }
    }
    this.stats.storeCalls++
    const r = sync.checkAndIncrementSync(key, bucket, cost)
    if (r === undefined) {
      this.#counted = id
      return undefined
    }
    this.#record(id, key, bucket, cost, now, r, rate)
    return r
  }

  check(key: string, bucket: BucketConfig, cost: number, options?: CallOptions): Promise<BackendResult> {
    const now = this.#now()
    const id = key + SEP + bucketId(bucket)
    let rate: Rate
    if (this.#counted === id) {
      this.#counted = undefined
      rate = this.#rates.get(id) ?? this.#count(id, now)
    } else {
      this.#counted = undefined
      this.#sweep(now)
      rate = this.#count(id, now)
    }
    return this.#decide(id, key, bucket, cost, options, rate)
  }

  /**
   * Decides a counted call: locally if it can; else it waits for a store call in flight on the key (a
   * lease, or the probe after a denial) and decides again; else it asks the store. On a key denied
   * lately, one call at a time goes to the store, so a burst of calls waiting for the first answer
   * does not reach the store all at once.
   */
  #decide(
    id: string,
    key: string,
    bucket: BucketConfig,
    cost: number,
    options: CallOptions | undefined,
    rate: Rate,
  ): Promise<BackendResult> {
    const now = this.#now()
    const local = this.local(id, bucket, cost, now)
    if (local !== undefined) return Promise.resolve(local)
    const pending = this.#inflight.get(id)
    if (pending !== undefined) {
      return pending.then(() => this.#decide(id, key, bucket, cost, options, rate))
    }
    const size = this.#leaseSize(rate, bucket, cost, now)
    if (size === 0) {
      const call = this.#plain(id, key, bucket, cost, options, rate)
      if (now - rate.deniedAt < this.#leaseMs) this.#track(id, call)
      return call
    }
    this.stats.storeCalls++
    const lease = this.inner.checkAndIncrement(key, bucket, size, options).then((r) => {
      this.#install(id, key, bucket, size, now, r, rate)
    })
    this.#track(id, lease)
    return lease.then(() => {
      const from = this.local(id, bucket, cost, this.#now())
      if (from !== undefined) {
        // Decided by the lease's own store call: not a local decision.
        if (from.allowed) this.stats.localAdmits--
        else this.stats.localDenials--
        return from
      }
      return this.#decide(id, key, bucket, cost, options, rate)
    })
  }

  /** Marks a store call on `id` in flight: other calls on the key wait for it, then decide again. */
  #track(id: string, call: Promise<unknown>): void {
    const landed = call.then(
      () => {
        if (this.#inflight.get(id) === landed) this.#inflight.delete(id)
      },
      () => {
        if (this.#inflight.get(id) === landed) this.#inflight.delete(id)
      },
    )
    this.#inflight.set(id, landed)
  }

  #plain(
    id: string,
    key: string,
    bucket: BucketConfig,
    cost: number,
    options: CallOptions | undefined,
    rate: Rate,
  ): Promise<BackendResult> {
    const t0 = this.#now()
    this.stats.storeCalls++
    return this.inner.checkAndIncrement(key, bucket, cost, options).then((r) => {
      this.#record(id, key, bucket, cost, t0, r, rate)
      return r
    })
  }

  /** Drops what the tier knows of these buckets of `key` (their state changed at the store). */
  forget(key: string, buckets: readonly BucketConfig[]): void {
    for (const b of buckets) this.#denials.delete(key + SEP + bucketId(b))
  }

  /** Drops everything the tier knows of `key`; leases are dropped without a refund (the store forgets them). */
  forgetKey(key: string): void {
    for (const [id, d] of this.#denials) if (d.key === key) this.#denials.delete(id)
    for (const [id, l] of this.#leases) {
      if (l.key === key) {
        l.units = 0
        if (l.next !== undefined) l.next.units = 0
        this.#leases.delete(id)
      }
    }
  }

  forgetAll(): void {
    this.#denials.clear()
    for (const l of this.#leases.values()) {
      l.units = 0
      if (l.next !== undefined) l.next.units = 0
    }
    this.#leases.clear()
    this.#rates.clear()
  }

  counted(): void {
    this.stats.storeCalls++
  }

  async flush(): Promise<void> {
    for (const [id, lease] of [...this.#leases]) this.#endLease(id, lease)
    await Promise.all([...this.#refunds, ...this.#inflight.values()])
    // A lease that landed meanwhile.
    for (const [id, lease] of [...this.#leases]) this.#endLease(id, lease)
    await Promise.all([...this.#refunds])
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.flush()
    await this.inner.close?.()
  }
}

/**
 * Puts a local tier in front of `backend`: a deny cache, and token leases on hot keys. Returns a
 * backend, so `new FastLimit({ backend: localTier(redis) })` is all it takes. It forwards every
 * optional member of the protocol the inner backend has (`checkAndIncrementAll`, `peek`, `reset`,
 * `clear`, `adjust`, their synchronous twins, `reconnect`, `kind`); it starts no timer and does no
 * I/O when built (it runs on Workers).
 *
 * **Deny cache (exact).** When the store denies a check, the tier keeps the answer and answers the
 * same question locally, with no store call, while it provably still holds: the same cost (or, for
 * `'fixed-window'` and the meters, any cost the algorithm says is denied too) until `retryAfterMs`
 * has passed, with the fields the store would report. A denied call charges nothing, so the store's
 * state cannot have emptied meanwhile, unless another process refunds or resets the key: such a
 * refund is seen here at the latest when the cached `retryAfterMs` ends. A refund, reset or
 * adjustment made through the tier drops what it keeps for the key.
 *
 * **Leases.** On a key this process calls at least `hotRate` times a second, the tier takes a batch of
 * `size` units in one atomic check (`size` = the key's rate × `leaseMs`, at most `maxLease` and
 * `maxLeaseShare` of the capacity; below that, plain checks) and admits from it locally. A lease ends
 * after `leaseMs` (a window algorithm's lease also ends with the window that counted it), and its
 * unused units go back with `adjust`. Needs `adjust` on the inner backend; without it leases are off.
 * A lease the store denies is not asked for again until `size` would fit (at most `leaseMs`).
 *
 * **The bound.** With `P` processes sharing a key through tiers, `M` = the largest lease
 * (`min(maxLease, max(1, floor(capacity × maxLeaseShare)))`) and `λ` = `leaseMs`, compared with
 * what the algorithm admits on its own:
 *
 * - `'fixed-window'`, `'sliding-window'`: nothing more. Every unit is admitted in the aligned window
 *   that counted it (leases end with their window), so each window holds at most `limit`.
 * - `'gcra'`, `'token-bucket'`, `'leaky-bucket'`: over any `d` ms at most
 *   `burst + limit × d / windowMs + min(P × M, limit × λ / windowMs)`. A unit is admitted at most λ after
 *   the store charged it, and a refund gives back only what the charge still holds, so the admitted units
 *   at their charge times fit the meter.
 * - `'sliding-log'`: at most `limit + P × M` in any `windowMs` (units of leases live at its start).
 *
 * Under-admission: at most `P × M` units of a key are charged at the store but idle in leases at any
 * time; they come back when their lease ends (at the next call, `flush()` or `close()`). A process that
 * dies holding a lease never admits its units (no over-admission), and they come back as any charge
 * does: when the meter drains them (`M × windowMs / limit` ms at most) or their window ends.
 *
 * Checks of several rules at once (`checkAndIncrementAll`) go to the store as they are.
 *
 * @example
 * ```ts
 * const tier = localTier(new RedisBackend({ url: process.env.REDIS_URL }), { leaseMs: 500 })
 * const limiter = new FastLimit({ backend: tier })
 * process.on('SIGTERM', () => tier.close()) // gives unused leased units back
 * ```
 */
export function localTier(backend: Backend, options: LocalTierOptions = {}): LocalTierBackend {
  const tier = new Tier(backend, options)
  const inner = backend
  const sync = isSyncBackend(inner) ? inner : undefined
  const out: Record<string, unknown> = {
    inner,
    leasesEnabled: tier.leasing,
    kind: inner.kind,
    stats: (): LocalTierStats => tier.snapshot(),
    flush: () => tier.flush(),
    close: () => tier.close(),
    checkAndIncrement: (key: string, bucket: BucketConfig, cost: number, o?: CallOptions) =>
      tier.check(key, bucket, cost, o),
    checkAndIncrementSync: (key: string, bucket: BucketConfig, cost: number) =>
      tier.checkSync(key, bucket, cost),
  }
  if (typeof inner.checkAndIncrementAll === 'function') {
    const all = inner.checkAndIncrementAll
    out.checkAndIncrementAll = (
      key: string,
      buckets: readonly BucketConfig[],
      cost: number,
      o?: CallOptions,
    ) => {
      tier.forget(key, buckets)
      tier.counted()
      return all.call(inner, key, buckets, cost, o)
    }
  }
  if (typeof sync?.checkAndIncrementAllSync === 'function') {
    const allSync = sync.checkAndIncrementAllSync
    out.checkAndIncrementAllSync = (key: string, buckets: readonly BucketConfig[], cost: number) => {
      tier.forget(key, buckets)
      tier.counted()
      return allSync.call(sync, key, buckets, cost)
    }
  }
  if (typeof inner.adjust === 'function') {
    const adjust = inner.adjust
    out.adjust = (
      key: string,
      buckets: readonly BucketConfig[],
      delta: number,
      charges: readonly Charge[] | undefined,
      o?: CallOptions,
    ) => {
      tier.forget(key, buckets)
      tier.counted()
      return adjust.call(inner, key, buckets, delta, charges, o).then((r) => {
        tier.forget(key, buckets)
        return r
      })
    }
  }
  if (typeof sync?.adjustSync === 'function') {
    const adjustSync = sync.adjustSync
    out.adjustSync = (
      key: string,
      buckets: readonly BucketConfig[],
      delta: number,
      charges: readonly Charge[] | undefined,
    ) => {
      tier.forget(key, buckets)
      tier.counted()
      return adjustSync.call(sync, key, buckets, delta, charges)
    }
  }
  if (typeof inner.peek === 'function') {
    const peek = inner.peek
    out.peek = (key: string, bucket: BucketConfig, o?: CallOptions) => {
      tier.counted()
      return peek.call(inner, key, bucket, o)
    }
  }
  if (typeof sync?.peekSync === 'function') {
    const peekSync = sync.peekSync
    out.peekSync = (key: string, bucket: BucketConfig) => {
      tier.counted()
      return peekSync.call(sync, key, bucket)
    }
  }
  if (typeof inner.reset === 'function') {
    const reset = inner.reset
    out.reset = (key: string, o?: CallOptions) => {
      tier.forgetKey(key)
      tier.counted()
      return reset.call(inner, key, o).then(() => tier.forgetKey(key))
    }
  }
  if (typeof inner.clear === 'function') {
    const clear = inner.clear
    out.clear = () => {
      tier.forgetAll()
      tier.counted()
      return clear.call(inner).then(() => tier.forgetAll())
    }
  }
  if (typeof inner.reconnect === 'function') {
    const reconnect = inner.reconnect
    out.reconnect = (reason: Error) => reconnect.call(inner, reason)
  }
  return out as unknown as LocalTierBackend
}
