// Delay mode of the HTTP layer: a request over the limit waits its turn (limiter.wait) instead of being refused.
//
// A request whose identity has nothing waiting in this middleware takes the plain check: admitted, it goes
// on at the cost of `mode: 'enforce'`; denied with a retry time past `maxDelayMs`, it is refused at once
// with that exact decision. Otherwise it joins the limiter's FIFO queue for its identity (`limiter.wait`,
// which sleeps the exact retry time and refuses as soon as the wait is known to end past `maxDelayMs`),
// with an abort signal that fires when the client disconnects.

import { FastlimitError, show } from '../errors'
import type { Decision, FastLimit, PolicyDecision, PolicyRuleResult, StoreDecision } from '../limiter'
import type { RuleSet } from '../rules'
import { DEFAULT_MAX_QUEUE } from '../wait'

/** The longest `maxDelayMs`: what one `setTimeout` takes. */
const MAX_DELAY_MS = 2 ** 31 - 1
const MAX_QUEUE_LIMIT = 1_000_000_000
/** The `retryAfterMs` of a refusal decided by `'fail-closed'`, as `FastLimit` gives it. */
const FAIL_CLOSED_RETRY_MS = 1000

/** The checked settings of `mode: 'delay'`. */
export interface DelaySettings {
  /** The longest a request may be held, in milliseconds. */
  readonly maxDelayMs: number
  /** The most requests held at once per identity in this process. */
  readonly maxQueue: number
}

/**
 * Checks `maxDelayMs` and `maxQueue` against `mode`: the settings for `mode: 'delay'`, `undefined` for
 * the other modes (which take neither). Calls `fail` with the message of a bad option.
 */
export function delaySettings(
  mode: unknown,
  options: { readonly maxDelayMs?: unknown; readonly maxQueue?: unknown },
  fail: (message: string) => never,
): DelaySettings | undefined {
  const { maxDelayMs, maxQueue } = options
  if (mode !== 'delay') {
    for (const [name, value] of [
      ['maxDelayMs', maxDelayMs],
      ['maxQueue', maxQueue],
    ] as const) {
      if (value !== undefined) {
        fail(`${name} applies to mode: 'delay' only, got it with mode: ${show(mode ?? 'enforce')}.`)
      }
    }
    return undefined
  }
  if (maxDelayMs === undefined) {
    fail(
      "mode: 'delay' needs maxDelayMs, the longest a request over the limit is held before it is refused: " +
        "e.g. { mode: 'delay', maxDelayMs: 5000 }.",
    )
  }
  if (
    typeof maxDelayMs !== 'number' ||
    !Number.isSafeInteger(maxDelayMs) ||
    maxDelayMs < 1 ||
    maxDelayMs > MAX_DELAY_MS
  ) {
    fail(
      `maxDelayMs must be a whole number of milliseconds from 1 to 2147483647, got ${show(maxDelayMs)}: e.g. 5000.`,
    )
  }
  const queue = maxQueue ?? DEFAULT_MAX_QUEUE
  if (typeof queue !== 'number' || !Number.isSafeInteger(queue) || queue < 1 || queue > MAX_QUEUE_LIMIT) {
    fail(`maxQueue must be a whole number from 1 to 1000000000, got ${show(maxQueue)}: e.g. 100.`)
  }
  return { maxDelayMs: maxDelayMs as number, maxQueue: queue as number }
}

/**
 * The error a request held in `mode: 'delay'` fails with when its client closes the connection while it
 * waits: it leaves its queue at once (the next request takes its place) and nothing is charged for it
 * (unless its check was at the store at that moment). Adapters end such a request quietly where their
 * framework allows; elsewhere it reaches the framework's
 * error handling, which sends nothing to a closed connection. It carries `status` and `statusCode` 499
 * (nginx's "client closed request") and `expose: true`, so error handlers that log by status (Koa,
 * Fastify) treat it as the client's doing.
 */
export class RequestAbortedError extends FastlimitError {
  /** 499: the client closed the request. */
  readonly status = 499
  /** 499. */
  readonly statusCode = 499
  /** The message may be shown (there is no one left to show it to). */
  readonly expose = true

  constructor(adapter: string, options?: { cause?: unknown }) {
    super(
      'ERR_FASTLIMIT_ABORTED',
      `[fastlimit] [${adapter}] The client closed the connection while its request waited for the rate limit ` +
        "(mode: 'delay'): the request was dropped.",
      options,
    )
    this.name = 'RequestAbortedError'
  }
}

