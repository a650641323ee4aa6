// FastLimit: rules + keys + backend + error policy + timeout -> Decision.

import { ALGORITHMS } from './algorithms'
import { type Algorithm, type Backend, type BackendResult, isSyncBackend, type SyncBackend } from './backend'
import { Deadlines } from './deadline'
import { ConfigError, checkPositiveCost, checkTimerMs, FastlimitError, show } from './errors'
import { identityName, storageKey, validatePrefix } from './keys'
import { checkAllIn, checkIn, MemoryBackend, spaceOf } from './memory'
import { isRuleSet, parseRules, type Rule, type RuleSet, type RulesInput } from './rules'

/**
 * What to do when the backend fails or does not answer within `timeoutMs`:
 * - `'fail-open'`: admit the request (`reason: 'fail-open'`). Keeps the app up when the store is down.
 * - `'fail-closed'`: deny it (`reason: 'fail-closed'`, `retryAfterMs: 1000`). Protects what is behind.
 * - `'throw'`: reject the promise with the {@link FastlimitError}.
 * - `{ fallback }`: decide with another backend, typically a `MemoryBackend` (`source: 'fallback'`):
 *   per-process limits until the store is back.
 */
export type BackendErrorPolicy = 'fail-open' | 'fail-closed' | 'throw' | { readonly fallback: Backend }

/** Options of {@link FastLimit}. */
export interface FastLimitOptions {
  /**
   * Where state lives.
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
   * What a backend failure or timeout gives. See {@link BackendErrorPolicy}.
   * @default 'fail-open'
   */
  onBackendError?: BackendErrorPolicy
  /**
   * The most milliseconds any backend call may take before it counts as failed (then
   * `onBackendError` applies). Not applied to backends with a synchronous fast path
   * ({@link SyncBackend}: `MemoryBackend`, `SQLiteBackend`), whose calls cannot hang.
   * @default 1000
   */
  timeoutMs?: number
  /**
   * Called with every backend failure (including timeouts), whatever the policy: log it here.
   * @default undefined
   */
  onError?: (error: FastlimitError) => void
}

/** Options of one {@link FastLimit.check}. */
export interface CheckOptions {
  /**
   * Units to charge: a positive whole number (a weighted request costs more than 1).
   * @default 1
   */
  cost?: number
}

/**
 * Why a decision came out as it did:
 * - `'ok'`: admitted by every rule.
 * - `'rate-limited'`: a rule denied; retry after `retryAfterMs`.
 * - `'cost-exceeds-limit'`: the cost is larger than a rule's capacity; it can never pass (`retryAfterMs` is `Infinity`).
 * - `'fail-open'`, `'fail-closed'`: the backend failed or timed out (`error` says how); the policy decided.
 */
export type DecisionReason = 'ok' | 'rate-limited' | 'cost-exceeds-limit' | 'fail-open' | 'fail-closed'

/** One rule's part of a {@link Decision}. */
export interface RuleResult extends BackendResult {
  /** The rule this result is for. */
  readonly rule: Rule
}

/** The answer of {@link FastLimit.check}. The top-level figures are those of the most restrictive rule. */
export interface Decision {
  /** Whether the request may proceed. */
  readonly allowed: boolean
  /** Why; see {@link DecisionReason}. */
  readonly reason: DecisionReason
  /** Who decided: the backend, the fallback backend, or the error policy. */
  readonly source: 'backend' | 'fallback' | 'policy'
  /** The capacity of the deciding rule. */
  readonly limit: number
  /** What the deciding rule would still admit now. */
  readonly remaining: number
  /** Epoch milliseconds at which the deciding rule is full again. */
  readonly resetMs: number
  /** Milliseconds to wait before retrying (0 when allowed; `Infinity` when it can never pass). */
  readonly retryAfterMs: number
  /** The cost charged (or refused). */
  readonly cost: number
  /** The most restrictive rule: the denying one with the longest wait, or the one with the least remaining. */
  readonly rule: Rule
  /** Every rule's result, in the order the rules were given. */
  readonly rules: readonly RuleResult[]
  /** The backend failure behind `'fail-open'`, `'fail-closed'` or a fallback decision. */
  readonly error?: FastlimitError
}

const POLICIES = new Set(['fail-open', 'fail-closed', 'throw'])
const FAIL_CLOSED_RETRY_MS = 1000
const MAX_CACHED_RULE_STRINGS = 1000
/** Ends the message of a bad cost given to FastLimit. */
const COST_HINT = ': e.g. { cost: 5 }'

