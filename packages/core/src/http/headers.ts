// RateLimit headers of the IETF httpapi drafts -06, -07 and -08, the legacy X-RateLimit-* set and Retry-After.

import { ConfigError, show } from '../errors'
import type { Decision, StoreDecision } from '../limiter'
import type { Rule, RuleSet } from '../rules'
import { mostRestrictive } from '../verdict'

/**
 * Which RateLimit header fields to send:
 * - `'draft-6'`: `RateLimit-Policy`, `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`
 *   (draft-ietf-httpapi-ratelimit-headers-06).
 * - `'draft-7'`: `RateLimit-Policy: 100;w=60` and one `RateLimit: limit=100, remaining=99, reset=60`
 *   (draft-ietf-httpapi-ratelimit-headers-07). The default.
 * - `'draft-8'`: named policies, `RateLimit-Policy: "100/1m";q=100;w=60` and `RateLimit: "100/1m";r=99;t=60`
 *   (draft-ietf-httpapi-ratelimit-headers-08).
 * - `'legacy'`: only `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (epoch seconds).
 */
export type HeaderFormat = 'draft-6' | 'draft-7' | 'draft-8' | 'legacy'

/** The formats {@link HeaderFormat} names. */
export const HEADER_FORMATS: readonly HeaderFormat[] = ['draft-6', 'draft-7', 'draft-8', 'legacy']

/**
 * Sets one response header on `target`. Adapters pass their framework's setter. Names come in lower
 * case (`ratelimit-policy`): field names are case-insensitive (RFC 9110 §5.1), HTTP/2 and HTTP/3 send
 * them in lower case anyway, and Node's `setHeader` and header serialisation skip work for them.
 */
export type SetHeader<T> = (target: T, name: string, value: string) => void

/** Whole seconds (rounded up, never negative) until `ms` milliseconds from now: delay-seconds. */
export function delaySeconds(ms: number): number {
  return ms > 0 ? Math.ceil(ms / 1000) : 0
}

/** Per-rule strings that never change, built once. */
interface RuleStrings {
  readonly rule: Rule
  readonly limit: string
  /** draft-7 `RateLimit` up to the remaining count: `limit=100, remaining=`. */
  readonly draft7: string
  /** draft-8 `RateLimit` up to the remaining count: `"name";r=`. */
  readonly draft8: string
}

function windowSeconds(rule: Rule): number {
  // Sub-second precision is not supported by the drafts (-07 §2.3, -08 §3.1.3): round up.
  return Math.ceil(rule.windowMs / 1000)
}

function capacity(rule: Rule): number {
  return rule.burst ?? rule.limit
}

function ruleStrings(rule: Rule): RuleStrings {
  const cap = capacity(rule)
  // Rule names are 1 to 64 of A-Z a-z 0-9 _ . : / + -: valid inside an sf-string, no escaping needed.
  return { rule, limit: String(cap), draft7: `limit=${cap}, remaining=`, draft8: `"${rule.name}";r=` }
}

/**
 * The RateLimit header fields of one rule set, with everything that does not change per request
 * (policy strings, limits, names) built once. Headers for several rules report the most
 * restrictive one (`decision.rule`), as draft-07 §4 requires ("the time window with the lower
 * remaining") and draft-08 Appendix B.3.2 shows; `RateLimit-Policy` lists every rule. When several
 * middlewares count one request, {@link applyCombined} writes one set of fields for all of them.
 *
 * Reset values are whole seconds, rounded up, never negative. On a denied decision the reset is the
 * retry-after delay, so it "references the same point in time as the Retry-After field"
 * (draft-07 §4, draft-08 §5).
 *
 * @example
 * ```ts
 * const headers = new RateLimitHeaders(limiter.rules('100/min'), 'draft-7')
 * headers.toObject(decision, Date.now())
 * // { 'ratelimit-policy': '100;w=60', ratelimit: 'limit=100, remaining=99, reset=1' }
 * ```
 */