/** Whether `err` is a {@link RequestAbortedError} (from this copy of core or another). */
export function isRequestAborted(err: unknown): boolean {
  return err instanceof FastlimitError && err.code === 'ERR_FASTLIMIT_ABORTED'
}

/** The part of a Node `ServerResponse` that {@link closeSignal} reads. */
export interface ClosableResponse {
  once(event: 'close', listener: () => void): unknown
  /** Whether the response was sent completely. */
  readonly writableFinished?: boolean
  /** Whether the response (its connection) is already gone. */
  readonly destroyed?: boolean
}

/**
 * For adapters on Node's `http` server: an `AbortSignal` that aborts when the connection of `res` closes
 * before the response was sent (the client went away). Give it as {@link HttpAdapter.signal}:
 * `signal: (req, res) => closeSignal(res)`. It is only asked for when a request must wait.
 */
export function closeSignal(res: ClosableResponse): AbortSignal {
  const controller = new AbortController()
  if (res.destroyed === true) controller.abort()
  else {
    res.once('close', () => {
      if (res.writableFinished !== true) controller.abort()
    })
  }
  return controller.signal
}

/** What this middleware holds for one identity while some of its requests wait. */
interface Waiting {
  /** Requests of this identity waiting now. */
  count: number
  /** The store's last decision for it seen here, and when (`performance.now()`). */
  last: StoreDecision
  lastAt: number
}

/**
 * The waiting part of one `rateLimit({ mode: 'delay' })`: decides a request, holding it over the limit
 * until it is admitted or known to be refused. Internal to the HTTP layer.
 */
export class HttpDelay<Req, Res> {
  readonly #limiter: FastLimit
  readonly #rules: RuleSet
  readonly #scope: string | undefined
  readonly #maxDelayMs: number
  readonly #maxQueue: number
  readonly #name: string
  readonly #signal: ((req: Req, res: Res) => AbortSignal | undefined) | undefined
  readonly #waiting = new Map<string, Waiting>()

  constructor(
    limiter: FastLimit,
    rules: RuleSet,
    scope: string | undefined,
    settings: DelaySettings,
    name: string,
    signal: ((req: Req, res: Res) => AbortSignal | undefined) | undefined,
  ) {
    this.#limiter = limiter
    this.#rules = rules
    this.#scope = scope
    this.#maxDelayMs = settings.maxDelayMs
    this.#maxQueue = settings.maxQueue
    this.#name = name
    this.#signal = signal
  }

  /** Whether requests of `identity` are held here now: a new one then joins them, first in, first out. */
  holding(identity: string): boolean {
    return this.#waiting.size !== 0 && this.#waiting.has(identity)
  }

  /** Whether a decision the store made is a denial to hold: one the limit can lift within `maxDelayMs`. */
  holds(d: Decision): d is StoreDecision {
    return !d.allowed && d.source !== 'policy' && d.retryAfterMs <= this.#maxDelayMs
  }

