// What a middleware hands to later handlers about a request it counted: its decision with nothing
// invented, and a handle on the bucket the request was counted in (reset after a login, peek).

import type { Decision, DecisionReason } from '../limiter'
import type { Rule } from '../rules'
import type { HeaderEntry, RateLimitHeaders } from './headers'

/**
 * The reset/peek handle of the limit a request was counted against, kept for the adapters that
 * offered it before `RateLimitInfo` (Fastify's `request.rateLimitHandle`, NestJS's
 * `@RateLimitHandle()`). Only requests that were counted have one (not skipped, allow-listed or
 * exempt ones).
 *
 * @deprecated A {@link RateLimitInfo} has `identity`, `scope`, `reset()` and `peek()` of its own (and
 * `all`, for every limit that counted the request); use it instead.
 *
 * @example
 * ```ts
 * const handle = request.rateLimitHandle // Fastify; NestJS: `@RateLimitHandle() handle?: RateLimitHandle`
 * await handle?.reset() // now: await request.rateLimit?.reset()
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

/**
 * The deprecated {@link RateLimitHandle} view of what a limit attached to a request, for adapters
 * that still offer it.
 *
 * @example
 * ```ts
 * const handle = info === undefined ? undefined : rateLimitHandleOf(info)
 * ```
 */
export function rateLimitHandleOf(info: RateLimitInfo): RateLimitHandle {
  return {
    identity: info.identity,
    scope: info.scope,
    reset: () => info.reset(),
    peek: () => info.peek().then((peeked) => peeked.decision),
  }
}

/**
 * What a fastlimit middleware tells later handlers about a request it counted, found in
 * `req.rateLimit` (Express), `c.var.rateLimit` (Hono) or `ctx.state.rateLimit` (Koa); the last
 * middleware's when several counted the request (`all` lists them all).
 *
 * Figures the limiter does not know are `undefined`, never guessed: when the store could not be
 * asked and `onBackendError` decided (`source: 'policy'`), `remaining` and `resetMs` are `undefined`.
 *
 * @example
 * ```ts
 * app.post('/login', loginLimit, async (req, res) => {
 *   if (!(await checkPassword(req.body))) return res.status(401).end()
 *   await req.rateLimit?.reset() // a successful login forgets the failed attempts
 *   res.json({ ok: true })
 * })
 * ```
 */
export interface RateLimitInfo {
  /** Whether this middleware let the request through (in shadow mode: whether it would have). */
  readonly allowed: boolean
  /** Why; see `DecisionReason`. */
  readonly reason: DecisionReason
  /**
   * Who decided: the backend, the fallback backend, or `'policy'` when the store could not be asked
   * (`onBackendError` decided, or the circuit breaker was open): then nothing is known of the
   * client's standing, and `remaining` and `resetMs` are `undefined`.
   */
  readonly source: 'backend' | 'fallback' | 'policy'
  /** The capacity of the deciding rule (known from the configuration, even when the store is down). */
  readonly limit: number
  /** What the deciding rule would still admit now; `undefined` when `source` is `'policy'`. */
  readonly remaining: number | undefined
  /** Epoch milliseconds at which the deciding rule is full again; `undefined` when `source` is `'policy'`. */
  readonly resetMs: number | undefined
  /** Milliseconds to wait before retrying (0 when allowed; `Infinity` when the request can never pass). */
  readonly retryAfterMs: number
  /** The cost charged (or refused); 0 for a {@link RateLimitInfo.peek}. */
  readonly cost: number
  /** The deciding rule: the most restrictive of the middleware's rules. */
  readonly rule: Rule
  /** The limiter's decision as it came (its `rules` has every rule's result). */
  readonly decision: Decision
  /** The identity the request was counted under (the client's IP key, or what `key` returned, normalized). */
  readonly identity: string
  /** The middleware's `scope`, or `undefined`. */
  readonly scope: string | undefined
  /** Every fastlimit middleware that counted this request, in the order they ran; this one is last. */
  readonly all: readonly RateLimitInfo[]
  /**
   * Forgets the bucket this request was counted in: the identity's counts under every rule of the
   * middleware's limiter in the middleware's `scope` (so give a login limit its own scope). Rejects
   * when the store fails.
   */
  reset(): Promise<void>
  /** Reads the bucket now without charging anything (`cost` 0; `allowed`: would a request of cost 1 pass). */
  peek(): Promise<RateLimitInfo>
  /** The figures, for logs: no identity (it may be an API key) and no decision object. */
  toJSON(): RateLimitInfoJSON
}

