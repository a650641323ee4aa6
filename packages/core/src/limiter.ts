// FastLimit: rules + keys + backend + error policy + timeout + circuit breaker -> Decision.

import { ALGORITHMS } from './algorithms'
import {
  type AcquireResult,
  type Algorithm,
  type Backend,
  type BackendResult,
  type CallOptions,
  type Charge,
  isSyncBackend,
  type ResultSink,
  type SlotConfig,
  type SyncBackend,
} from './backend'
import {
  type AcquireOptions,
  canLease,
  isAcquireResult,
  type Lease,
  LeaseImpl,
  newToken,
  slotConfig,
} from './concurrency'
import { Deadlines } from './deadline'
import { ConfigError, checkPositiveCost, checkTimerMs, FastlimitError, show } from './errors'
import { identityName, storageKey, validatePrefix } from './keys'
import { MemoryBackend } from './memory'
import { isRuleSet, parseRules, type Rule, type RuleSet, type RulesInput } from './rules'
import { FAIL_CLOSED_RETRY_MS, mostRestrictive, reasonOf } from './verdict'
import { type WaitOptions, Waits } from './wait'

/**
 * What to do when the backend fails or does not answer within `timeoutMs`:
 * - `'fail-open'`: admit the request (`reason: 'fail-open'`). Keeps the app up when the store is down.
 * - `'fail-closed'`: deny it (`reason: 'fail-closed'`, `retryAfterMs: 1000`). Protects what is behind.
 * - `'throw'`: reject the promise with the {@link FastlimitError}.
 * - `{ fallback }`: decide with another backend, typically a `MemoryBackend` (`source: 'fallback'`):
 *   per-process limits until the store is back. The call the store missed is never charged there
 *   later (it carries its deadline), so each decision is charged once.
 */
export type BackendErrorPolicy = 'fail-open' | 'fail-closed' | 'throw' | { readonly fallback: Backend }

/** Options of the circuit breaker in front of an asynchronous backend ({@link FastLimitOptions.breaker}). */
export interface BreakerOptions {
  /**
   * Failures or timeouts in a row that open the breaker.
   * @default 5
   */
  failures?: number
  /**
   * Milliseconds the breaker stays open before one probe call may go to the store (half-open).
   * @default 1000
   */
  openMs?: number
}

/** The state of the circuit breaker: see {@link FastLimitOptions.breaker}. */
export type BreakerState = 'closed' | 'open' | 'half-open'

/** A change of the circuit breaker's state, given to `limiter.on('breaker', ...)`. */
export interface BreakerEvent {
  /** The new state. */
  readonly state: BreakerState
  /** The failure that opened the breaker (or that the probe met); absent when it closes or half-opens. */
  readonly cause?: FastlimitError
  /** The backend the breaker guards. */
  readonly backend: Backend
}

/** A decision made by `check`, `peek` or `reserve`, given to `limiter.on('decision', ...)`. */
export interface DecisionEvent {
  /** Which call made it (`'reserve'`: a check that returned a {@link Reservation}). */
  readonly operation: 'check' | 'peek' | 'reserve'
  /** The decision, as the caller receives it. */
  readonly decision: Decision
  /**
   * The identity as the caller gave it. A metric must never use it as an attribute (unbounded
   * cardinality); a log may.
   */
  readonly identity: string
  /** The scope of the call, if any. */
  readonly scope: string | undefined
  /** `'shadow'` when the caller only observes (an HTTP middleware in shadow mode), else `'enforce'`. */
  readonly mode: 'enforce' | 'shadow'
  /** The backend's `kind` (`'memory'`, `'redis'`, ...), or `'custom'`. */
  readonly backend: string
}

/** One call to the store, given to `limiter.on('call', ...)` when it settles (or times out). */
export interface BackendCallEvent {
  /**
   * What the limiter asked of the store (`'adjust'`: a reservation's settle or cancel, or a refund;
   * `'acquire'` and `'release'`: a concurrency lease).
   */
  readonly operation: 'check' | 'peek' | 'reset' | 'adjust' | 'acquire' | 'release'
  /** Milliseconds from the call to its answer, failure or timeout (`performance.now()`). */
  readonly durationMs: number
  /** Whether it went through the synchronous fast path (no promise, no timer). */
  readonly sync: boolean
  /** The failure, when it failed or timed out. */
  readonly error?: FastlimitError
  /** The backend's `kind`, or `'custom'`. */
  readonly backend: string
}

/** A lease taken (or refused) by `acquire`, or released, given to `limiter.on('lease', ...)`. */
export interface LeaseEvent {
  /** `'acquire'` when `acquire` decided; `'release'` when a granted lease's `release()` settled. */
  readonly operation: 'acquire' | 'release'
  /** The lease, as the caller receives it. */
  readonly lease: Lease
  /** The identity as the caller gave it (never a metric attribute: unbounded cardinality). */
  readonly identity: string
  /** The scope of the call, if any. */
  readonly scope: string | undefined
  /** `'shadow'` when the caller only observes, else `'enforce'`. */
  readonly mode: 'enforce' | 'shadow'
  /** The backend's `kind`, or `'custom'`. */
  readonly backend: string
}

/** Options of {@link FastLimit.on}. */
export interface ListenOptions {
  /**
   * For `'call'`: `false` hears only calls that did not take the synchronous fast path (network round
   * trips, SQLite lock waits), so decisions made in the process are not timed at all.
   * @default true
   */
  sync?: boolean
}

/** The events of a {@link FastLimit}, by name, with what each listener receives. */
export interface FastLimitEvents {
  /** A `check`, `peek` or `reserve` decided (by the store, the fallback or the policy). */
  decision: DecisionEvent
  /** A call to the store settled: its duration and outcome. Calls the breaker or `maxInFlight` kept off the store are not calls. */
  call: BackendCallEvent
  /** The circuit breaker opened, half-opened (one probe goes to the store) or closed. */
  breaker: BreakerEvent
  /** A backend call failed or timed out (the same errors `onError` receives). */
  error: FastlimitError
  /** An `acquire` decided, or a granted lease was released. */
  lease: LeaseEvent
}

const EVENTS: ReadonlySet<string> = new Set(['decision', 'call', 'breaker', 'error', 'lease'])

/** Options of {@link FastLimit}. */
export interface FastLimitOptions {
  /**
   * Where state lives. Only `checkAndIncrement` is required of it; see {@link Backend}.
   * @default a new `MemoryBackend()`
   */
  backend?: Backend
  /**
   * Prefix of every key: 1 to 64 printable ASCII characters, no spaces or braces. Give each
   * application sharing a store its own.
   * @default 'fl'
   */
  prefix?: string
  /**
   * The algorithm of rules that name none.
   * @default 'gcra'
   */
  algorithm?: Algorithm
  /**
   * What a backend failure, a timeout, an open breaker or too many calls in flight give.
   * See {@link BackendErrorPolicy}.
   * @default 'fail-open'
   */
  onBackendError?: BackendErrorPolicy
  /**
   * The most milliseconds any backend call may take before it counts as failed (then
   * `onBackendError` applies). The deadline travels with the call ({@link CallOptions.deadline}), so a
   * store that receives it late charges nothing. Calls decided on the synchronous fast path
   * ({@link SyncBackend}: `MemoryBackend`, `SQLiteBackend` when it needs no lock wait) take no timer.
   * @default 1000
   */
  timeoutMs?: number
  /**
   * Called with every backend failure (including timeouts), whatever the policy: log it here.
   * Calls refused by an open breaker or by `maxInFlight` are not failures and do not come here.
   * @default undefined
   */
  onError?: (error: FastlimitError) => void
  /**
   * The circuit breaker in front of an asynchronous backend: after `failures` failures or timeouts in
   * a row it opens, and for `openMs` every decision takes `onBackendError` at once without touching
   * the store (`error.code` `'ERR_FASTLIMIT_CIRCUIT_OPEN'`), so a stalled store cannot pile up calls.
   * On opening it calls `backend.reconnect(cause)` when the backend has it (RedisBackend drops the
   * stalled connection and its queued commands). Then one probe call goes to the store: success closes
   * the breaker, failure opens it again. `false` turns it off.
   * @default { failures: 5, openMs: 1000 }
   */
  breaker?: BreakerOptions | false
  /**
   * The most calls to an asynchronous backend that may be unanswered at once (calls that timed out
   * count until the store answers or fails them). Calls over it take `onBackendError` at once without
   * touching the store (`error.code` `'ERR_FASTLIMIT_OVERLOADED'`). It bounds the memory a stalled
   * store can cost: about 4 KB per call queued in ioredis, so 40 MB at the default.
   * @default 10000
   */
  maxInFlight?: number
}

/** Options of one {@link FastLimit.check}. */
export interface CheckOptions {
  /**
   * Units to charge: a positive whole number (a weighted request costs more than 1).
   * @default 1
   */
  cost?: number
  /**
   * A key space of its own: the same identity under another scope (or none) has separate counts, and
   * no identity can reach into a scope. 1 to 64 of `A-Z a-z 0-9 _ . : -`.
   * @default none
   */
  scope?: string
  /**
   * For observers only: `'shadow'` marks a check whose refusal the caller will not enforce (an HTTP
   * middleware in shadow mode), so `'decision'` listeners can tell "would have denied" from "denied".
   * The decision itself is the same.
   * @default 'enforce'
   */
  mode?: 'enforce' | 'shadow'
}

/** Options of {@link FastLimit.peek} and {@link FastLimit.reset}. */
export interface ScopeOptions {
  /** The scope the identity was checked in ({@link CheckOptions.scope}). @default none */
  scope?: string
}

/**
 * Why a decision came out as it did:
 * - `'ok'`: admitted by every rule.
 * - `'rate-limited'`: a rule denied; retry after `retryAfterMs`.
 * - `'cost-exceeds-limit'`: the cost is larger than a rule's capacity; it can never pass (`retryAfterMs` is `Infinity`).
 * - `'fail-open'`, `'fail-closed'`: the backend failed or timed out (`error` says how); the policy decided.
 * - `'concurrency-limited'`: only in the decision an HTTP middleware's `concurrency` option hands to
 *   `handler`, `message` and `onLimit`: too many of the client's requests are in flight (no rate rule
 *   was checked; `rules` is empty, and `lease` holds the refused lease).
 */
export type DecisionReason =
  | 'ok'
  | 'rate-limited'
  | 'cost-exceeds-limit'
  | 'fail-open'
  | 'fail-closed'
  | 'concurrency-limited'

/** One rule's part of a {@link Decision} made by a store (the backend or the fallback). */
export interface RuleResult extends BackendResult {
  /** The rule this result is for. */
  readonly rule: Rule
}