export class RateLimitHeaders {
  /** The format, or `false` for none. */
  readonly format: HeaderFormat | false
  /** Whether the legacy `X-RateLimit-*` headers are added. */
  readonly legacy: boolean
  /** The `RateLimit-Policy` value, or `undefined` when the format has none. */
  readonly policy: string | undefined
  /** The rules' quota policies in the draft-06 and draft-07 syntax (`100;w=60, 1000;w=86400`). */
  readonly quotaPolicy: string
  readonly #rules: readonly RuleStrings[]
  /** The last list of headers this one ended, with its joined quota policies: layered routes repeat it. */
  #combined: { readonly list: readonly RateLimitHeaders[]; readonly quota: string } | undefined

  constructor(rules: RuleSet, format: HeaderFormat | false, legacy = false) {
    if (format !== false && !HEADER_FORMATS.includes(format)) {
      throw new ConfigError(
        `[fastlimit] [core] Unknown header format ${show(format)}: use 'draft-6', 'draft-7', 'draft-8', 'legacy' or false.`,
      )
    }
    this.format = format
    this.legacy = legacy || format === 'legacy'
    const list = rules.rules
    this.#rules = list.map(ruleStrings)
    this.quotaPolicy = quotaPolicies(list)
    if (format === 'draft-6' || format === 'draft-7') {
      this.policy = this.quotaPolicy
    } else if (format === 'draft-8') {
      this.policy = namedPolicies(list, undefined)
    } else {
      this.policy = undefined
    }
  }

  /** The rules, in order. */
  get rules(): readonly Rule[] {
    return this.#rules.map((s) => s.rule)
  }

  #strings(rule: Rule): RuleStrings {
    const list = this.#rules
    for (let i = 0; i < list.length; i++) {
      const s = list[i] as RuleStrings
      if (s.rule === rule) return s
    }
    return ruleStrings(rule)
  }

  /**
   * Writes the headers of `decision` through `set`, with `nowMs` the clock the backend decided on.
   * Sets nothing when the format is `false` and legacy headers are off, or for a decision of the error
   * policy (`source: 'policy'`), which knows nothing of the client's standing.
   */
  apply<T>(target: T, set: SetHeader<T>, decision: Decision, nowMs: number): void {
    const format = this.format
    if ((format === false && !this.legacy) || decision.source === 'policy') return
    const s = this.#strings(decision.rule)
    const resetMs = resetDelayMs(decision, nowMs)
    const reset = delaySeconds(resetMs)
    const remaining = decision.remaining
    if (format === 'draft-7') {
      set(target, 'ratelimit-policy', this.policy as string)
      // draft-07 §3.1: a Dictionary with the limit, remaining and reset keys.
      set(target, 'ratelimit', `${s.draft7}${remaining}, reset=${reset}`)
    } else if (format === 'draft-8') {
      set(target, 'ratelimit-policy', this.policy as string)
      // draft-08 §4.1: a Service Limit Item naming the policy, with `r` (§4.1.1) and `t` (§4.1.2).
      set(target, 'ratelimit', `${s.draft8}${remaining};t=${reset}`)
    } else if (format === 'draft-6') {
      set(target, 'ratelimit-policy', this.policy as string)
      set(target, 'ratelimit-limit', s.limit)
      set(target, 'ratelimit-remaining', String(remaining))
      set(target, 'ratelimit-reset', String(reset))
    }
    if (this.legacy) writeLegacy(target, set, s.limit, remaining, nowMs, resetMs)
  }

  /** The headers of `decision` as an object, in the order they would be set. */
  toObject(decision: Decision, nowMs: number): Record<string, string> {
    const out: Record<string, string> = {}
    this.apply(out, setOnObject, decision, nowMs)
    return out
  }

  /** The capacity, as text, of one of this set's rules. */
  static limitOf(headers: RateLimitHeaders, rule: Rule): string {
    return headers.#strings(rule).limit
  }

  /** The quota policies of every entry, joined: remembered by the last entry's headers for the next request. */
  static quotaOf(entries: readonly HeaderEntry[]): string {
    const last = (entries[entries.length - 1] as HeaderEntry).headers
    const memo = last.#combined
    if (memo !== undefined && memo.list.length === entries.length) {
      let same = true
      for (let i = 0; i < entries.length && same; i++)
        same = memo.list[i] === (entries[i] as HeaderEntry).headers
      if (same) return memo.quota
    }
    const list = entries.map((e) => e.headers)
    const quota = list.map((h) => h.quotaPolicy).join(', ')
    last.#combined = { list, quota }
    return quota
  }
}

