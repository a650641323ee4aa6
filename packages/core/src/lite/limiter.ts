// The lite entry's limiter: rules + keys + any backend + a timeout and a fail policy, and nothing else.

import { type Backend, type BackendResult, isSyncBackend } from '../backend'
import { ConfigError, checkTimerMs, FastlimitError, show } from '../errors'
import { storageKey, validatePrefix } from '../keys'
import type { Decision } from '../limiter'
import type { Rule, RuleSet } from '../rules'
import { FAIL_CLOSED_RETRY_MS, mostRestrictive, reasonOf } from '../verdict'
import { liteMemoryBackend } from './memory'

/** Options of {@link createLiteLimiter}. */
export interface LiteLimiterOptions {
  /**
   * Where counts live: any `Backend` (only `checkAndIncrement` is required; several rules at once need
   * `checkAndIncrementAll`). A backend with `checkAndIncrementSync` is called synchronously, without a timer.
   * @default liteMemoryBackend(): this process only, gcra only
   */
  backend?: Backend
  /**
   * The key prefix: 1 to 64 printable ASCII characters without spaces or braces. The same as
   * `FastLimit`'s, so both entries count in the same keys of a shared store.
   * @default 'fl'
   */
  prefix?: string
  /**
   * The milliseconds an asynchronous backend call may take; later, `onBackendError` decides (the call
   * carries its deadline, so the store charges nothing past it). 1 to 2147483647.
   * @default 1000
   */
  timeoutMs?: number
  /**
   * What to do when the backend fails or does not answer within `timeoutMs`: `'fail-open'` admits,
   * `'fail-closed'` refuses (an outage, `reason: 'fail-closed'`, retry in 1 s). Either way the decision
   * says nothing of the client's standing (`source: 'policy'`, `remaining` undefined).
   * @default 'fail-open'
   */
  onBackendError?: 'fail-open' | 'fail-closed'
}

/** What {@link createLiteLimiter} returns. */
export interface LiteLimiter {
  /** The backend decisions are made on. */
  readonly backend: Backend
  /**
   * Charges `cost` to `identity` under every rule of `rules`, all-or-nothing. Synchronous (a
   * `Decision`) when the backend has the synchronous fast path and answered, else a promise. Rejects
   * (or throws) only for a bad identity or scope, or a backend's `ConfigError`.
   */
  check(identity: string, rules: RuleSet, cost: number, scope?: string): Decision | Promise<Decision>
}

/** The decision of the results of every rule (a store's), or of the policy when `results` is an error. */
function decision(
  rules: readonly Rule[],
  results: readonly BackendResult[] | FastlimitError,
  cost: number,
  open: boolean,
): Decision {
  if (results instanceof FastlimitError) {
    const rule = rules[0] as Rule
    const retryAfterMs = open ? 0 : FAIL_CLOSED_RETRY_MS
    const list = rules.map((r) => ({
      rule: r,
      allowed: open,
      limit: r.burst ?? r.limit,
      remaining: undefined,
      resetMs: undefined,
      retryAfterMs,
    }))
    return {
      ...(list[0] as (typeof list)[number]),
      reason: open ? 'fail-open' : 'fail-closed',
      source: 'policy',
      cost,
      rule,
      rules: list,
      error: results,
    }
  }
  const pick = mostRestrictive(results)
  const p = results[pick] as BackendResult
  return {
    allowed: p.allowed,
    reason: reasonOf(p),
    source: 'backend',
    limit: p.limit,
    remaining: p.remaining,
    resetMs: p.resetMs,
    retryAfterMs: p.retryAfterMs,
    cost,
    rule: rules[pick] as Rule,
    rules: rules.map((rule, i) => ({ ...(results[i] as BackendResult), rule })),
  }
}

/**
 * The limiter of the edge entries (`@fastlimit/hono/lite`): the same keys, rules, algorithms and
 * decisions as `FastLimit`, on any backend, with a timeout and a fail policy; no circuit breaker, cap
 * on calls in flight, events, reservations, leases or waiting (use `FastLimit` for those).
 * Options are checked now: a bad one throws a `ConfigError`.
 *
 * @example
 * ```ts
 * const limiter = createLiteLimiter({ backend: myBackend, timeoutMs: 200, onBackendError: 'fail-closed' })
 * const d = await limiter.check('user-1', parseRules('100/min'), 1)
 * ```
 */