/**
 * One rule's part of a {@link PolicyDecision}: the store was not reached, so nothing is known of the
 * rule's standing (`remaining` and `resetMs` are `undefined`).
 */
export interface PolicyRuleResult {
  /** The rule this result is for. */
  readonly rule: Rule
  /** What the policy said. */
  readonly allowed: boolean
  /** The rule's capacity (known from its configuration). */
  readonly limit: number
  /** Unknown: the store was not reached. */
  readonly remaining: undefined
  /** Unknown: the store was not reached. */
  readonly resetMs: undefined
  /** 0 when the policy admitted, else when to retry (1000 under `'fail-closed'`). */
  readonly retryAfterMs: number
}

/** What every {@link Decision} holds, whoever made it. */
export interface DecisionBase {
  /** Whether the request may proceed. */
  readonly allowed: boolean
  /** Why; see {@link DecisionReason}. */
  readonly reason: DecisionReason
  /** The capacity of the deciding rule. */
  readonly limit: number
  /** Milliseconds to wait before retrying (0 when allowed; `Infinity` when it can never pass). */
  readonly retryAfterMs: number
  /** The cost charged (or refused). */
  readonly cost: number
  /** The most restrictive rule: the denying one with the longest wait, or the one with the least remaining. */
  readonly rule: Rule
  /** The backend failure behind `'fail-open'`, `'fail-closed'` or a fallback decision. */
  readonly error?: FastlimitError
}

/** A decision made by a store: the backend, or the fallback of `onBackendError`. Every figure is exact. */
export interface StoreDecision extends DecisionBase {
  /** Who decided: the backend, or the fallback backend. */
  readonly source: 'backend' | 'fallback'
  /** What the deciding rule would still admit now. */
  readonly remaining: number
  /** Epoch milliseconds at which the deciding rule is full again. */
  readonly resetMs: number
  /** Every rule's result, in the order the rules were given. */
  readonly rules: readonly RuleResult[]
}

/**
 * A decision made by the error policy (`'fail-open'`, `'fail-closed'`) because the store failed, timed
 * out, or was kept off by the circuit breaker or `maxInFlight` (`error.code` says which). Nothing is known
 * of the client's standing: `remaining` and `resetMs` are `undefined`, never invented.
 */
export interface PolicyDecision extends DecisionBase {
  /** The error policy decided. */
  readonly source: 'policy'
  /** Unknown: the store was not reached. */
  readonly remaining: undefined
  /** Unknown: the store was not reached. */
  readonly resetMs: undefined
  /** Every rule, with what the policy said. */
  readonly rules: readonly PolicyRuleResult[]
  /** Why the store was not asked, or what it answered. */
  readonly error: FastlimitError
}

/**
 * The answer of {@link FastLimit.check}: a {@link StoreDecision} (exact figures) or a
 * {@link PolicyDecision} (the store was not reached; `remaining` and `resetMs` are `undefined`). Tell them
 * apart by `source`. The top-level figures are those of the most restrictive rule.
 */
export type Decision = StoreDecision | PolicyDecision

/**
 * What {@link Reservation.settle}, {@link Reservation.cancel} and {@link FastLimit.refund} did:
 * - `'adjusted'`: the store applied the change: the refund (as much of it as the charge still held;
 *   see `Backend.adjust`) or the extra charge (up to a full bucket).
 * - `'unchanged'`: the actual cost equals the reserved cost; the store was not called.
 * - `'skipped'`: nothing was charged (a denied reservation, or one the error policy decided), so there
 *   is nothing to settle; the store was not called.
 * - `'failed'`: the store failed, timed out or was kept off by the breaker or `maxInFlight` (`error`
 *   says which); nothing changed, so the reserved cost stays charged.
 */
export type SettlementOutcome = 'adjusted' | 'unchanged' | 'skipped' | 'failed'

/** The answer of {@link Reservation.settle}, {@link Reservation.cancel} and {@link FastLimit.refund}. */
export interface Settlement {
  /** What happened; see {@link SettlementOutcome}. */
  readonly outcome: SettlementOutcome
  /** The change asked of the store: the actual cost less the reserved one (negative: a refund); 0 when none. */
  readonly delta: number
  /**
   * When `'adjusted'`, each rule's standing after the change, as `peek` reports it (`allowed`: whether
   * a cost of 1 would pass now), in the order of the rules; else empty.
   */
  readonly rules: readonly RuleResult[]
  /** When `'failed'`: the failure (also given to `onError` and `'error'` listeners). */
  readonly error?: FastlimitError
}

/**
 * What {@link FastLimit.reserve} adds to a {@link Decision}: the means to charge what the request
 * really cost, once it is known.
 */
export interface ReservationActions {
  /**
   * Charges exactly `actualCost` instead of the reserved `cost`: refunds the difference when lower,
   * charges the excess when higher. A refund never lifts a bucket above its capacity, never gives
   * back more than the bucket still holds of this reservation's charge (a window that has passed, a
   * meter that has drained past it, give back nothing), and never makes an earlier `retryAfterMs`
   * too short. An excess is charged unconditionally, never denied, but saturates: a bucket fills up to
   * its capacity (a window counts at most `limit`) and what does not fit is forgiven, so a settle above
   * exceeds the limit by at most its excess and leaves no debt beyond a full bucket.
   *
   * Each reservation settles once: a second `settle` or `cancel` rejects with `ERR_FASTLIMIT_ARGUMENT`
   * (and changes nothing). On a denied reservation, or one the error policy decided (nothing was
   * charged), it does nothing and resolves `'skipped'`. When the store fails, it resolves `'failed'`
   * (rejects under `onBackendError: 'throw'`), and the reserved cost stays charged. A reservation
   * decided by the `{ fallback }` policy settles on the fallback backend.
   *
   * @param actualCost a whole number from 0 (`0` is `cancel()`) to 2^53 - 1; a bad value rejects with
   *   `ERR_FASTLIMIT_ARGUMENT` and leaves the reservation unsettled
   */
  settle(actualCost: number): Promise<Settlement>
  /** Refunds the whole reservation: `settle(0)`. */
  cancel(): Promise<Settlement>
  /** Whether `settle` or `cancel` was called. */
  readonly settled: boolean
}

/**
 * The answer of {@link FastLimit.reserve}: the {@link Decision}, with every field as `check` gives
 * it, and {@link ReservationActions} to settle it. A reservation never settled holds nothing in the
 * limiter: the reserved cost simply stays charged.
 */
export type Reservation = Decision & ReservationActions

const POLICIES = new Set(['fail-open', 'fail-closed', 'throw'])
/** One settled promise for every release that had nothing to wait for. */
const RESOLVED: Promise<void> = Promise.resolve()
const MAX_CACHED_RULE_STRINGS = 1000
/** Recent identities whose storage key is kept, so a hot identity builds and hashes its key once. */
const MAX_CACHED_KEYS = 16_384
const DEFAULT_BREAKER: Required<BreakerOptions> = { failures: 5, openMs: 1000 }
/** Ends the message of a bad cost given to FastLimit. */
const COST_HINT = ': e.g. { cost: 5 }'
const OPTION_NAMES = [
  'backend',
  'prefix',
  'algorithm',
  'onBackendError',
  'timeoutMs',
  'onError',
  'breaker',
  'maxInFlight',
]

/** Whether a full store was warned about in this process (once, when nobody listens for errors). */
let warnedStoreFull = false

/** One rule's part of a decision (a `PolicyRuleResult` when the figures are unknown). */
function ruleResult(rule: Rule, r: Standing): RuleResult {
  return <RuleResult>{
    rule,
    allowed: r.allowed,
    limit: r.limit,
    remaining: r.remaining,
    resetMs: r.resetMs,
    retryAfterMs: r.retryAfterMs,
  }
}

/** The optional backend methods a feature needs, for the error that names the missing one. */
type Method = 'checkAndIncrementAll' | 'peek' | 'reset' | 'adjust' | 'acquire'

function missing(backend: Backend, method: Method, feature: string): ConfigError {
  const kind = typeof backend.kind === 'string' ? ` (${backend.kind})` : ''
  return new ConfigError(
    `[fastlimit] [core] The backend${kind} has no ${method}(), which ${feature} needs. ` +
      `Implement ${method === 'acquire' ? 'acquire and release' : method} on it (see Backend in @fastlimit/core), or use a backend that has it (MemoryBackend, RedisBackend, SQLiteBackend).`,
  )
}

/**
 * The rate limiter: checks an identity against one or several rules on a backend.
 *
 * @example
 * ```ts
 * const limiter = new FastLimit()                  // in memory; pass { backend } for Redis or SQLite
 * const d = await limiter.check(userId, '100/min')
 * if (!d.allowed) return tooManyRequests(d.retryAfterMs)
 *
 * // Several rules, all-or-nothing, with a weighted cost:
 * await limiter.check(ip, ['10/s', '1000/day'], { cost: 5 })
 * ```
 */
export class FastLimit {
  /** The backend decisions are made on. */
  readonly backend: Backend
  /** The key prefix. */
  readonly prefix: string
  /** The algorithm of rules that name none. */
  readonly algorithm: Algorithm
  /** The milliseconds any backend call may take. */
  readonly timeoutMs: number
  /** The most calls that may be unanswered at once ({@link FastLimitOptions.maxInFlight}). */
  readonly maxInFlight: number

