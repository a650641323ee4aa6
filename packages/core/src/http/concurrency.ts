// The `concurrency` option of the HTTP layer: at most N requests of one client in flight, a lease per
// request, released when the response ends or the client goes away.
//
// Order, per request: skip / allow list / cost 0 first (no slot, no charge); then the slot; then the rate
// rules. A request refused for concurrency is never checked against the rate rules (nothing charged); a
// request the rate rules refuse gives its slot back at once, so it holds none while refused.

import type { Lease } from '../concurrency'
import { ConfigError, show } from '../errors'
import type { Decision, FastLimit } from '../limiter'
import type { Rule } from '../rules'

/** The `concurrency` option of `rateLimit()`: see {@link RateLimitCommonOptions.concurrency}. */
export interface ConcurrencyOptions {
  /** The most requests of one client (one `key`, in the middleware's `scope`) in flight at once: 1 to 10,000. */
  limit: number
  /**
   * How long a slot is held at most, in milliseconds: a request whose response never ends (a hung
   * handler, a crashed process) loses its slot after this long. Take it above your server's request
   * timeout.
   * @default 60_000
   */
  leaseMs?: number
}

/** A number `n` is `{ limit: n }`. */
export type ConcurrencySetting = number | ConcurrencyOptions

/** The validated option. Internal. */
export interface HttpConcurrency {
  readonly limit: number
  readonly leaseMs: number | undefined
}

/** Validates the `concurrency` option. Internal. @throws ConfigError */
export function compileConcurrency(value: unknown, where: string): HttpConcurrency | undefined {
  if (value === undefined || value === false) return undefined
  const o = typeof value === 'number' ? { limit: value } : value
  const bad = () =>
    new ConfigError(
      `[fastlimit] [${where}] concurrency must be a whole number from 1 to 10000 or { limit, leaseMs? }, got ${show(value)}. ` +
        'For example concurrency: 20, or { limit: 20, leaseMs: 30000 }.',
    )
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw bad()
  for (const k of Object.keys(o)) if (k !== 'limit' && k !== 'leaseMs') throw bad()
  const { limit, leaseMs } = o as ConcurrencyOptions
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > 10_000) throw bad()
  if (leaseMs !== undefined && (!Number.isSafeInteger(leaseMs) || leaseMs < 1 || leaseMs > 2 ** 31 - 1)) {
    throw new ConfigError(
      `[fastlimit] [${where}] concurrency.leaseMs must be a whole number of milliseconds from 1 to 2147483647, got ${show(leaseMs)}. For example 30000.`,
    )
  }
  return { limit, leaseMs }
}

/** Takes the request's slot. Internal. */
export function acquireSlot(
  limiter: FastLimit,
  c: HttpConcurrency,
  identity: string,
  scope: string | undefined,
  mode: 'enforce' | 'shadow',
): Promise<Lease> {
  const options =
    c.leaseMs === undefined
      ? { limit: c.limit, scope, mode }
      : { limit: c.limit, leaseMs: c.leaseMs, scope, mode }
  return limiter.acquire(identity, options)
}

/**
 * Releases `lease` once the response is done: through the adapter's `onFinished` (which the HTTP layer
 * requires with `concurrency`), or, should it throw, when `settled` (the rest of the middleware chain)
 * settles. Internal.
 */
export function releaseWhenDone<Req, Res>(
  lease: Lease,
  req: Req,
  res: Res,
  onFinished: ((req: Req, res: Res, done: () => void) => void) | undefined,
): ((settled: unknown) => void) | undefined {
  // Nothing held (a fail-open lease): nothing to release.
  if (lease.source === 'policy' || !lease.allowed) return undefined
  const done = (): void => {
    void lease.release().catch(() => undefined)
  }
  if (onFinished !== undefined) {
    try {
      onFinished(req, res, done)
      return undefined
    } catch {
      // Fall back to the end of the chain.
    }
  }
  return (settled) => {
    if (settled !== null && typeof (settled as Promise<unknown>)?.then === 'function')
      (settled as Promise<unknown>).then(done, done)
    else done()
  }
}

/**
 * The decision a concurrency refusal hands to `handler`, `message` and `onLimit`: `reason`
 * `'concurrency-limited'` (or `'fail-closed'` when the store could not decide), the lease's figures,
 * `rules` empty (no rate rule decided), `rule` the middleware's first rule. Internal.
 */
export function concurrencyDecision(lease: Lease, rule: Rule, now: number): Decision {
  const policy = lease.source === 'policy'
  return Object.freeze({
    allowed: false,
    reason: policy ? 'fail-closed' : 'concurrency-limited',
    source: policy ? 'policy' : lease.source,
    limit: lease.limit,
    remaining: policy ? undefined : 0,
    resetMs: policy ? undefined : now + lease.retryAfterMs,
    retryAfterMs: lease.retryAfterMs,
    cost: 1,
    rule,
    rules: [],
    lease,
    ...(lease.error === undefined ? {} : { error: lease.error }),
  }) as unknown as Decision
}

/** The default body of a concurrency refusal: RFC 9457 problem details. Internal. */
export function concurrencyProblem(status: number, lease: Lease): string {
  const title = status === 429 ? 'Too Many Requests' : 'Too Many Concurrent Requests'
  const s = Math.max(1, Math.ceil(lease.retryAfterMs / 1000))
  return JSON.stringify({
    type: 'about:blank',
    title,
    status,
    detail: `Too many requests in progress (at most ${lease.limit} at once); retry when one finishes, at the latest in ${s} second${s === 1 ? '' : 's'}.`,
    concurrency: { limit: lease.limit, inFlight: lease.holders },
  })
}