/**
 * The quota policies of rules in the draft-06 and draft-07 syntax (`100;w=60, 1000;w=86400`): the
 * `RateLimit-Policy` value of those formats.
 */
export function quotaPolicies(rules: readonly Rule[]): string {
  // Quota policies: draft-06 §2.1 and draft-07 §2.1 (`100;w=60`), a List (draft-07 §3.5);
  // burst as the extension parameter of the draft-07 §2.3 example.
  return rules
    .map((r) => {
      const burst = r.burst !== undefined && r.burst !== r.limit ? `;burst=${r.burst}` : ''
      return `${r.limit};w=${windowSeconds(r)}${burst}`
    })
    .join(', ')
}

/** The draft-07 `RateLimit` value (§3.1, a Dictionary): `limit=100, remaining=99, reset=60`. */
export function draft7Value(limit: number | string, remaining: number, resetSeconds: number): string {
  return `limit=${limit}, remaining=${remaining}, reset=${resetSeconds}`
}

/** Milliseconds until the reset the headers report: the retry-after delay when denied (draft-07 §4, draft-08 §5). */
export function resetDelayMs(decision: StoreDecision, nowMs: number): number {
  const retry = decision.retryAfterMs
  return !decision.allowed && retry !== Number.POSITIVE_INFINITY ? retry : decision.resetMs - nowMs
}

function writeLegacy<T>(
  target: T,
  set: SetHeader<T>,
  limit: string,
  remaining: number,
  nowMs: number,
  resetMs: number,
): void {
  set(target, 'x-ratelimit-limit', limit)
  set(target, 'x-ratelimit-remaining', String(remaining))
  set(target, 'x-ratelimit-reset', String(Math.ceil((nowMs + (resetMs > 0 ? resetMs : 0)) / 1000)))
}

/**
 * draft-08 Quota Policy Items (§3.1): a String naming each policy, with `q` and `w` (§3.1.1, §3.1.3).
 * `names` gives the name to use for each rule when it differs from the rule's own.
 */
function namedPolicies(rules: readonly Rule[], names: readonly string[] | undefined): string {
  return rules.map((r, i) => `"${names?.[i] ?? r.name}";q=${r.limit};w=${windowSeconds(r)}`).join(', ')
}

/** One middleware's part of a response's RateLimit header fields. */
export interface HeaderEntry {
  /** The middleware's header writer: its rules, format and legacy setting. */
  readonly headers: RateLimitHeaders
  /** What the middleware decided for the request. */
  readonly decision: StoreDecision
  /** The middleware's clock when it decided, in epoch milliseconds. */
  readonly nowMs: number
}

/**
 * Writes one set of RateLimit header fields for a request that several middlewares counted (an
 * app-wide limit and a route's), so that no middleware's fields hide another's:
 * - `RateLimit-Policy` lists every rule of every middleware, in the order they ran.
 * - draft-07 `RateLimit`, draft-06 `RateLimit-Limit`/`-Remaining`/`-Reset` and the legacy
 *   `X-RateLimit-*` fields describe one rule, the most restrictive of all (a denying one with the
 *   longest wait, otherwise the one with the least remaining), as draft-07 §4 asks.
 * - draft-08 `RateLimit` is a List (§4) with one Service Limit Item per middleware, its most
 *   restrictive rule. Policy names that two middlewares share get a suffix (`"100/1m-2"`) so that
 *   each item names one policy.
 *
 * Each format some middleware asked for is written, in the order of the middleware that last asked
 * for it, so where two formats share a field name (`RateLimit` in draft-07 and draft-08) the last
 * middleware's format is the one sent; legacy fields are sent when any middleware asked for them.
 * With a single entry this is exactly {@link RateLimitHeaders.apply}.
 */