  readonly #policy: BackendErrorPolicy
  readonly #onError: ((error: FastlimitError) => void) | undefined
  readonly #sync: SyncBackend | undefined
  /** Whether the backend has `checkAndIncrementSyncTo`. */
  readonly #syncTo: boolean
  /** The backend has {@link SyncBackend.syncNow}: ask it before a charge on the fast path. */
  readonly #syncNow: boolean
  /** Where `checkAndIncrementSyncTo` writes (read at once, in the same turn). */
  readonly #out: ResultSink = { allowed: false, limit: 0.5, remaining: 0.5, resetMs: 0.5, retryAfterMs: 0.5 }
  readonly #ownsBackend: boolean
  readonly #strings = new Map<string, RuleSet>()
  /** Identity -> storage key, for the unscoped keys of recent identities. */
  readonly #keys = new Map<string, string>()
  readonly #deadlines: Deadlines
  readonly #objects = new WeakMap<object, RuleSet>()
  readonly #breaker: Required<BreakerOptions> | undefined
  #state: BreakerState = 'closed'
  #failures = 0
  /** `performance.now()` before which an open breaker sends nothing to the store. */
  #openUntil = 0
  #probing = false
  #inFlight = 0
  #listeners: { [K in keyof FastLimitEvents]?: ReadonlyArray<(event: FastLimitEvents[K]) => void> } & {
    callAsync?: ReadonlyArray<(event: BackendCallEvent) => void>
  } = {}
  #watchDecisions = false
  #watchCalls = false
  #watchSyncCalls = false
  readonly #kind: string
  #closed = false
  /** The queues of `wait()`, made at its first call. */
  #waits: Waits | undefined

  constructor(options: FastLimitOptions = {}) {
    if (typeof options !== 'object' || options === null) {
      throw new ConfigError(`[fastlimit] [core] FastLimit options must be an object, got ${show(options)}.`)
    }
    for (const key of Object.keys(options)) {
      if (!OPTION_NAMES.includes(key)) {
        throw new ConfigError(
          `[fastlimit] [core] Unknown FastLimit option ${show(key)}: it takes ${OPTION_NAMES.join(', ')}.`,
        )
      }
    }
    const {
      backend,
      prefix = 'fl',
      algorithm = 'gcra',
      onBackendError = 'fail-open',
      timeoutMs = 1000,
      onError,
      breaker = DEFAULT_BREAKER,
      maxInFlight = 10_000,
    } = options
    if (backend !== undefined && !isBackend(backend)) {
      throw new ConfigError(
        `[fastlimit] [core] backend ${show(backend)} does not implement Backend: it needs at least ` +
          'checkAndIncrement(key, bucket, cost). Pass e.g. new MemoryBackend() or a RedisBackend.',
      )
    }
    this.prefix = validatePrefix(prefix)
    if (!ALGORITHMS.includes(algorithm)) {
      throw new ConfigError(
        `[fastlimit] [core] Unknown algorithm ${show(algorithm)}: use one of ${ALGORITHMS.map((a) => `'${a}'`).join(', ')}.`,
      )
    }
    this.algorithm = algorithm
    const policyOk =
      (typeof onBackendError === 'string' && POLICIES.has(onBackendError)) ||
      (typeof onBackendError === 'object' && onBackendError !== null && isBackend(onBackendError.fallback))
    if (!policyOk) {
      throw new ConfigError(
        `[fastlimit] [core] onBackendError ${show(onBackendError)} is not a policy: use 'fail-open', 'fail-closed', ` +
          "'throw' or { fallback: new MemoryBackend() }.",
      )
    }
    this.#policy = onBackendError
    checkTimerMs('core', 'timeoutMs', timeoutMs, false, '500')
    this.timeoutMs = timeoutMs
    this.#deadlines = new Deadlines(timeoutMs)
    if (onError !== undefined && typeof onError !== 'function') {
      throw new ConfigError(`[fastlimit] [core] onError must be a function, got ${show(onError)}.`)
    }
    this.#onError = onError
    this.#breaker = breakerOptions(breaker)
    if (!Number.isSafeInteger(maxInFlight) || maxInFlight < 1 || maxInFlight > 2 ** 31 - 1) {
      throw new ConfigError(
        `[fastlimit] [core] maxInFlight must be a whole number from 1 to 2147483647, got ${show(maxInFlight)}. For example 10000.`,
      )
    }
    this.maxInFlight = maxInFlight
    this.#ownsBackend = backend === undefined
    this.backend = backend ?? new MemoryBackend()
    this.#sync = isSyncBackend(this.backend) ? this.backend : undefined
    this.#syncTo = typeof this.#sync?.checkAndIncrementSyncTo === 'function'
    this.#syncNow = typeof this.#sync?.syncNow === 'function'
    const kind = this.backend.kind
    this.#kind = typeof kind === 'string' && kind !== '' ? kind : 'custom'
  }

  /** The circuit breaker's state: `'closed'` (calls go to the store), `'open'` or `'half-open'`. */
  get breakerState(): BreakerState {
    return this.#state
  }

  /** What decides when the store fails ({@link FastLimitOptions.onBackendError}), as given. */
  get onBackendError(): BackendErrorPolicy {
    return this.#policy
  }

  /** Calls to the backend not yet answered, timed-out ones included. */
  get inFlight(): number {
    return this.#inFlight
  }

  /**
   * Listens to an event: `'breaker'` (the circuit breaker changed state) or `'error'` (a backend call
   * failed or timed out). Costs nothing while nobody listens.
   * @returns a function that removes the listener
   */
  on<K extends keyof FastLimitEvents>(
    type: K,
    listener: (event: FastLimitEvents[K]) => void,
    options?: ListenOptions,
  ): () => void {
    if (!EVENTS.has(type)) {
      throw new ConfigError(
        `[fastlimit] [core] Unknown event ${show(type)}: listen to 'decision', 'call', 'breaker', 'error' or 'lease'.`,
      )
    }
    if (typeof listener !== 'function') {
      throw new ConfigError(`[fastlimit] [core] A listener must be a function, got ${show(listener)}.`)
    }
    const sync = options?.sync ?? true
    if (typeof sync !== 'boolean') {
      throw new ConfigError(
        `[fastlimit] [core] The listener option sync must be true or false, got ${show(sync)}.`,
      )
    }
    // Lists are replaced, never changed in place, so an emit iterates them without a copy.
    const key = type === 'call' && !sync ? 'callAsync' : type
    const lists = this.#listeners as Record<string, ReadonlyArray<(event: never) => void> | undefined>
    lists[key] = [...(lists[key] ?? []), listener as (event: never) => void]
    this.#watch()
    let on = true
    return () => {
      if (!on) return
      on = false
      const list = lists[key] ?? []
      const i = list.indexOf(listener as (event: never) => void)
      if (i !== -1) lists[key] = [...list.slice(0, i), ...list.slice(i + 1)]
      this.#watch()
    }
  }

  /** Keeps the flags the hot path reads: whether anyone listens to decisions, to calls, to synchronous calls. */
  #watch(): void {
    const l = this.#listeners
    this.#watchDecisions = (l.decision?.length ?? 0) > 0
    this.#watchSyncCalls = (l.call?.length ?? 0) > 0
    this.#watchCalls = this.#watchSyncCalls || (l.callAsync?.length ?? 0) > 0
  }

  /** Emits the decision of a `check` or `peek` once it settles (only while someone listens). */
  #observe(
    promise: Promise<Decision>,
    operation: 'check' | 'peek' | 'reserve',
    identity: string,
    scope: string | undefined,
    mode: 'enforce' | 'shadow',
  ): Promise<Decision> {
    return promise.then((decision) => {
      this.#emit('decision', { operation, decision, identity, scope, mode, backend: this.#kind })
      return decision
    })
  }

  /** Emits a settled store call (only while someone listens). */
  #called(
    operation: BackendCallEvent['operation'],
    start: number,
    sync: boolean,
    error?: FastlimitError,
  ): void {
    const event: { -readonly [K in keyof BackendCallEvent]: BackendCallEvent[K] } = {
      operation,
      durationMs: performance.now() - start,
      sync,
      backend: this.#kind,
    }
    if (error !== undefined) event.error = error
    const l = this.#listeners
    if (l.call !== undefined) this.#deliver(l.call, event)
    if (!sync && l.callAsync !== undefined) this.#deliver(l.callAsync, event)
  }

  #emit<K extends keyof FastLimitEvents>(type: K, event: FastLimitEvents[K]): void {
    const list = this.#listeners[type] as ReadonlyArray<(event: FastLimitEvents[K]) => void> | undefined
    if (list !== undefined) this.#deliver(list, event)
  }

  #deliver<E>(list: ReadonlyArray<(event: E) => void>, event: E): void {
    for (const listener of list) {
      try {
        listener(event)
      } catch {
        // A throwing listener must not turn a decision into a crash.
      }
    }
  }

  /**
   * Validates rules once and caches them: strings and arrays of strings by value, objects by identity
   * (treat rule objects as immutable once used). Use it at startup to fail fast on a bad rule, or on
   * several rules with a backend that cannot check several at once.
   * @throws ConfigError
   */
  rules(input: RulesInput | RuleSet): RuleSet {
    const set = this.#parse(input)
    if (set.rules.length > 1 && !this.#canCheckAll()) {
      throw missing(this.backend, 'checkAndIncrementAll', 'checking several rules at once')
    }
    return set
  }

  #canCheckAll(): boolean {
    const b = this.backend as SyncBackend
    return typeof b.checkAndIncrementAll === 'function' || typeof b.checkAndIncrementAllSync === 'function'
  }

  #parse(input: RulesInput | RuleSet): RuleSet {
    if (isRuleSet(input)) return input
    if (typeof input === 'string') {
      let set = this.#strings.get(input)
      if (set === undefined) {
        set = parseRules(input, this.algorithm)
        this.#remember(input, set)
      }
      return set
    }
    if (typeof input === 'object' && input !== null) {
      let set = this.#objects.get(input)
      if (set === undefined) {
        if (Array.isArray(input) && input.every((r) => typeof r === 'string')) {
          // JSON keeps ['a\nb'] and ['a', 'b'] apart, as a plain join would not.
          const joined = JSON.stringify(input)
          set = this.#strings.get(joined)
          if (set === undefined) {
            set = parseRules(input, this.algorithm)
            this.#remember(joined, set)
          }
          return set
        }
        set = parseRules(input, this.algorithm)
        this.#objects.set(input, set)
      }
      return set
    }
    return parseRules(input, this.algorithm)
  }

  /** Caches a rule set parsed from a string (or a JSON-joined array of strings); on a miss only. */
  #remember(key: string, set: RuleSet): void {
    if (this.#strings.size >= MAX_CACHED_RULE_STRINGS) this.#strings.clear()
    this.#strings.set(key, set)
  }

  /** The storage key of an identity in a scope; a promise only for an identity stored as its digest. */
  #key(identity: string, scope: string | undefined): string | Promise<string> {
    if (scope === undefined) {
      // The same identity gives the same key string object, whose hash the store's Map has cached.
      const cached = this.#keys.get(identity)
      if (cached !== undefined) return cached
      const name = identityName(identity)
      if (typeof name === 'string') {
        const key = `${this.prefix}:{${name}}`
        if (this.#keys.size >= MAX_CACHED_KEYS) this.#keys.clear()
        this.#keys.set(identity, key)
        return key
      }
    }
    return storageKey(this.prefix, identity, scope)
  }

  /**
   * Charges `cost` (default 1) to `identity` under every rule, all-or-nothing, and says whether the
   * request may proceed. Being over the limit is `allowed: false`, never an error.
   *
   * @param identity who is limited: a user id, an API key, an IP address. Any string; escaped or
   *   hashed into a safe key.
   * @param rules one rule or several: `'100/min'`, `['10/s', '1000/day']`, `{ limit, window, algorithm }`
   * @returns the decision; rejects only for bad arguments, or for backend failures under `'throw'`
   */
  check(identity: string, rules: RulesInput | RuleSet, options?: CheckOptions): Promise<Decision> {
    const decided = this.checkNow(identity, rules, options)
    return decided instanceof Promise ? decided : Promise.resolve(decided)
  }

  /**
   * {@link check}, answered in this turn when it can be: returns the {@link Decision} itself when the
   * backend decided synchronously (the {@link SyncBackend} fast path: `MemoryBackend`, `SQLiteBackend`
   * without a lock wait), and a promise otherwise (an asynchronous backend, a failure the error
   * policy answers). The same
   * checks, charges, `'decision'` and `'call'` events and `onBackendError` handling as `check`, which
   * is this with the answer always wrapped in a promise; for callers (middleware) that would rather not
   * wait a turn when nothing needs to wait. Bad arguments give a rejected promise, never a throw.
   *
   * @example
   * ```ts
   * const d = limiter.checkNow(ip, '100/min')
   * const decision = d instanceof Promise ? await d : d
   * ```
   */
  checkNow(
    identity: string,
    rules: RulesInput | RuleSet,
    options?: CheckOptions,
  ): Decision | Promise<Decision> {
    let list: readonly Rule[]
    let single: Rule | undefined
    let key: string | Promise<string>
    let cost = 1
    try {
      if (this.#closed) throw this.#closedError()
      const set = this.#parse(rules)
      list = set.rules
      single = set.single
      let scope: string | undefined
      if (options !== undefined) {
        if (options.cost !== undefined) cost = checkPositiveCost('core', options.cost, COST_HINT)
        scope = options.scope
      }
      key = this.#key(identity, scope)
      if (list.length > 1 && !this.#canCheckAll())
        throw missing(this.backend, 'checkAndIncrementAll', 'checking several rules at once')
    } catch (err) {
      return Promise.reject(err)
    }
    const decided =
      typeof key === 'string'
        ? this.#check(key, list, cost, single)
        : key.then((k) => this.#check(k, list, cost, single))
    const mode = options?.mode === 'shadow' ? 'shadow' : 'enforce'
    if (decided instanceof DecisionImpl) {
      // Decided in this turn (the synchronous fast path): observed now, without a promise hop.
      if (this.#watchDecisions) {
        const decision = decided as unknown as Decision
        const scope = options?.scope
        this.#emit('decision', { operation: 'check', decision, identity, scope, mode, backend: this.#kind })
      }
      return decided as unknown as Decision
    }
    const later = decided as Promise<Decision>
    if (!this.#watchDecisions) return later
    return this.#observe(later, 'check', identity, options?.scope, mode)
  }

  /**
   * Whether to charge on `sync`'s fast path now: always, unless it has {@link SyncBackend.syncNow}; then
   * what it says while the breaker is closed (after a fault the fast path decides as it did before,
   * without the breaker's policy).
   */
  #onFastPath(sync: SyncBackend): boolean {
    return (
      !this.#syncNow ||
      this.#state !== 'closed' ||
      (sync.syncNow as NonNullable<SyncBackend['syncNow']>).call(sync)
    )
  }

  /** {@link check} once the key is known (`single`: the rule when there is one, if the caller has it). */
  #check(key: string, list: readonly Rule[], cost: number, single?: Rule): Decision | Promise<Decision> {
    const sync = this.#sync
    if (sync !== undefined && this.#onFastPath(sync)) {
      const start = this.#watchSyncCalls ? performance.now() : -1
      try {
        if (single !== undefined && this.#syncTo) {
          // No result object: the store writes its answer into the limiter's own sink.
          const out = this.#out
          out.allowed = undefined as unknown as boolean
          if (
            (sync.checkAndIncrementSyncTo as NonNullable<SyncBackend['checkAndIncrementSyncTo']>).call(
              sync,
              key,
              single,
              cost,
              out,
            )
          ) {
            if (!isResult(out)) throw malformed()
            if (start >= 0) this.#called('check', start, true)
            return decideRule(single, out, cost)
          }
        } else if (list.length === 1) {
          const result = sync.checkAndIncrementSync(key, list[0] as Rule, cost)
          if (result !== undefined) {
            if (!isResult(result)) throw malformed()
            if (start >= 0) this.#called('check', start, true)
            return decideOne(list, result, cost, 'backend', undefined)
          }
        } else if (sync.checkAndIncrementAllSync !== undefined) {
          const results = sync.checkAndIncrementAllSync(key, list, cost)
          if (results !== undefined) {
            if (!areResults(results, list.length)) throw malformed()
            if (start >= 0) this.#called('check', start, true)
            return decide(list, results, cost, 'backend', undefined)
          }
        }
      } catch (err) {
        if (start >= 0) this.#called('check', start, true, this.#wrap(err))
        return this.#failed(key, list, cost, err)
      }
      // The fast path could not decide without waiting: the asynchronous call, with its deadline.
    }
    const backend = this.backend
    if (list.length === 1) {
      const rule = list[0] as Rule
      return this.#call('check', (o) => backend.checkAndIncrement(key, rule, cost, o)).then(
        (result) =>
          isResult(result)
            ? decideOne(list, result, cost, 'backend', undefined)
            : this.#failed(key, list, cost, this.#failure(malformed())),
        (err) => this.#failed(key, list, cost, err),
      )
    }
    return this.#call('check', (o) =>
      (backend.checkAndIncrementAll as NonNullable<Backend['checkAndIncrementAll']>).call(
        backend,
        key,
        list,
        cost,
        o,
      ),
    ).then(
      (results) =>
        areResults(results, list.length)
          ? decide(list, results, cost, 'backend', undefined)
          : this.#failed(key, list, cost, this.#failure(malformed())),
      (err) => this.#failed(key, list, cost, err),
    )
  }

  /**
   * Reads where `identity` stands under the rules without charging anything: `allowed` says whether a
   * request of cost 1 would pass now. Backend failures follow `onBackendError` as for `check`.
   * Needs a backend with `peek`.
   */
  peek(identity: string, rules: RulesInput | RuleSet, options?: ScopeOptions): Promise<Decision> {
    let list: readonly Rule[]
    let key: string | Promise<string>
    try {
      if (this.#closed) throw this.#closedError()
      list = this.#parse(rules).rules
      key = this.#key(identity, options?.scope)
      if (typeof this.backend.peek !== 'function' && typeof this.#sync?.peekSync !== 'function')
        throw missing(this.backend, 'peek', 'peek()')
    } catch (err) {
      return Promise.reject(err)
    }
    const decided = typeof key === 'string' ? this.#peek(key, list) : key.then((k) => this.#peek(k, list))
    if (!this.#watchDecisions) return decided
    return this.#observe(decided, 'peek', identity, options?.scope, 'enforce')
  }

  /** {@link peek} once the key is known. */
  #peek(key: string, list: readonly Rule[]): Promise<Decision> {
    const sync = this.#sync
    if (sync?.peekSync !== undefined) {
      try {
        const results: Array<BackendResult | undefined> = list.map((rule) =>
          (sync.peekSync as NonNullable<SyncBackend['peekSync']>).call(sync, key, rule),
        )
        if (results.every((r) => r !== undefined)) {
          if (!areResults(results, list.length)) throw malformed()
          return Promise.resolve(decide(list, results, 0, 'backend', undefined))
        }
      } catch (err) {
        return this.#failed(key, list, 0, err)
      }
    }
    const backend = this.backend
    if (typeof backend.peek !== 'function') return Promise.reject(missing(backend, 'peek', 'peek()'))
    const peek = backend.peek
    const all = this.#call('peek', (o) => Promise.all(list.map((rule) => peek.call(backend, key, rule, o))))
    return all.then(
      (results) =>
        areResults(results, list.length)
          ? decide(list, results, 0, 'backend', undefined)
          : this.#failed(key, list, 0, this.#failure(malformed())),
      (err) => this.#failed(key, list, 0, err),
    )
  }

  /**
   * Forgets `identity` under every rule (for example after a successful login). Rejects on backend
   * failure. Needs a backend with `reset`.
   */
  reset(identity: string, options?: ScopeOptions): Promise<void> {
    let key: string | Promise<string>
    const backend = this.backend
    try {
      if (this.#closed) throw this.#closedError()
      key = this.#key(identity, options?.scope)
      if (typeof backend.reset !== 'function') throw missing(backend, 'reset', 'reset()')
    } catch (err) {
      return Promise.reject(err)
    }
    const reset = backend.reset as NonNullable<Backend['reset']>
    return Promise.resolve(key)
      .then((k) => this.#call('reset', (o) => reset.call(backend, k, o)))
      .catch((err) => {
        throw this.#wrap(err)
      })
  }

  /**
   * Decides like {@link check} (charging `cost` when admitted), and returns a {@link Reservation}: the
   * decision, plus `settle(actualCost)` and `cancel()` to charge what the request really cost once it
   * is known (an LLM's tokens, a query's cost, whether the response counts at all). Breaker, timeout,
   * `onBackendError` and events are those of `check` (the `'decision'` event says `'reserve'`).
   * Needs a backend with `adjust` (MemoryBackend, SQLiteBackend, PostgresBackend, RedisBackend).
   *
   * @example
   * ```ts
   * const r = await limiter.reserve(apiKey, '100000/day', { cost: 4000 }) // the most a reply may use
   * if (!r.allowed) return tooManyRequests(r.retryAfterMs)
   * const reply = await llm.complete(prompt, { maxTokens: 4000 })
   * await r.settle(reply.usage.totalTokens)                                // refunds what was not used
   * ```
   */
  reserve(identity: string, rules: RulesInput | RuleSet, options?: CheckOptions): Promise<Reservation> {
    let list: readonly Rule[]
    let key: string | Promise<string>
    let cost = 1
    try {
      if (this.#closed) throw this.#closedError()
      list = this.#parse(rules).rules
      let scope: string | undefined
      if (options !== undefined) {
        if (options.cost !== undefined) cost = checkPositiveCost('core', options.cost, COST_HINT)
        scope = options.scope
      }
      key = this.#key(identity, scope)
      if (list.length > 1 && !this.#canCheckAll())
        throw missing(this.backend, 'checkAndIncrementAll', 'checking several rules at once')
      if (!canAdjust(this.backend)) throw missing(this.backend, 'adjust', 'reserve()')
    } catch (err) {
      return Promise.reject(err)
    }
    const reserved =
      typeof key === 'string' ? this.#reserve(key, list, cost) : key.then((k) => this.#reserve(k, list, cost))
    if (!this.#watchDecisions) return reserved
    const mode = options?.mode === 'shadow' ? 'shadow' : 'enforce'
    return reserved.then((r) => {
      this.#emit('decision', {
        operation: 'reserve',
        decision: r,
        identity,
        scope: options?.scope,
        mode,
        backend: this.#kind,
      })
      return r
    })
  }

  /** {@link reserve} once the key is known. */
  #reserve(key: string, list: readonly Rule[], cost: number): Promise<Reservation> {
    const sync = this.#sync
    if (sync !== undefined && this.#onFastPath(sync)) {
      const start = this.#watchSyncCalls ? performance.now() : -1
      try {
        const results = decideSync(sync, key, list, cost)
        if (results !== undefined) {
          if (!areResults(results, list.length)) throw malformed()
          if (start >= 0) this.#called('check', start, true)
          return Promise.resolve(this.#reservation(key, list, cost, results, 'backend', undefined))
        }
      } catch (err) {
        if (start >= 0) this.#called('check', start, true, this.#wrap(err))
        return this.#failed(key, list, cost, err).then((d) => this.#reservation(key, list, cost, d))
      }
    }
    const backend = this.backend
    return this.#call('check', (o) => decideAsync(backend, key, list, cost, o)).then(
      (results) =>
        areResults(results, list.length)
          ? this.#reservation(key, list, cost, results, 'backend', undefined)
          : this.#failed(key, list, cost, this.#failure(malformed())).then((d) =>
              this.#reservation(key, list, cost, d),
            ),
      (err) => this.#failed(key, list, cost, err).then((d) => this.#reservation(key, list, cost, d)),
    )
  }

  /**
   * A reservation from the store's results, or from a decision the policy or the fallback made (a
   * fallback's charge is settled on the fallback, without `atMs`: its results are not at hand).
   */
  #reservation(
    key: string,
    list: readonly Rule[],
    cost: number,
    from: readonly BackendResult[] | Decision,
    source: 'backend' | 'fallback' = 'backend',
    error: FastlimitError | undefined = undefined,
  ): Reservation {
    let decision: Decision
    let charges: Charge[] | undefined
    let target: Backend | undefined
    if (Array.isArray(from)) {
      const results = from as readonly BackendResult[]
      decision =
        list.length === 1
          ? decideOne(list, results[0] as BackendResult, cost, source, error)
          : decide(list, results, cost, source, error)
      if (decision.allowed) {
        target = this.backend
        charges = new Array(results.length)
        for (let i = 0; i < results.length; i++) charges[i] = chargeOf(cost, results[i] as BackendResult)
      }
    } else {
      decision = from as Decision
      if (decision.allowed && decision.source === 'fallback') {
        target = (this.#policy as { readonly fallback: Backend }).fallback
        charges = decision.rules.map((r) => ({ cost, resetMs: r.resetMs }))
      }
    }
    return new ReservationImpl(decision, this.#settler, target, key, list, charges) as unknown as Reservation
  }

  /** How a {@link ReservationImpl} reaches the store: one function per limiter, not one per reservation. */
  readonly #settler: Settler = (target, key, list, delta, charges) =>
    this.#adjust(target, key, list, delta, charges)

  /**
   * Gives back `cost` units to `identity` under every rule, for a caller that kept no
   * {@link Reservation} (a job queue, another process): as `settle` refunds, but with no record of the
   * charge, so it is trusted to refund only what was charged. Each bucket gives back up to `cost` out
   * of what it holds now, newest first (the current window, the latest log entries, the meter's
   * level), never above its capacity; a charge whose window has passed is not found. Resolves
   * `'adjusted'`, or `'failed'` when the store fails (rejects under `onBackendError: 'throw'`).
   * Needs a backend with `adjust`.
   */
  refund(
    identity: string,
    rules: RulesInput | RuleSet,
    cost: number,
    options?: ScopeOptions,
  ): Promise<Settlement> {
    let list: readonly Rule[]
    let key: string | Promise<string>
    try {
      if (this.#closed) throw this.#closedError()
      list = this.#parse(rules).rules
      checkPositiveCost('core', cost, ': e.g. refund(user, rules, 5)')
      key = this.#key(identity, options?.scope)
      if (!canAdjust(this.backend)) throw missing(this.backend, 'adjust', 'refund()')
    } catch (err) {
      return Promise.reject(err)
    }
    const backend = this.backend
    return typeof key === 'string'
      ? this.#adjust(backend, key, list, -cost, undefined)
      : key.then((k) => this.#adjust(backend, k, list, -cost, undefined))
  }

  /**
   * Adjusts the charge of a key on `target`: the backend through its fast path, breaker and deadline,
   * or the fallback bounded by `timeoutMs`. A failure resolves `'failed'` (rejects under `'throw'`).
   */
  #adjust(
    target: Backend,
    key: string,
    list: readonly Rule[],
    delta: number,
    charges: readonly Charge[] | undefined,
  ): Promise<Settlement> {
    if (this.#closed) return Promise.reject(this.#closedError())
    if (!canAdjust(target)) {
      return this.#adjustFailed(
        missing(target, 'adjust', 'settling a reservation on the fallback'),
        delta,
        list,
      )
    }
    const sync = isSyncBackend(target) ? target : undefined
    if (sync?.adjustSync !== undefined) {
      const start = target === this.backend && this.#watchSyncCalls ? performance.now() : -1
      try {
        const results = sync.adjustSync(key, list, delta, charges)
        if (results !== undefined) {
          const out = adjusted(results, delta, list)
          if (start >= 0) this.#called('adjust', start, true)
          return Promise.resolve(out)
        }
      } catch (err) {
        if (start >= 0) this.#called('adjust', start, true, this.#wrap(err))
        return this.#adjustFailed(err, delta, list)
      }
    }
    const adjust = target.adjust as NonNullable<Backend['adjust']>
    if (target === this.backend) {
      return this.#call('adjust', (o) => adjust.call(target, key, list, delta, charges, o)).then(
        (results) => {
          try {
            return adjusted(results, delta, list)
          } catch (err) {
            return this.#adjustFailed(this.#failure(err), delta, list)
          }
        },
        (err) => this.#adjustFailed(err, delta, list),
      )
    }
    // The fallback: bounded by timeoutMs, outside the breaker (as its decisions are).
    let call: Promise<BackendResult[]>
    try {
      call = adjust.call(target, key, list, delta, charges, { deadline: Date.now() + this.timeoutMs })
    } catch (err) {
      return this.#adjustFailed(err, delta, list)
    }
    return new Promise<Settlement>((resolve) => {
      const pending = this.#deadlines.add(() => {
        resolve(
          this.#adjustFailed(
            new FastlimitError(
              'ERR_FASTLIMIT_TIMEOUT',
              `[fastlimit] [core] The fallback did not answer within ${this.timeoutMs} ms (timeoutMs).`,
            ),
            delta,
            list,
          ),
        )
      })
      call.then(
        (r) => {
          if (!pending.settle()) return
          try {
            resolve(adjusted(r, delta, list))
          } catch (err) {
            resolve(this.#adjustFailed(err, delta, list))
          }
        },
        (err) => {
          if (pending.settle()) resolve(this.#adjustFailed(err, delta, list))
        },
      )
    })
  }

  /**
   * A failed adjustment: argument, configuration and closed errors reject; other failures are reported
   * and resolve `'failed'` (reject under `'throw'`). Failures of #call come wrapped and counted by the
   * breaker already; others are wrapped here.
   */
  #adjustFailed(err: unknown, delta: number, list: readonly Rule[]): Promise<Settlement> {
    const error = this.#wrap(err)
    const code = error.code
    if (
      code === 'ERR_FASTLIMIT_CLOSED' ||
      code === 'ERR_FASTLIMIT_ARGUMENT' ||
      code === 'ERR_FASTLIMIT_CONFIG'
    )
      return Promise.reject(error)
    this.#report(error)
    if (this.#policy === 'throw') return Promise.reject(error)
    return Promise.resolve(settlement('failed', delta, list, undefined, error))
  }

  /**
   * Takes one of `limit` slots of `identity` (a concurrency, or in-flight, limit: at most `limit`
   * holders at once), or refuses. Release the lease when the work ends; a holder that never does (a
   * crash, a hang) loses its slot after `leaseMs`. Being at the limit is `allowed: false` with
   * `retryAfterMs` until the earliest lease expires, never an error.
   *
   * Each lease has a token of its own, so a `release()` after the lease expired (or a second one)
   * never frees another holder's slot. Leases are kept apart from rate-limit state: the same identity
   * may have rules for `check` and a concurrency limit. Breaker, timeout and `onBackendError` as for
   * `check`: `'fail-open'` gives an allowed lease that holds nothing (its `release()` does nothing),
   * `'fail-closed'` a refused one, `{ fallback }` a lease on the fallback (released there), `'throw'`
   * rejects. An acquire that timed out but that the store applied late is released as soon as its
   * answer arrives. Listeners of `'lease'` hear each acquire and release. Needs a backend with
   * `acquire` and `release` (MemoryBackend, SQLiteBackend, RedisBackend).
   *
   * @example
   * ```ts
   * const lease = await limiter.acquire(apiKey, { limit: 20, leaseMs: 60_000 })
   * if (!lease.allowed) return tooManyRequests(lease.retryAfterMs)
   * try {
   *   return await handle(request)
   * } finally {
   *   await lease.release()
   * }
   * ```
   * @throws ConfigError (as a rejection) for bad options, or a backend without `acquire`
   */
  acquire(identity: string, options: AcquireOptions): Promise<Lease> {
    let slots: SlotConfig
    let key: string | Promise<string>
    try {
      if (this.#closed) throw this.#closedError()
      slots = slotConfig(options)
      key = this.#key(identity, options.scope)
      if (!canLease(this.backend)) throw missing(this.backend, 'acquire', 'acquire()')
      const policy = this.#policy
      if (typeof policy === 'object' && !canLease(policy.fallback))
        throw missing(policy.fallback, 'acquire', 'acquire() with this fallback')
    } catch (err) {
      return Promise.reject(err)
    }
    const token = newToken()
    // Events cost nothing while nobody listens: no closure, no promise hop.
    const observe =
      (this.#listeners.lease?.length ?? 0) === 0
        ? undefined
        : (lease: Lease, operation: 'acquire' | 'release'): void => {
            const scope = options.scope
            const mode = options.mode === 'shadow' ? 'shadow' : 'enforce'
            this.#emit('lease', { operation, lease, identity, scope, mode, backend: this.#kind })
          }
    const lease =
      typeof key === 'string'
        ? this.#acquire(key, slots, token, observe)
        : key.then((k) => this.#acquire(k, slots, token, observe))
    if (observe === undefined) return lease
    return lease.then((l) => {
      observe(l, 'acquire')
      return l
    })
  }

  /** {@link acquire} once the key is known. */
  #acquire(
    key: string,
    slots: SlotConfig,
    token: string,
    observe: ((lease: Lease, operation: 'release') => void) | undefined,
  ): Promise<Lease> {
    const backend = this.backend
    const make = (r: AcquireResult, source: 'backend' | 'fallback', on: Backend, error?: FastlimitError) => {
      if (observe === undefined)
        return new LeaseImpl(slots, source, r, error, () => this.#release(on, key, token))
      let lease: LeaseImpl | undefined
      lease = new LeaseImpl(slots, source, r, error, () =>
        this.#release(on, key, token).then(() => observe(lease as LeaseImpl, 'release')),
      )
      return lease
    }
    const sync = this.#sync
    if (sync?.acquireSync !== undefined) {
      const start = this.#watchSyncCalls ? performance.now() : -1
      try {
        const r = sync.acquireSync(key, slots, token)
        if (r !== undefined) {
          if (!isAcquireResult(r)) throw malformedLease()
          if (start >= 0) this.#called('acquire', start, true)
          return Promise.resolve(make(r, 'backend', backend))
        }
      } catch (err) {
        if (start >= 0) this.#called('acquire', start, true, this.#wrap(err))
        return this.#leaseFailed(key, slots, token, err, make)
      }
    }
    if (typeof backend.acquire !== 'function') return Promise.reject(missing(backend, 'acquire', 'acquire()'))
    const acquire = backend.acquire
    // Set once the limiter gave up on the call: a late grant is then released at once.
    let gaveUp = false
    return this.#call('acquire', (o) => {
      const call = acquire.call(backend, key, slots, token, o)
      Promise.resolve(call).then(
        (r) => {
          if (gaveUp && isAcquireResult(r) && r.acquired) void this.#release(backend, key, token, true)
        },
        () => undefined,
      )
      return call
    }).then(
      (r) =>
        isAcquireResult(r)
          ? make(r, 'backend', backend)
          : this.#leaseFailed(key, slots, token, this.#failure(malformedLease()), make),
      (err) => {
        gaveUp = true
        return this.#leaseFailed(key, slots, token, err, make)
      },
    )
  }

  /** The policy's lease after a failed acquire (as {@link #failed} for a decision). */
  #leaseFailed(
    key: string,
    slots: SlotConfig,
    token: string,
    err: unknown,
    make: (r: AcquireResult, source: 'fallback', on: Backend, error: FastlimitError) => Lease,
  ): Promise<Lease> {
    const error = this.#wrap(err)
    const code = error.code
    if (
      code === 'ERR_FASTLIMIT_CLOSED' ||
      code === 'ERR_FASTLIMIT_ARGUMENT' ||
      code === 'ERR_FASTLIMIT_CONFIG'
    )
      return Promise.reject(error)
    this.#report(error)
    const policy = this.#policy
    if (policy === 'throw') return Promise.reject(error)
    if (typeof policy === 'object') {
      const fallback = policy.fallback as SyncBackend
      try {
        const r =
          typeof fallback.acquireSync === 'function' ? fallback.acquireSync(key, slots, token) : undefined
        if (r !== undefined) {
          if (!isAcquireResult(r)) throw malformedLease()
          return Promise.resolve(make(r, 'fallback', fallback, error))
        }
      } catch (fallbackErr) {
        return Promise.reject(this.#wrap(fallbackErr))
      }
      return this.#bounded(
        () =>
          (fallback.acquire as NonNullable<Backend['acquire']>).call(fallback, key, slots, token, {
            deadline: Date.now() + this.timeoutMs,
          }),
        error,
      ).then((r) =>
        isAcquireResult(r)
          ? make(r, 'fallback', fallback, error)
          : Promise.reject(this.#wrap(malformedLease())),
      )
    }
    const open = policy === 'fail-open'
    return Promise.resolve(
      new LeaseImpl(
        slots,
        'policy',
        { allowed: open, retryAfterMs: open ? 0 : FAIL_CLOSED_RETRY_MS },
        error,
        undefined,
      ),
    )
  }

  /**
   * Releases a lease on `target` (the backend through its fast path, breaker and deadline, or the
   * fallback bounded by `timeoutMs`). A failure is reported and resolves (rejects under `'throw'`);
   * `quiet` (the release of a late grant) reports nothing and never rejects.
   */
  #release(target: Backend, key: string, token: string, quiet = false): Promise<void> {
    const sync = target as SyncBackend
    if (typeof sync.releaseSync === 'function') {
      const start = target === this.backend && this.#watchSyncCalls ? performance.now() : -1
      try {
        if (sync.releaseSync(key, token) !== undefined) {
          if (start >= 0) this.#called('release', start, true)
          return RESOLVED
        }
      } catch (err) {
        if (start >= 0) this.#called('release', start, true, this.#wrap(err))
        return this.#releaseFailed(err, quiet)
      }
    }
    const failed = (err: unknown): Promise<void> => this.#releaseFailed(err, quiet)
    const release = target.release as NonNullable<Backend['release']>
    if (target === this.backend) {
      return this.#call('release', (o) => release.call(target, key, token, o)).then(() => undefined, failed)
    }
    return this.#bounded(
      () => release.call(target, key, token, { deadline: Date.now() + this.timeoutMs }),
      undefined,
    ).then(() => undefined, failed)
  }

  /** A failed release: reported, and resolved (rejected under `'throw'`); `quiet` reports nothing. */
  #releaseFailed(err: unknown, quiet: boolean): Promise<void> {
    const error = this.#wrap(err)
    // A closed store holds nothing to free.
    if (quiet || error.code === 'ERR_FASTLIMIT_CLOSED') return RESOLVED
    if (error.code !== 'ERR_FASTLIMIT_ARGUMENT' && error.code !== 'ERR_FASTLIMIT_CONFIG') this.#report(error)
    return this.#policy === 'throw' ? Promise.reject(error) : RESOLVED
  }

  /** A call to the fallback, bounded by `timeoutMs` and outside the breaker (as its decisions are). */
  #bounded<T>(call: () => Promise<T>, cause: FastlimitError | undefined): Promise<T> {
    let promise: Promise<T>
    try {
      promise = call()
    } catch (err) {
      return Promise.reject(this.#wrap(err))
    }
    return new Promise<T>((resolve, reject) => {
      const pending = this.#deadlines.add(() => {
        reject(
          new FastlimitError(
            'ERR_FASTLIMIT_TIMEOUT',
            `[fastlimit] [core] The fallback did not answer within ${this.timeoutMs} ms (timeoutMs).`,
            cause === undefined ? undefined : { cause },
          ),
        )
      })
      Promise.resolve(promise).then(
        (r) => {
          if (pending.settle()) resolve(r)
        },
        (err) => {
          if (pending.settle()) reject(this.#wrap(err))
        },
      )
    })
  }

  /**
   * Waits until the rules admit `cost` for `identity`, then resolves with the admitting decision (the
   * cost is charged then, as by `check`). Denied, it sleeps the exact `retryAfterMs` the store gave and
   * asks again: no polling. Waiters of one identity, scope and rules in this process are served first
   * in, first out; every admission is a real `check`, so processes sharing a store never over-admit.
   *
   * Rejects with `ERR_FASTLIMIT_WAIT_TOO_LONG` when the cost can never pass or cannot pass within
   * `maxWaitMs` (decided as soon as that is known), `ERR_FASTLIMIT_OVERLOADED` when its queue already
   * holds `maxQueue` waiters, `signal.reason` when the signal aborts, and `ERR_FASTLIMIT_CLOSED` when
   * the limiter closes. When the store fails, the policy decides: `'fail-open'` admits,
   * `'fail-closed'` keeps waiting (asking again after its `retryAfterMs`) up to `maxWaitMs`, `'throw'`
   * rejects with the error, `{ fallback }` waits on the fallback's decisions.
   *
   * @example
   * ```ts
   * await limiter.wait('api.example.com', '10/s', { maxWaitMs: 30_000 })
   * await fetch('https://api.example.com/items')
   * ```
   */
  wait(identity: string, rules: RulesInput | RuleSet, options?: WaitOptions): Promise<Decision> {
    if (this.#closed) return Promise.reject(this.#closedError())
    this.#waits ??= new Waits(this)
    return this.#waits.wait(identity, rules, options)
  }

  /**
   * Stops the limiter: pending `wait`s reject with `ERR_FASTLIMIT_CLOSED` and their timer is cleared.
   * Closes the backend only if the limiter created it (the default MemoryBackend); a backend you passed
   * in is yours to close.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#waits?.close(this.#closedError())
    if (this.#ownsBackend) await this.backend.close?.()
  }

  #closedError(): FastlimitError {
    return new FastlimitError(
      'ERR_FASTLIMIT_CLOSED',
      '[fastlimit] [core] This FastLimit was closed; create a new one.',
    )
  }

  /**
   * Calls the store through the breaker and the cap on calls in flight, bounded by `timeoutMs`: a late
   * answer or failure after the timeout is ignored (the call carries its deadline, so the store
   * charges nothing past it), and a backend that throws instead of rejecting is treated as a rejection.
   * Failures come back already wrapped and counted ({@link #failure}).
   */
  #call<T>(operation: BackendCallEvent['operation'], call: (options: CallOptions) => Promise<T>): Promise<T> {
    const refused = this.#admit()
    if (refused !== undefined) return Promise.reject(refused)
    const probe = this.#state !== 'closed'
    const start = this.#watchCalls ? performance.now() : -1
    this.#inFlight++
    let promise: Promise<T>
    try {
      promise = call({ deadline: Date.now() + this.timeoutMs })
    } catch (err) {
      promise = Promise.reject(err)
    }
    return new Promise<T>((resolve, reject) => {
      const pending = this.#deadlines.add(() => {
        const error = this.#failure(
          new FastlimitError(
            'ERR_FASTLIMIT_TIMEOUT',
            `[fastlimit] [core] The backend did not answer within ${this.timeoutMs} ms (timeoutMs); onBackendError applies.`,
          ),
          probe,
        )
        if (start >= 0) this.#called(operation, start, false, error)
        reject(error)
      })
      Promise.resolve(promise).then(
        (value) => {
          this.#inFlight--
          if (pending.settle()) {
            this.#success(probe)
            if (start >= 0) this.#called(operation, start, false)
            resolve(value)
          }
        },
        (err) => {
          this.#inFlight--
          if (pending.settle()) {
            const error = this.#failure(err, probe)
            if (start >= 0) this.#called(operation, start, false, error)
            reject(error)
          }
        },
      )
    })
  }

  /** The reason not to call the store now (open breaker, too many in flight), or undefined to call it. */
  #admit(): FastlimitError | undefined {
    if (this.#state !== 'closed') {
      if (this.#probing || performance.now() < this.#openUntil) {
        return new FastlimitError(
          'ERR_FASTLIMIT_CIRCUIT_OPEN',
          '[fastlimit] [core] The circuit breaker is open after repeated backend failures: the store was not ' +
            'called and onBackendError applies. It lets one call through to test the store every breaker.openMs.',
        )
      }
      // Half-open: this call is the one probe.
      this.#probing = true
      if (this.#state !== 'half-open') {
        this.#state = 'half-open'
        this.#emit('breaker', { state: 'half-open', backend: this.backend })
      }
    }
    if (this.#inFlight >= this.maxInFlight) {
      if (this.#probing && this.#state === 'half-open') this.#probing = false
      return new FastlimitError(
        'ERR_FASTLIMIT_OVERLOADED',
        `[fastlimit] [core] ${this.#inFlight} backend calls are already unanswered (maxInFlight ${this.maxInFlight}): ` +
          'the store was not called and onBackendError applies.',
      )
    }
    return undefined
  }

  #success(probe: boolean): void {
    this.#failures = 0
    if (probe && this.#state === 'half-open') {
      this.#probing = false
      this.#state = 'closed'
      this.#emit('breaker', { state: 'closed', backend: this.backend })
    }
  }

  /** Wraps a failure of a store call and counts it towards opening the breaker. */
  #failure(err: unknown, probe = false): FastlimitError {
    const error = this.#wrap(err)
    const code = error.code
    if (
      code === 'ERR_FASTLIMIT_ARGUMENT' ||
      code === 'ERR_FASTLIMIT_CONFIG' ||
      code === 'ERR_FASTLIMIT_CLOSED'
    ) {
      if (probe) this.#probing = false
      return error
    }
    // A full store answered: it is reachable, and it still decides denials. Opening the breaker would
    // hand clients at their limit to the policy, so it counts as an answer, not a failure.
    if (code === 'ERR_FASTLIMIT_STORE_FULL') {
      this.#success(probe)
      return error
    }
    const breaker = this.#breaker
    if (breaker === undefined) return error
    this.#failures++
    if (probe && this.#state === 'half-open') {
      this.#probing = false
      this.#open(breaker, error)
    } else if (this.#state === 'closed' && this.#failures >= breaker.failures) {
      this.#open(breaker, error)
    }
    return error
  }

  #open(breaker: Required<BreakerOptions>, cause: FastlimitError): void {
    this.#state = 'open'
    this.#openUntil = performance.now() + breaker.openMs
    this.#emit('breaker', { state: 'open', cause, backend: this.backend })
    const backend = this.backend
    if (typeof backend.reconnect === 'function') {
      try {
        backend.reconnect(cause)
      } catch {
        // The breaker is open either way; the next probe tells whether the store is back.
      }
    }
  }

  #wrap(err: unknown): FastlimitError {
    if (err instanceof FastlimitError) return err
    const message = err instanceof Error ? err.message : String(err)
    return new FastlimitError('ERR_FASTLIMIT_BACKEND', `[fastlimit] [core] The backend failed: ${message}`, {
      cause: err,
    })
  }

  /** Reports a failure (onError, listeners, the once-per-process warning of a full store). */
  #report(error: FastlimitError): void {
    const code = error.code
    if (code === 'ERR_FASTLIMIT_CIRCUIT_OPEN' || code === 'ERR_FASTLIMIT_OVERLOADED') return
    const onError = this.#onError
    if (onError !== undefined) {
      try {
        onError(error)
      } catch {
        // A throwing logger must not turn a decision into a crash.
      }
    }
    const listeners = this.#listeners.error
    if (listeners !== undefined && listeners.length > 0) this.#emit('error', error)
    else if (onError === undefined && code === 'ERR_FASTLIMIT_STORE_FULL' && !warnedStoreFull) {
      warnedStoreFull = true
      console.warn(
        `${error.message} Limits are not kept while the store is full (onBackendError applies); ` +
          'pass onError to FastLimit to handle this yourself. (Warned once per process.)',
      )
    }
  }

  #failed(key: string, rules: readonly Rule[], cost: number, err: unknown): Promise<Decision> {
    const error = this.#wrap(err)
    if (
      error.code === 'ERR_FASTLIMIT_CLOSED' ||
      error.code === 'ERR_FASTLIMIT_ARGUMENT' ||
      error.code === 'ERR_FASTLIMIT_CONFIG'
    )
      return Promise.reject(error)
    this.#report(error)
    const policy = this.#policy
    if (policy === 'throw') return Promise.reject(error)
    if (typeof policy === 'object') return this.#fallback(policy.fallback, key, rules, cost, error)
    const open = policy === 'fail-open'
    // The store was not reached: nothing is known of the client's standing, and nothing is invented.
    const results = rules.map((rule) => ({
      allowed: open,
      limit: rule.burst ?? rule.limit,
      remaining: undefined,
      resetMs: undefined,
      retryAfterMs: open ? 0 : FAIL_CLOSED_RETRY_MS,
    }))
    return Promise.resolve(
      new MultiDecision(
        open,
        open ? 'fail-open' : 'fail-closed',
        'policy',
        results[0] as Standing,
        cost,
        rules[0] as Rule,
        rules,
        results,
        error,
      ) as unknown as Decision,
    )
  }

  /** Decides on the fallback backend (its sync path when it has one), bounded by `timeoutMs`. */
  #fallback(
    fallback: Backend,
    key: string,
    rules: readonly Rule[],
    cost: number,
    error: FastlimitError,
  ): Promise<Decision> {
    const done = (results: unknown): Decision | Promise<Decision> =>
      areResults(results, rules.length)
        ? decide(rules, results, cost, 'fallback', error)
        : Promise.reject(this.#wrap(malformed()))
    let results: BackendResult[] | undefined
    try {
      if (isSyncBackend(fallback)) results = decideSync(fallback, key, rules, cost)
    } catch (fallbackErr) {
      return Promise.reject(this.#wrap(fallbackErr))
    }
    if (results !== undefined) return Promise.resolve(done(results))
    let call: Promise<BackendResult[]>
    try {
      call = decideAsync(fallback, key, rules, cost, { deadline: Date.now() + this.timeoutMs })
    } catch (fallbackErr) {
      return Promise.reject(this.#wrap(fallbackErr))
    }
    return new Promise<Decision>((resolve, reject) => {
      const pending = this.#deadlines.add(() => {
        reject(
          new FastlimitError(
            'ERR_FASTLIMIT_TIMEOUT',
            `[fastlimit] [core] Neither the backend nor the fallback answered within ${this.timeoutMs} ms (timeoutMs).`,
            { cause: error },
          ),
        )
      })
      call.then(
        (r) => {
          if (pending.settle()) resolve(done(r))
        },
        (fallbackErr) => {
          if (pending.settle()) reject(this.#wrap(fallbackErr))
        },
      )
    })
  }
}

/** The settlement of an adjustment the store answered; throws when the answer is malformed. */
function adjusted(results: unknown, delta: number, list: readonly Rule[]): Settlement {
  if (!areResults(results, list.length)) throw malformed()
  return settlement('adjusted', delta, list, results)
}

/** Whether a backend can adjust (a reservation's settle, a refund). */
function canAdjust(backend: Backend): boolean {
  return (
    typeof backend.adjust === 'function' || typeof (backend as Partial<SyncBackend>).adjustSync === 'function'
  )
}

/** What a reservation keeps of one bucket's admitting result. */
function chargeOf(cost: number, r: BackendResult): Charge {
  const at = r.atMs
  return typeof at === 'number' && Number.isSafeInteger(at)
    ? { cost, resetMs: r.resetMs, atMs: at }
    : { cost, resetMs: r.resetMs }
}

const NO_RULES: readonly RuleResult[] = Object.freeze([])

function settlement(
  outcome: SettlementOutcome,
  delta: number,
  rules?: readonly Rule[],
  results?: readonly BackendResult[],
  error?: FastlimitError,
): Settlement {
  const out: { -readonly [K in keyof Settlement]: Settlement[K] } = {
    outcome,
    delta,
    rules: NO_RULES,
  }
  if (rules !== undefined && results !== undefined) {
    const list: RuleResult[] = new Array(rules.length)
    for (let i = 0; i < rules.length; i++) list[i] = ruleResult(rules[i] as Rule, results[i] as BackendResult)
    out.rules = Object.freeze(list)
  }
  if (error !== undefined) out.error = error
  return out
}

/** Checks and validates the breaker option. */
function breakerOptions(value: unknown): Required<BreakerOptions> | undefined {
  if (value === false) return undefined
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(
      `[fastlimit] [core] breaker must be an object or false, got ${show(value)}. For example { failures: 5, openMs: 1000 }.`,
    )
  }
  const o = value as Record<string, unknown>
  for (const key of Object.keys(o)) {
    if (key !== 'failures' && key !== 'openMs') {
      throw new ConfigError(
        `[fastlimit] [core] Unknown breaker option ${show(key)}: it takes failures and openMs.`,
      )
    }
  }
  const failures = o.failures ?? DEFAULT_BREAKER.failures
  const openMs = o.openMs ?? DEFAULT_BREAKER.openMs
  if (
    typeof failures !== 'number' ||
    !Number.isSafeInteger(failures) ||
    failures < 1 ||
    failures > 1_000_000
  ) {
    throw new ConfigError(
      `[fastlimit] [core] breaker.failures must be a whole number from 1 to 1000000, got ${show(failures)}. For example 5.`,
    )
  }
  checkTimerMs('core', 'breaker.openMs', openMs as number, false, '1000')
  return { failures, openMs: openMs as number }
}