  /**
   * Holds a request until the rules admit `cost` for `identity`: resolves with the admitting decision,
   * or with a refusal (`allowed: false`) to answer with when it cannot be admitted within `maxDelayMs`
   * from now, or when `maxQueue` requests are held already. `denied` is the store's denial that made it
   * wait, when it was checked first (the hold counts from its answer: the admitted path pays no clock read). Rejects with a
   * {@link RequestAbortedError} when the client leaves while held, and with the limiter's error under
   * `onBackendError: 'throw'`.
   */
  async wait(
    identity: string,
    cost: number,
    req: Req,
    res: Res,
    denied: StoreDecision | undefined,
  ): Promise<Decision> {
    const started = performance.now()
    let w = this.#waiting.get(identity)
    if (w === undefined) {
      // Only a denial starts a wait: `denied` is known when nothing of this identity waits.
      w = { count: 0, last: denied as StoreDecision, lastAt: started }
      this.#waiting.set(identity, w)
    } else if (denied !== undefined) {
      w.last = denied
      w.lastAt = started
    }
    w.count++
    let signal: AbortSignal | undefined
    try {
      signal = this.#signal?.(req, res)
      const maxWaitMs = this.#maxDelayMs
      const d = await this.#limiter.wait(identity, this.#rules, {
        cost,
        maxWaitMs,
        maxQueue: this.#maxQueue,
        ...(this.#scope === undefined ? {} : { scope: this.#scope }),
        ...(signal === undefined ? {} : { signal }),
      })
      if (d.source !== 'policy') {
        w.last = d
        w.lastAt = performance.now()
      }
      return d
    } catch (err) {
      if (signal?.aborted === true && err === signal.reason)
        throw new RequestAbortedError(this.#name, { cause: err })
      if (!(err instanceof FastlimitError)) throw err
      if (err.code === 'ERR_FASTLIMIT_WAIT_TOO_LONG') return this.#tooLong(err, w, cost)
      if (err.code === 'ERR_FASTLIMIT_OVERLOADED') return refusal(w.last, this.#maxDelayMs, cost)
      if (err.code === 'ERR_FASTLIMIT_CLOSED') return this.#closed(err, cost)
      throw err
    } finally {
      if (--w.count === 0 && this.#waiting.get(identity) === w) this.#waiting.delete(identity)
    }
  }

  /** The refusal of a request that cannot be admitted within `maxDelayMs`. */
  #tooLong(err: FastlimitError, w: Waiting, cost: number): Decision {
    const e = err as FastlimitError & { retryAfterMs?: number; decision?: Decision }
    const known = e.decision !== undefined && e.decision.source !== 'policy' ? e.decision : undefined
    if (known === undefined && err.cause instanceof FastlimitError) {
      // Refused because the store kept failing under 'fail-closed': an outage, as a check would say.
      return policyDecision(this.#rules, false, cost, err.cause)
    }
    const base = known ?? w.last
    let retry = e.retryAfterMs
    if (retry === undefined) {
      retry = base.allowed ? 0 : Math.max(0, base.retryAfterMs - (performance.now() - w.lastAt))
    }
    return refusal(base, Math.max(retry, 1), cost)
  }

  /**
   * The limiter closed while the request waited: it gets what the error policy answers when the store
   * cannot be reached (`'fail-open'` admits, `'fail-closed'` and `{ fallback }` refuse as an outage,
   * `'throw'` fails it with the error).
   */
  #closed(err: FastlimitError, cost: number): Decision {
    const policy = (this.#limiter as { onBackendError?: unknown }).onBackendError ?? 'throw'
    if (policy === 'throw') throw err
    return policyDecision(this.#rules, policy === 'fail-open', cost, err)
  }
}

/**
 * A refusal built on the store's last decision for the identity: its figures (limit, remaining,
 * reset, every rule's result), refused, with the retry time the wait gave. A refusal after an
 * admission (the request ahead was admitted, the units left are spoken for by requests waiting ahead
 * in this process) says `remaining: 0`.
 */
function refusal(base: StoreDecision, retryAfterMs: number, cost: number): StoreDecision {
  return {
    allowed: false,
    reason: retryAfterMs === Number.POSITIVE_INFINITY ? 'cost-exceeds-limit' : 'rate-limited',
    source: base.source,
    limit: base.limit,
    remaining: base.allowed ? 0 : base.remaining,
    resetMs: base.resetMs,
    retryAfterMs: Number.isFinite(retryAfterMs) ? Math.ceil(retryAfterMs) : retryAfterMs,
    cost,
    rule: base.rule,
    rules: base.rules,
    ...(base.error === undefined ? {} : { error: base.error }),
  }
}

/** What the error policy decides when the store is out of reach, as `FastLimit.check` makes it. */
function policyDecision(rules: RuleSet, open: boolean, cost: number, error: FastlimitError): PolicyDecision {
  const retryAfterMs = open ? 0 : FAIL_CLOSED_RETRY_MS
  const results: PolicyRuleResult[] = rules.rules.map((rule) => ({
    rule,
    allowed: open,
    limit: rule.burst ?? rule.limit,
    remaining: undefined,
    resetMs: undefined,
    retryAfterMs,
  }))
  const first = results[0] as PolicyRuleResult
  return {
    allowed: open,
    reason: open ? 'fail-open' : 'fail-closed',
    source: 'policy',
    limit: first.limit,
    remaining: undefined,
    resetMs: undefined,
    retryAfterMs,
    cost,
    rule: first.rule,
    rules: results,
    error,
  }
}