export function applyCombined<T>(target: T, set: SetHeader<T>, entries: readonly HeaderEntry[]): void {
  const n = entries.length
  if (n === 0) return
  if (n === 1) {
    const e = entries[0] as HeaderEntry
    e.headers.apply(target, set, e.decision, e.nowMs)
    return
  }
  let legacy = false
  // The formats asked for, in the order of the middleware that last asked for each; built only when they differ.
  let format: HeaderFormat | undefined
  let formats: HeaderFormat[] | undefined
  for (let i = 0; i < n; i++) {
    const e = entries[i] as HeaderEntry
    if (e.headers.legacy) legacy = true
    const f = e.headers.format
    if (f !== false && f !== 'legacy' && f !== format) {
      if (format !== undefined && formats === undefined) formats = [format]
      if (formats !== undefined) {
        const at = formats.indexOf(f)
        if (at >= 0) formats.splice(at, 1)
        formats.push(f)
      }
      format = f
    }
  }
  const p = entries[mostRestrictive(entries.map((e) => e.decision))] as HeaderEntry
  const limit = RateLimitHeaders.limitOf(p.headers, p.decision.rule)
  const resetMs = resetDelayMs(p.decision, p.nowMs)
  const reset = delaySeconds(resetMs)
  const remaining = p.decision.remaining
  const list = formats ?? (format === undefined ? [] : [format])
  for (let i = 0; i < list.length; i++) {
    const f = list[i] as HeaderFormat
    if (f === 'draft-8') {
      writeNamed(target, set, entries)
    } else {
      set(target, 'ratelimit-policy', RateLimitHeaders.quotaOf(entries))
      if (f === 'draft-7') {
        set(target, 'ratelimit', draft7Value(limit, remaining, reset))
      } else {
        set(target, 'ratelimit-limit', limit)
        set(target, 'ratelimit-remaining', String(remaining))
        set(target, 'ratelimit-reset', String(reset))
      }
    }
  }
  if (legacy) writeLegacy(target, set, limit, remaining, p.nowMs, resetMs)
}

/** draft-08 fields for several middlewares: every policy, and one Service Limit Item per middleware. */
function writeNamed<T>(target: T, set: SetHeader<T>, entries: readonly HeaderEntry[]): void {
  const used = new Set<string>()
  const policies: string[] = []
  const items: string[] = []
  for (const e of entries) {
    const rules = e.headers.rules
    const names = rules.map((r) => {
      let name = r.name
      for (let k = 2; used.has(name); k++) name = `${r.name}-${k}`
      used.add(name)
      return name
    })
    policies.push(namedPolicies(rules, names))
    const at = rules.indexOf(e.decision.rule)
    const name = at >= 0 ? (names[at] as string) : e.decision.rule.name
    items.push(`"${name}";r=${e.decision.remaining};t=${delaySeconds(resetDelayMs(e.decision, e.nowMs))}`)
  }
  set(target, 'ratelimit-policy', policies.join(', '))
  set(target, 'ratelimit', items.join(', '))
}

function setOnObject(target: Record<string, string>, name: string, value: string): void {
  target[name] = value
}

/**
 * The `Retry-After` value (RFC 9110 §10.2.3 delay-seconds) of a denied decision: whole seconds,
 * rounded up; `undefined` when the request can never pass (`retryAfterMs` is `Infinity`).
 */
export function retryAfterValue(retryAfterMs: number): string | undefined {
  if (retryAfterMs === Number.POSITIVE_INFINITY || !(retryAfterMs >= 0)) return undefined
  return String(delaySeconds(retryAfterMs))
}