/** Decides `cost` on a synchronous backend, or undefined when it cannot decide without waiting. */
function decideSync(
  backend: SyncBackend,
  key: string,
  rules: readonly Rule[],
  cost: number,
): BackendResult[] | undefined {
  if (cost === 0) {
    const peekSync = backend.peekSync
    if (peekSync === undefined) return undefined
    const out: BackendResult[] = []
    for (const rule of rules) {
      const r = peekSync.call(backend, key, rule)
      if (r === undefined) return undefined
      out.push(r)
    }
    return out
  }
  if (rules.length === 1) {
    const r = backend.checkAndIncrementSync(key, rules[0] as Rule, cost)
    return r === undefined ? undefined : [r]
  }
  return backend.checkAndIncrementAllSync?.call(backend, key, rules, cost)
}

/** Decides `cost` (0: peek) on a backend's asynchronous methods. */
function decideAsync(
  backend: Backend,
  key: string,
  rules: readonly Rule[],
  cost: number,
  options: CallOptions,
): Promise<BackendResult[]> {
  if (cost === 0) {
    const peek = backend.peek
    if (peek === undefined) return Promise.reject(missing(backend, 'peek', 'peek() on the fallback'))
    return Promise.all(rules.map((rule) => peek.call(backend, key, rule, options)))
  }
  if (rules.length === 1)
    return backend.checkAndIncrement(key, rules[0] as Rule, cost, options).then((r) => [r])
  const all = backend.checkAndIncrementAll
  if (all === undefined)
    return Promise.reject(missing(backend, 'checkAndIncrementAll', 'checking several rules on the fallback'))
  return all.call(backend, key, rules, cost, options)
}