export function createLiteLimiter(options: LiteLimiterOptions = {}): LiteLimiter {
  const {
    backend = liteMemoryBackend(),
    prefix = 'fl',
    timeoutMs = 1000,
    onBackendError = 'fail-open',
  } = options
  if (typeof backend?.checkAndIncrement !== 'function')
    throw new ConfigError(
      `[fastlimit] [core] backend ${show(backend)} does not implement Backend: it needs at least checkAndIncrement(key, bucket, cost).`,
    )
  validatePrefix(prefix)
  checkTimerMs('core', 'timeoutMs', timeoutMs, false, '500')
  if (onBackendError !== 'fail-open' && onBackendError !== 'fail-closed')
    throw new ConfigError(
      `[fastlimit] [core] onBackendError must be 'fail-open' or 'fail-closed' in the lite entry, got ${show(onBackendError)}.`,
    )
  const open = onBackendError === 'fail-open'
  const sync = isSyncBackend(backend) ? backend : undefined

  /** A failure: the backend's own configuration errors are thrown; the rest go to the policy. */
  const failed = (rules: readonly Rule[], cost: number, err: unknown): Decision => {
    if (
      err instanceof FastlimitError &&
      (err.code === 'ERR_FASTLIMIT_CONFIG' || err.code === 'ERR_FASTLIMIT_ARGUMENT')
    )
      throw err
    const error =
      err instanceof FastlimitError
        ? err
        : new FastlimitError(
            'ERR_FASTLIMIT_BACKEND',
            `[fastlimit] [core] The backend failed: ${(err as Error)?.message ?? err}`,
            {
              cause: err,
            },
          )
    return decision(rules, error, cost, open)
  }

  const call = (key: string, rules: readonly Rule[], cost: number): Decision | Promise<Decision> => {
    const n = rules.length
    if (sync !== undefined) {
      try {
        const r =
          n === 1
            ? sync.checkAndIncrementSync(key, rules[0] as Rule, cost)
            : sync.checkAndIncrementAllSync?.(key, rules, cost)
        if (r !== undefined) return decision(rules, Array.isArray(r) ? r : [r], cost, open)
      } catch (err) {
        return failed(rules, cost, err)
      }
    }
    const deadline = { deadline: Date.now() + timeoutMs }
    let timer: ReturnType<typeof setTimeout> | undefined
    return Promise.race([
      new Promise<BackendResult[]>((resolve) => {
        // A backend that throws instead of rejecting is a rejection too.
        resolve(
          n === 1
            ? backend.checkAndIncrement(key, rules[0] as Rule, cost, deadline).then((r) => [r])
            : (backend as Required<Pick<Backend, 'checkAndIncrementAll'>>).checkAndIncrementAll(
                key,
                rules,
                cost,
                deadline,
              ),
        )
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new FastlimitError(
                'ERR_FASTLIMIT_TIMEOUT',
                `[fastlimit] [core] The backend did not answer within ${timeoutMs} ms (timeoutMs); onBackendError applies.`,
              ),
            ),
          timeoutMs,
        )
      }),
    ]).then(
      (results) => {
        clearTimeout(timer)
        return decision(rules, results, cost, open)
      },
      (err) => {
        clearTimeout(timer)
        return failed(rules, cost, err)
      },
    )
  }

  return {
    backend,
    check(identity, set, cost, scope) {
      canCheck(backend, set)
      const key = storageKey(prefix, identity, scope)
      return typeof key === 'string' ? call(key, set.rules, cost) : key.then((k) => call(k, set.rules, cost))
    },
  }
}

/**
 * Checks that `backend` can check every rule of `rules` at once: several rules need `checkAndIncrementAll`.
 * @throws ConfigError naming the missing method
 */
export function canCheck(backend: Backend, rules: RuleSet): void {
  if (rules.rules.length > 1 && typeof backend.checkAndIncrementAll !== 'function')
    throw new ConfigError(
      '[fastlimit] [core] The backend has no checkAndIncrementAll(), which checking several rules at once needs: implement it, or give one rule.',
    )
}