/** {@link RateLimitInfo} as `JSON.stringify` writes it. */
export interface RateLimitInfoJSON {
  readonly allowed: boolean
  readonly reason: DecisionReason
  readonly source: 'backend' | 'fallback' | 'policy'
  readonly limit: number
  readonly remaining: number | undefined
  readonly resetMs: number | undefined
  readonly retryAfterMs: number
  readonly cost: number
  readonly rule: string
  readonly scope: string | undefined
}

/** One middleware's side of its requests' infos: what `reset` and `peek` need, and its header writer. */
export interface InfoOwner {
  /** Forgets `identity` in the middleware's scope. */
  reset(identity: string): Promise<void>
  /** Reads `identity` under the middleware's rules, in its scope. */
  peek(identity: string): Promise<Decision>
  /** The middleware's scope. */
  readonly scope: string | undefined
  /**
   * The middleware's own owner when this one stands for one of its rule sets (`rules` as a function
   * of the request): {@link RequestRateLimit.find} then finds the request by the middleware.
   */
  readonly group?: InfoOwner
  /** Its header writer, or `undefined` when it writes no RateLimit fields. */
  readonly headers: RateLimitHeaders | undefined
}

/** The one implementation of {@link RateLimitInfo}: four fields per request, the rest read through. */
export class RequestRateLimit implements RateLimitInfo {
  readonly decision: Decision
  readonly identity: string
  readonly #owner: InfoOwner
  readonly #previous: RequestRateLimit | undefined
  /** The owner's clock when it decided, for the reset values of headers written later. */
  readonly #nowMs: number

  constructor(
    decision: Decision,
    identity: string,
    owner: InfoOwner,
    previous: RequestRateLimit | undefined,
    nowMs: number,
  ) {
    this.decision = decision
    this.identity = identity
    this.#owner = owner
    this.#previous = previous
    this.#nowMs = nowMs
  }

  get allowed(): boolean {
    return this.decision.allowed
  }
  get reason(): DecisionReason {
    return this.decision.reason
  }
  get source(): 'backend' | 'fallback' | 'policy' {
    return this.decision.source
  }
  get limit(): number {
    return this.decision.limit
  }
  get remaining(): number | undefined {
    return this.decision.source === 'policy' ? undefined : this.decision.remaining
  }
  get resetMs(): number | undefined {
    return this.decision.source === 'policy' ? undefined : this.decision.resetMs
  }
  get retryAfterMs(): number {
    return this.decision.retryAfterMs
  }
  get cost(): number {
    return this.decision.cost
  }
  get rule(): Rule {
    return this.decision.rule
  }
  get scope(): string | undefined {
    return this.#owner.scope
  }

  get all(): readonly RateLimitInfo[] {
    const list: RateLimitInfo[] = []
    for (let i: RequestRateLimit | undefined = this; i !== undefined; i = i.#previous) list.push(i)
    return Object.freeze(list.reverse())
  }

  reset(): Promise<void> {
    return this.#owner.reset(this.identity)
  }

  peek(): Promise<RateLimitInfo> {
    return this.#owner
      .peek(this.identity)
      .then((d) => new RequestRateLimit(d, this.identity, this.#owner, undefined, 0))
  }

  toJSON(): RateLimitInfoJSON {
    return {
      allowed: this.allowed,
      reason: this.reason,
      source: this.source,
      limit: this.limit,
      remaining: this.remaining,
      resetMs: this.resetMs,
      retryAfterMs: this.retryAfterMs,
      cost: this.cost,
      rule: this.rule.name,
      scope: this.scope,
    }
  }

  /** The info `owner` recorded for this request, looking back from `info`, or `undefined`. */
  static find(info: RequestRateLimit | undefined, owner: InfoOwner): RequestRateLimit | undefined {
    for (let i = info; i !== undefined; i = i.#previous) if ((i.#owner.group ?? i.#owner) === owner) return i
    return undefined
  }

  /**
   * The header entries of the request so far, oldest first: one per middleware that writes RateLimit
   * fields and knew something (not `source: 'policy'`); a middleware that ran twice counts once, as last.
   */
  static headerEntries(info: RequestRateLimit): HeaderEntry[] {
    const out: HeaderEntry[] = []
    for (let i: RequestRateLimit | undefined = info; i !== undefined; i = i.#previous) {
      const owner = i.#owner
      const headers = owner.headers
      if (headers === undefined || i.decision.source === 'policy') continue
      let seen = false
      for (let k = 0; k < out.length && !seen; k++) seen = (out[k] as HeaderEntry).headers === headers
      if (!seen) out.push({ headers, decision: i.decision, nowMs: i.#nowMs })
    }
    return out.reverse()
  }
}