/** Whether a value implements the one required method of {@link Backend}. */
function isBackend(value: unknown): value is Backend {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Record<string, unknown>).checkAndIncrement === 'function'
  )
}

/** Whether a backend's answer has the shape of a {@link BackendResult}. */
function isResult(r: unknown): r is BackendResult {
  if (typeof r !== 'object' || r === null) return false
  const x = r as BackendResult
  return (
    typeof x.allowed === 'boolean' &&
    typeof x.limit === 'number' &&
    typeof x.remaining === 'number' &&
    typeof x.resetMs === 'number' &&
    typeof x.retryAfterMs === 'number'
  )
}

function areResults(rs: unknown, n: number): rs is BackendResult[] {
  if (!Array.isArray(rs) || rs.length !== n) return false
  for (let i = 0; i < n; i++) if (!isResult(rs[i])) return false
  return true
}

function malformedLease(): FastlimitError {
  return new FastlimitError(
    'ERR_FASTLIMIT_BACKEND',
    '[fastlimit] [core] The backend answered acquire with something that is not an AcquireResult (acquired, limit, ' +
      'holders, expiresMs, retryAfterMs): check the backend with backendConformance from @fastlimit/core/testing.',
  )
}

function malformed(): FastlimitError {
  return new FastlimitError(
    'ERR_FASTLIMIT_BACKEND',
    '[fastlimit] [core] The backend answered with something that is not a BackendResult (allowed, limit, ' +
      'remaining, resetMs, retryAfterMs) per bucket: check the backend with backendConformance from @fastlimit/core/testing.',
  )
}