function ruleResult(rule: Rule, r: BackendResult): RuleResult {
  return {
    rule,
    allowed: r.allowed,
    limit: r.limit,
    remaining: r.remaining,
    resetMs: r.resetMs,
    retryAfterMs: r.retryAfterMs,
  }
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

  readonly #policy: BackendErrorPolicy
  readonly #onError: ((error: FastlimitError) => void) | undefined
  readonly #sync: SyncBackend | undefined
  readonly #memory: MemoryBackend | undefined
  readonly #space: Map<string, number> | undefined
  readonly #ownsBackend: boolean
  readonly #strings = new Map<string, RuleSet>()
  readonly #deadlines: Deadlines
  readonly #objects = new WeakMap<object, RuleSet>()
  #closed = false

  constructor(options: FastLimitOptions = {}) {
    if (typeof options !== 'object' || options === null) {
      throw new ConfigError(`[fastlimit] [core] FastLimit options must be an object, got ${show(options)}.`)
    }
    const known = ['backend', 'prefix', 'algorithm', 'onBackendError', 'timeoutMs', 'onError']
    for (const key of Object.keys(options)) {
      if (!known.includes(key)) {
        throw new ConfigError(
          `[fastlimit] [core] Unknown FastLimit option ${show(key)}: it takes ${known.join(', ')}.`,
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
    } = options
    if (backend !== undefined && !isBackend(backend)) {
      throw new ConfigError(
        `[fastlimit] [core] backend ${show(backend)} does not implement Backend (checkAndIncrement, checkAndIncrementAll, ` +
          'peek, reset, clear, close): pass e.g. new MemoryBackend() or a RedisBackend.',
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
    this.#ownsBackend = backend === undefined
    this.backend = backend ?? new MemoryBackend()
    this.#sync = isSyncBackend(this.backend) ? this.backend : undefined
    this.#memory = this.backend instanceof MemoryBackend ? this.backend : undefined
    this.#space = this.#memory === undefined ? undefined : spaceOf(this.#memory, this.prefix)
  }

  /**
   * Validates rules once and caches them: strings and arrays of strings by value, objects by identity
   * (treat rule objects as immutable once used). Use it at startup to fail fast on a bad rule.
   * @throws ConfigError
   */
  rules(input: RulesInput | RuleSet): RuleSet {
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
    let set: RuleSet
    let name: string
    let cost = 1
    try {
      if (this.#closed) throw this.#closedError()
      set = this.rules(rules)
      if (options !== undefined && options.cost !== undefined)
        cost = checkPositiveCost('core', options.cost, COST_HINT)
      name = identityName(identity)
    } catch (err) {
      return Promise.reject(err)
    }
    const list = set.rules
    const memory = this.#memory
    if (memory !== undefined) {
      // The default backend: decided in this turn, keyed by (prefix, identity) with no key string built.
      try {
        return Promise.resolve(
          list.length === 1
            ? decideOne(
                list,
                checkIn(memory, this.#space as Map<string, number>, name, list[0] as Rule, cost),
                cost,
                'backend',
                undefined,
              )
            : decide(
                list,
                checkAllIn(memory, this.#space as Map<string, number>, name, list, cost),
                cost,
                'backend',
                undefined,
              ),
        )
      } catch (err) {
        return this.#failed(`${this.prefix}:{${name}}`, list, cost, err)
      }
    }
    const key = `${this.prefix}:{${name}}`
    const sync = this.#sync
    if (sync !== undefined) {
      try {
        if (list.length === 1) {
          const result = sync.checkAndIncrementSync(key, list[0] as Rule, cost)
          if (!isResult(result)) throw malformed()
          return Promise.resolve(decideOne(list, result, cost, 'backend', undefined))
        }
        const results = sync.checkAndIncrementAllSync!(key, list, cost)
        if (!areResults(results, list.length)) throw malformed()
        return Promise.resolve(decide(list, results, cost, 'backend', undefined))
      } catch (err) {
        return this.#failed(key, list, cost, err)
      }
    }
    if (list.length === 1) {
      return this.#bounded(() => this.backend.checkAndIncrement(key, list[0] as Rule, cost)).then(
        (result) =>
          isResult(result)
            ? decideOne(list, result, cost, 'backend', undefined)
            : this.#failed(key, list, cost, malformed()),
        (err) => this.#failed(key, list, cost, err),
      )
    }
    return this.#bounded(() => this.backend.checkAndIncrementAll!(key, list, cost)).then(
      (results) =>
        areResults(results, list.length)
          ? decide(list, results, cost, 'backend', undefined)
          : this.#failed(key, list, cost, malformed()),
      (err) => this.#failed(key, list, cost, err),
    )
  }

  /**
   * Reads where `identity` stands under the rules without charging anything: `allowed` says whether a
   * request of cost 1 would pass now. Backend failures follow `onBackendError` as for `check`.
   */
  peek(identity: string, rules: RulesInput | RuleSet): Promise<Decision> {
    let set: RuleSet
    let key: string
    try {
      if (this.#closed) throw this.#closedError()
      set = this.rules(rules)
      key = storageKey(this.prefix, identity)
    } catch (err) {
      return Promise.reject(err)
    }
    const list = set.rules
    const sync = this.#sync
    if (sync !== undefined) {
      try {
        const results = list.map((rule) => sync.peekSync!(key, rule))
        if (!areResults(results, list.length)) throw malformed()
        return Promise.resolve(decide(list, results, 0, 'backend', undefined))
      } catch (err) {
        return this.#failed(key, list, 0, err)
      }
    }
    const all = Promise.all(list.map((rule) => this.#bounded(() => this.backend.peek!(key, rule))))
    return all.then(
      (results) =>
        areResults(results, list.length)
          ? decide(list, results, 0, 'backend', undefined)
          : this.#failed(key, list, 0, malformed()),
      (err) => this.#failed(key, list, 0, err),
    )
  }

  /** Forgets `identity` under every rule (for example after a successful login). Rejects on backend failure. */
  reset(identity: string): Promise<void> {
    let key: string
    try {
      if (this.#closed) throw this.#closedError()
      key = storageKey(this.prefix, identity)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#bounded(() => this.backend.reset!(key)).catch((err) => {
      throw this.#wrap(err)
    })
  }

  /**
   * Stops the limiter. Closes the backend only if the limiter created it (the default MemoryBackend);
   * a backend you passed in is yours to close.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#ownsBackend) await this.backend.close!()
  }

  #closedError(): FastlimitError {
    return new FastlimitError(
      'ERR_FASTLIMIT_CLOSED',
      '[fastlimit] [core] This FastLimit was closed; create a new one.',
    )
  }

  /**
   * Calls the backend, bounded by `timeoutMs`: a late answer or failure after the timeout is ignored,
   * and a backend that throws instead of rejecting is treated as a rejection.
   */
  #bounded<T>(call: () => Promise<T>): Promise<T> {
    let promise: Promise<T>
    try {
      promise = call()
    } catch (err) {
      return Promise.reject(err)
    }
    return new Promise<T>((resolve, reject) => {
      const pending = this.#deadlines.add(() => {
        reject(
          new FastlimitError(
            'ERR_FASTLIMIT_TIMEOUT',
            `[fastlimit] [core] The backend did not answer within ${this.timeoutMs} ms (timeoutMs); onBackendError applies.`,
          ),
        )
      })
      Promise.resolve(promise).then(
        (value) => {
          if (pending.settle()) resolve(value)
        },
        (err) => {
          if (pending.settle()) reject(err)
        },
      )
    })
  }

  #wrap(err: unknown): FastlimitError {
    if (err instanceof FastlimitError) return err
    const message = err instanceof Error ? err.message : String(err)
    return new FastlimitError('ERR_FASTLIMIT_BACKEND', `[fastlimit] [core] The backend failed: ${message}`, {
      cause: err,
    })
  }

  #failed(key: string, rules: readonly Rule[], cost: number, err: unknown): Promise<Decision> {
    const error = this.#wrap(err)
    if (error.code === 'ERR_FASTLIMIT_CLOSED' || error.code === 'ERR_FASTLIMIT_ARGUMENT')
      return Promise.reject(error)
    if (this.#onError) {
      try {
        this.#onError(error)
      } catch {
        // A throwing logger must not turn a decision into a crash.
      }
    }
    const policy = this.#policy
    if (policy === 'throw') return Promise.reject(error)
    if (typeof policy === 'object') {
      const fallback = policy.fallback
      const call = this.#bounded(() =>
        cost === 0
          ? Promise.all(rules.map((rule) => fallback.peek!(key, rule)))
          : rules.length === 1
            ? fallback.checkAndIncrement(key, rules[0] as Rule, cost).then((r) => [r])
            : fallback.checkAndIncrementAll!(key, rules, cost),
      )
      return call.then(
        (results) =>
          areResults(results, rules.length)
            ? decide(rules, results, cost, 'fallback', error)
            : Promise.reject(this.#wrap(malformed())),
        (fallbackErr) => Promise.reject(this.#wrap(fallbackErr)),
      )
    }
    const open = policy === 'fail-open'
    const now = Date.now()
    const results = rules.map((rule) => ({
      allowed: open,
      limit: rule.burst ?? rule.limit,
      remaining: open ? (rule.burst ?? rule.limit) : 0,
      resetMs: open ? now : now + FAIL_CLOSED_RETRY_MS,
      retryAfterMs: open ? 0 : FAIL_CLOSED_RETRY_MS,
    }))
    return Promise.resolve(
      new MultiDecision(
        open,
        open ? 'fail-open' : 'fail-closed',
        'policy',
        results[0] as BackendResult,
        cost,
        rules[0] as Rule,
        rules,
        results,
        error,
      ),
    )
  }
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

function malformed(): FastlimitError {
  return new FastlimitError(
    'ERR_FASTLIMIT_BACKEND',
    '[fastlimit] [core] The backend answered with something that is not a BackendResult (allowed, limit, ' +
      'remaining, resetMs, retryAfterMs) per bucket: check the backend with backendConformance from @fastlimit/core/testing.',
  )
}

function isBackend(value: unknown): value is Backend {
  if (typeof value !== 'object' || value === null) return false
  const b = value as Record<string, unknown>
  return ['checkAndIncrement', 'checkAndIncrementAll', 'peek', 'reset', 'clear', 'close'].every(
    (m) => typeof b[m] === 'function',
  )
}

/** Validates a cost: a positive safe integer. */
export function checkCost(cost: unknown): number {
  return checkPositiveCost('core', cost, COST_HINT)
}

/**
 * The one implementation of {@link Decision}. `rules` is built on first read, so the hot path of a
 * check allocates a single object.
 */
class DecisionImpl implements Decision {
  // Declared, not defined: the constructor assigns each once (no field initializer pass).
  declare readonly allowed: boolean
  declare readonly reason: DecisionReason
  declare readonly source: 'backend' | 'fallback' | 'policy'
  declare readonly limit: number
  declare readonly remaining: number
  declare readonly resetMs: number
  declare readonly retryAfterMs: number
  declare readonly cost: number
  declare readonly rule: Rule
  declare readonly error?: FastlimitError

  constructor(
    allowed: boolean,
    reason: DecisionReason,
    source: 'backend' | 'fallback' | 'policy',
    pick: BackendResult,
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

/** The decision of several rules, keeping every rule's result. */
class MultiDecision extends DecisionImpl {
  readonly #rules: readonly Rule[]
  readonly #results: readonly BackendResult[]
  #built: readonly RuleResult[] | undefined

  constructor(
    allowed: boolean,
    reason: DecisionReason,
    source: 'backend' | 'fallback' | 'policy',
    pick: BackendResult,
    cost: number,
    rule: Rule,
    rules: readonly Rule[],
    results: readonly BackendResult[],
    error: FastlimitError | undefined,
  ) {
    super(allowed, reason, source, pick, cost, rule, error)
    this.#rules = rules
    this.#results = results
  }

  override get rules(): readonly RuleResult[] {
    if (this.#built === undefined) {
      const results = this.#results
      this.#built = Object.freeze(this.#rules.map((rule, i) => ruleResult(rule, results[i] as BackendResult)))
    }
    return this.#built
  }
}

function reasonOf(r: BackendResult): DecisionReason {
  return r.allowed
    ? 'ok'
    : r.retryAfterMs === Number.POSITIVE_INFINITY
      ? 'cost-exceeds-limit'
      : 'rate-limited'
}

/** The decision of a single rule: the common case, with no array and no search. */
function decideOne(
  rules: readonly Rule[],
  r: BackendResult,
  cost: number,
  source: 'backend' | 'fallback',
  error: FastlimitError | undefined,
): Decision {
  return new DecisionImpl(r.allowed, reasonOf(r), source, r, cost, rules[0] as Rule, error)
}

/** Combines per-rule results into one decision: the most restrictive rule speaks. */
function decide(
  rules: readonly Rule[],
  results: readonly BackendResult[],
  cost: number,
  source: 'backend' | 'fallback',
  error: FastlimitError | undefined,
): Decision {
  let pick = 0
  let allowed = (results[0] as BackendResult).allowed
  for (let i = 1; i < rules.length; i++) {
    const r = results[i] as BackendResult
    const p = results[pick] as BackendResult
    if (!r.allowed) {
      if (allowed || r.retryAfterMs > p.retryAfterMs) pick = i
      allowed = false
    } else if (
      allowed &&
      (r.remaining < p.remaining || (r.remaining === p.remaining && r.resetMs > p.resetMs))
    ) {
      pick = i
    }
  }
  const p = results[pick] as BackendResult
  return new MultiDecision(allowed, reasonOf(p), source, p, cost, rules[pick] as Rule, rules, results, error)
}
