// The reset/peek handle of a request: remembers what the HTTP layer counted, through the limiter's public API.

import type { CheckOptions, Decision, FastLimit, RuleSet, RulesInput } from '@fastlimit/core'

/**
 * The limit a request was counted against, for later in the same request: reset it after a
 * successful login, or read where the client stands. Only requests that were counted have one
 * (not skipped, allow-listed or exempt ones).
 *
 * @example
 * ```ts
 * app.post('/login', { config: { rateLimit: { scope: 'login', rules: '5/15m' } } }, async (request) => {
 *   const user = await authenticate(request.body)
 *   await request.rateLimitHandle?.reset() // a successful login clears the failed attempts
 *   return user
 * })
 * ```
 */
export interface RateLimitHandle {
  /** The identity that was counted: what `key` returned (normalized), or the client's IP key. */
  readonly identity: string
  /** The scope it was counted in, or `undefined`. */
  readonly scope: string | undefined
  /**
   * Forgets the identity's counts in this scope, under every rule (the next request starts afresh).
   * Needs a backend with `reset`; rejects when the backend fails.
   */
  reset(): Promise<void>
  /**
   * Where the identity stands now under the limit's rules, without charging anything. Needs a
   * backend with `peek`; backend failures follow the limiter's `onBackendError`.
   */
  peek(): Promise<Decision>
}

/** Decisions awaiting their `expose` at most: far more than requests in flight between two microtasks. */
const MAX_PENDING = 10_000

class Handle implements RateLimitHandle {
  readonly identity: string
  readonly scope: string | undefined
  readonly #limiter: FastLimit
  readonly #rules: RulesInput | RuleSet

  constructor(limiter: FastLimit, identity: string, rules: RulesInput | RuleSet, scope: string | undefined) {
    this.#limiter = limiter
    this.identity = identity
    this.#rules = rules
    this.scope = scope
  }

  reset(): Promise<void> {
    return this.#limiter.reset(this.identity, this.scope === undefined ? undefined : { scope: this.scope })
  }

  peek(): Promise<Decision> {
    return this.#limiter.peek(
      this.identity,
      this.#rules,
      this.scope === undefined ? undefined : { scope: this.scope },
    )
  }
}

/**
 * A limiter that answers exactly as `limiter` does and remembers, for each decision of `check`, the
 * identity, rules and scope it was asked about, so the adapter can hand the request a
 * {@link RateLimitHandle}. It reaches `limiter` only through its public methods, so whatever the HTTP
 * layer passes to `check` (a scope of its own included) is what the handle resets.
 */
export class HandleRecorder {
  /** The limiter to give the HTTP layer in place of the real one. */
  readonly limiter: FastLimit
  /**
   * Handles of decisions not yet handed out. A Map, not a WeakMap: entries live a microtask (the HTTP
   * layer hands every decision to `expose` as soon as it has it), and a WeakMap of short-lived keys
   * costs the garbage collector about a microsecond per request. Capped so that decisions never
   * handed out (a layer that stops exposing) cannot grow it.
   */
  readonly #handles = new Map<Decision, Handle>()

  constructor(real: FastLimit) {
    const handles = this.#handles
    const record =
      (identity: string, rules: RulesInput | RuleSet, options?: CheckOptions) =>
      <D extends Decision>(decision: D): D => {
        if (handles.size >= MAX_PENDING) handles.clear()
        handles.set(decision, new Handle(real, identity, rules, options?.scope))
        return decision
      }
    const check = (identity: string, rules: RulesInput | RuleSet, options?: CheckOptions) =>
      real.check(identity, rules, options).then(record(identity, rules, options))
    // countWhen / settle reserve instead of checking: the same handle for the reservation.
    const reserve = (identity: string, rules: RulesInput | RuleSet, options?: CheckOptions) =>
      real.reserve(identity, rules, options).then(record(identity, rules, options))
    const bound = new Map<PropertyKey, unknown>()
    this.limiter = new Proxy(real, {
      get(target, property) {
        if (property === 'check') return check
        if (property === 'reserve') return reserve
        const value = Reflect.get(target, property, target)
        if (typeof value !== 'function') return value
        // FastLimit keeps private fields: its methods must run with the real limiter as `this`.
        let fn = bound.get(property)
        if (fn === undefined) {
          fn = value.bind(target)
          bound.set(property, fn)
        }
        return fn
      },
    })
  }

  /** The handle of a decision the recorded limiter made (once), or `undefined` (a decision made elsewhere). */
  handleOf(decision: Decision): RateLimitHandle | undefined {
    const handle = this.#handles.get(decision)
    if (handle !== undefined) this.#handles.delete(decision)
    return handle
  }
}