/** Validates a cost: a positive safe integer. */
export function checkCost(cost: unknown): number {
  return checkPositiveCost('core', cost, COST_HINT)
}

/** A rule's figures as a decision carries them: a store's result, or a policy's (nothing known). */
interface Standing {
  readonly allowed: boolean
  readonly limit: number
  readonly remaining: number | undefined
  readonly resetMs: number | undefined
  readonly retryAfterMs: number
}

/**
 * The one implementation of {@link Decision}. `rules` is built on first read, so the hot path of a
 * check allocates a single object.
 */
class DecisionImpl {
  // Declared, not defined: the constructor assigns each once (no field initializer pass).
  declare readonly allowed: boolean
  declare readonly reason: DecisionReason
  declare readonly source: 'backend' | 'fallback' | 'policy'
  declare readonly limit: number
  declare readonly remaining: number | undefined
  declare readonly resetMs: number | undefined
  declare readonly retryAfterMs: number
  declare readonly cost: number
  declare readonly rule: Rule
  declare readonly error?: FastlimitError

  constructor(
    allowed: boolean,
    reason: DecisionReason,
    source: 'backend' | 'fallback' | 'policy',
    pick: Standing,
    cost: number,
    rule: Rule,
    error: FastlimitError | undefined,
  ) {
    this.allowed = allowed
    this.reason = reason
    this.source = source
    this.limit = pick.limit
    this.remaining = pick.remaining
    this.resetMs = pick.resetMs
    this.retryAfterMs = pick.retryAfterMs
    this.cost = cost
    this.rule = rule
    if (error !== undefined) this.error = error
  }

  /** A single rule's result is the decision itself. */
  get rules(): readonly RuleResult[] {
    return Object.freeze([ruleResult(this.rule, this)])
  }

  toJSON(): Omit<Decision, 'error'> & { error?: { code: string; message: string } } {
    return {
      allowed: this.allowed,
      reason: this.reason,
      source: this.source,
      limit: this.limit,
      remaining: this.remaining,
      resetMs: this.resetMs,
      retryAfterMs: this.retryAfterMs,
      cost: this.cost,
      rule: this.rule,
      rules: this.rules,
      ...(this.error ? { error: { code: this.error.code, message: this.error.message } } : {}),
    }
  }
}

// Promise.resolve(decision) and `await` look `then` up on every decision (is it a thenable?): found at once on
// the prototype, the lookup stops there instead of walking on through Object.prototype (about 200
// instructions a check). A decision is not a thenable, and says so.
Object.defineProperty(DecisionImpl.prototype, 'then', {
  value: undefined,
  writable: false,
  enumerable: false,
})

/** The decision of several rules, keeping every rule's result. */
class MultiDecision extends DecisionImpl {
  readonly #rules: readonly Rule[]
  readonly #results: readonly Standing[]
  #built: readonly RuleResult[] | undefined

  constructor(
    allowed: boolean,
    reason: DecisionReason,
    source: 'backend' | 'fallback' | 'policy',
    pick: Standing,
    cost: number,
    rule: Rule,
    rules: readonly Rule[],
    results: readonly Standing[],
    error: FastlimitError | undefined,
  ) {
    super(allowed, reason, source, pick, cost, rule, error)
    this.#rules = rules
    this.#results = results
  }

  override get rules(): readonly RuleResult[] {
    if (this.#built === undefined) {
      const results = this.#results
      this.#built = Object.freeze(this.#rules.map((rule, i) => ruleResult(rule, results[i] as Standing)))
    }
    return this.#built
  }
}

/** The decision of a single rule: the common case, with no array and no search. */
function decideOne(
  rules: readonly Rule[],
  r: BackendResult,
  cost: number,
  source: 'backend' | 'fallback',
  error: FastlimitError | undefined,
): Decision {
  return new DecisionImpl(
    r.allowed,
    reasonOf(r),
    source,
    r,
    cost,
    rules[0] as Rule,
    error,
  ) as unknown as Decision
}

/** The decision of the one rule of a set, from its result. */
function decideRule(rule: Rule, r: BackendResult, cost: number): Decision {
  return new DecisionImpl(r.allowed, reasonOf(r), 'backend', r, cost, rule, undefined) as unknown as Decision
}

/** Combines per-rule results into one decision: the most restrictive rule speaks. */
function decide(
  rules: readonly Rule[],
  results: readonly BackendResult[],
  cost: number,
  source: 'backend' | 'fallback',
  error: FastlimitError | undefined,
): Decision {
  const pick = mostRestrictive(results)
  const p = results[pick] as BackendResult
  return new MultiDecision(
    p.allowed,
    reasonOf(p),
    source,
    p,
    cost,
    rules[pick] as Rule,
    rules,
    results,
    error,
  ) as unknown as Decision
}

/** Adjusts a key's charge on the backend that holds it, through the limiter's policies. */
type Settler = (
  target: Backend,
  key: string,
  list: readonly Rule[],
  delta: number,
  charges: readonly Charge[] | undefined,
) => Promise<Settlement>

/**
 * The one implementation of {@link Reservation}: the decision's fields, and a settle that runs once.
 */
class ReservationImpl {
  declare readonly allowed: boolean
  declare readonly reason: DecisionReason
  declare readonly source: 'backend' | 'fallback' | 'policy'
  declare readonly limit: number
  declare readonly remaining: number | undefined
  declare readonly resetMs: number | undefined
  declare readonly retryAfterMs: number
  declare readonly cost: number
  declare readonly rule: Rule
  declare readonly error?: FastlimitError
  readonly #decision: Decision
  readonly #settler: Settler
  /** The backend holding the charge; undefined when nothing was charged (denied, or the policy decided). */
  readonly #target: Backend | undefined
  readonly #key: string
  readonly #list: readonly Rule[]
  readonly #charges: readonly Charge[] | undefined
  #settled = false

  constructor(
    decision: Decision,
    settler: Settler,
    target: Backend | undefined,
    key: string,
    list: readonly Rule[],
    charges: readonly Charge[] | undefined,
  ) {
    this.allowed = decision.allowed
    this.reason = decision.reason
    this.source = decision.source
    this.limit = decision.limit
    this.remaining = decision.remaining
    this.resetMs = decision.resetMs
    this.retryAfterMs = decision.retryAfterMs
    this.cost = decision.cost
    this.rule = decision.rule
    if (decision.error !== undefined) this.error = decision.error
    this.#decision = decision
    this.#settler = settler
    this.#target = target
    this.#key = key
    this.#list = list
    this.#charges = charges
  }

  /** Every rule's result, as the decision has it. */
  get rules(): Decision['rules'] {
    return this.#decision.rules
  }

  get settled(): boolean {
    return this.#settled
  }

  settle(actualCost: number): Promise<Settlement> {
    if (typeof actualCost !== 'number' || !Number.isSafeInteger(actualCost) || actualCost < 0) {
      return Promise.reject(
        new FastlimitError(
          'ERR_FASTLIMIT_ARGUMENT',
          `[fastlimit] [core] settle(actualCost): actualCost must be a whole number from 0 to 2^53 - 1, got ${show(actualCost)}.`,
        ),
      )
    }
    if (this.#settled) {
      return Promise.reject(
        new FastlimitError(
          'ERR_FASTLIMIT_ARGUMENT',
          '[fastlimit] [core] This reservation was already settled or cancelled: each settles once.',
        ),
      )
    }
    this.#settled = true
    const target = this.#target
    if (target === undefined) return Promise.resolve(settlement('skipped', 0))
    const delta = actualCost - this.cost
    if (delta === 0) return Promise.resolve(settlement('unchanged', 0))
    return this.#settler(target, this.#key, this.#list, delta, this.#charges)
  }

  cancel(): Promise<Settlement> {
    return this.settle(0)
  }

  toJSON(): unknown {
    return (this.#decision as unknown as { toJSON(): unknown }).toJSON()
  }
}
