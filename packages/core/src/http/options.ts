// The options every HTTP adapter shares: one definition, documented once, for Express, Hono and Koa.

import type { Decision, FastLimit } from '../limiter'
import type { RuleSet, RulesInput } from '../rules'
import type { ConcurrencySetting } from './concurrency'
import type { HeaderFormat } from './headers'
import type { ProxyHeader, TrustProxySetting } from './ip'
import type { OutcomeOptions } from './outcome'

/**
 * `rules` as a function of the request: returns the rules for this request (one rule or several, or
 * a `RuleSet`), or a promise of them. Requests with the same rules count in the same buckets as any
 * other middleware with those rules on the same limiter and scope.
 */
export type RulesFunction<Req> = (req: Req) => RulesInput | RuleSet | Promise<RulesInput | RuleSet>

/** A JSON body: what `JSON.stringify` turns into an object or array. */
export type JsonBody = { readonly [key: string]: unknown } | readonly unknown[]

/** What a `message` function returns: text (sent as `text/plain`) or JSON (sent as `application/json`). */
export type MessageBody = string | JsonBody

/**
 * The options of `rateLimit()` in every adapter, `Req` being the framework's request (Express
 * `Request`, Koa `Context`, Hono `Context`), and `Res` its response where it has its own (Express
 * `Response`; `never` where the context holds both: `countWhen` and `settle` then take the context alone). Every option is checked when `rateLimit()` is called;
 * a bad one throws a `ConfigError` naming it.
 */
export interface RateLimitCommonOptions<Req, Res = never> extends OutcomeOptions<Req, Res> {
  /**
   * The limiter that decides, and so where counts live: pass one built on a `RedisBackend` or
   * `SQLiteBackend` to share limits between processes. Share one limiter between middlewares to
   * share its store.
   * @default a new `FastLimit()` in memory, one per `rateLimit()` call
   */
  limiter?: FastLimit
  /**
   * One rule or several (all-or-nothing): `'100/min'`, `['10/s', '1000/day']`,
   * `{ limit: 5, window: '15m', name: 'login' }`. Compiled once, when `rateLimit()` is called.
   *
   * Or a function of the request (may be async) returning the rules for this request: a plan's
   * quota, looked up from its API key. What it returns is compiled once and cached (strings and
   * lists of strings by value, objects and `RuleSet`s by identity, bounded), so a function that
   * returns the same strings or the same objects (a table per plan) costs no parsing per request;
   * a fresh object per request is parsed every time. Something that is not a rule fails the
   * request with a `FastlimitError` (`ERR_FASTLIMIT_ARGUMENT`) naming the value, handed to the
   * framework's error handling like an error of `key`. See {@link RulesFunction}.
   * @default '100/min'
   * @example
   * ```ts
   * const PLANS = { free: '100/hour', pro: ['10/s', '10000/hour'] } as const
   * rateLimit({ key: (req) => apiKey(req), rules: async (req) => PLANS[await planOf(apiKey(req))] })
   * ```
   */
  rules?: RulesInput | RuleSet | RulesFunction<Req>
  /**
   * Who is limited: returns the identity to count against (a user id, an API key). May be async.
   * @default the client's IP address (IPv6 grouped by `ipv6Subnet`), found as `trustProxy` says
   */
  key?: (req: Req) => string | Promise<string>
  /**
   * What a request costs: a whole number (a search may cost 5, a read 1). May be async. `0` means
   * "not counted": the request goes on without a check, RateLimit headers or `rateLimit` info, as if
   * skipped. Anything else that is not a whole number of 1 or more (`NaN` from a bad query
   * parameter, a negative or fractional number, a string) follows `invalidCost`.
   * @default every request costs 1
   */
  cost?: (req: Req) => number | Promise<number>
  /**
   * What to do when `cost` gives an unusable cost (`NaN`, negative, fractional, infinite, larger than
   * 2^53 - 1, or not a number at all), which usually comes from the client's input
   * (`Number(req.query.limit)` for `?limit=abc`):
   * - `'reject'`: answer 400 Bad Request with problem details, charge nothing, and let no handler
   *   run: the request cannot be weighed, so it is not served (in shadow mode it goes on, uncounted).
   * - a whole number: charge that instead (e.g. `1`, or the most a request can cost).
   * A `cost` that returns something other than a number is a bug in the application: warned about
   * once per process, then handled as above.
   * @default 'reject'
   */
  invalidCost?: 'reject' | number
  /**
   * Turns an identity into the form it is counted under, so that spellings of one name share one
   * limit: `normalizeIdentity` (NFKC, case folded, invisible characters removed) makes `'Admin'`,
   * `'ＡＤＭＩＮ'` and `'admin\u200b'` one user. Applied to what `key` returns, so it needs `key` (client
   * addresses are canonical already). Must be fast; what it throws goes to the framework's error handling.
   * @default undefined: identities are counted as they are
   */
  normalize?: (identity: string) => string
  /**
   * Requests for which this returns `true` are neither counted nor limited, and get no RateLimit
   * headers (health checks, internal traffic). May be async.
   * @default nothing is skipped
   */
  skip?: (req: Req) => boolean | Promise<boolean>
  /**
   * Methods whose requests are neither counted nor limited, and get no RateLimit headers. `OPTIONS` by
   * default: a browser sends a CORS preflight before many cross-origin requests, which would otherwise
   * halve the client's budget, and answering it does no work the limit protects. `HEAD` is counted:
   * it runs the same handler as `GET`. `[]` counts every request.
   * @default ['OPTIONS']
   */
  skipMethods?: readonly string[]
  /**
   * Client addresses that are never limited: IPs, CIDRs (`'10.0.0.0/8'`, `'2001:db8::/32'`) and the
   * names `'loopback'`, `'linklocal'`, `'private'`. Matched against the client address found as
   * `trustProxy` says: the connection's peer unless it is a trusted proxy, so a client connecting
   * directly cannot claim an allowed address in a header (unless `trustProxy` is a bare number).
   * @default []
   */
  allowList?: readonly string[]
  /**
   * Which RateLimit headers to send: `'draft-7'` (`RateLimit` + `RateLimit-Policy`), `'draft-6'`
   * (`RateLimit-Limit`, `-Remaining`, `-Reset` + `RateLimit-Policy`), `'draft-8'` (named policies),
   * `'legacy'` (`X-RateLimit-*` only), `true` for the default, or `false` for none.
   * `Retry-After` is sent on every refusal whatever this says. When several middlewares count one
   * request (an app-wide limit and a route's), the response carries one set of fields for all of
   * them: `RateLimit-Policy` lists every rule, `RateLimit` the most restrictive (draft-8: one item per
   * middleware). No RateLimit fields describe a decision taken by `onBackendError` (nothing is known).
   * @default 'draft-7'
   */
  headers?: HeaderFormat | boolean
  /**
   * Also send `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (epoch seconds),
   * describing the same rule as `RateLimit` (with several middlewares on a request, the most
   * restrictive of all of them, whichever middleware asked for these fields).
   * @default false
   */
  legacyHeaders?: boolean
  /**
   * The status of a request refused for being over the limit: 400 to 599. Outages have their own,
   * `outageStatusCode`.
   * @default 429
   */
  statusCode?: number
  /**
   * The status of a request refused because the limiter could not decide and `onBackendError` is
   * `'fail-closed'` (the store is down or too slow, or the circuit breaker is open): 400 to 599. It
   * is sent with `Retry-After` and no RateLimit headers (nothing is known of the client's standing),
   * so clients and monitoring tell an outage from a rate limit.
   * @default 503
   */
  outageStatusCode?: number
  /**
   * The body of a refused request (over the limit, or an outage): text (sent as `text/plain`), an
   * object (sent as JSON), or a function of the request and the decision returning either (may be
   * async; `decision.reason === 'fail-closed'` tells an outage).
   * @default an RFC 9457 problem details object, sent as `application/problem+json`
   */
  message?: MessageBody | ((req: Req, decision: Decision) => MessageBody | Promise<MessageBody>)
  /**
   * `'enforce'` refuses requests over the limit. `'shadow'` decides, counts, sends RateLimit headers
   * and calls `onLimit`, but lets every request through: measure a new limit before enforcing it.
   * `'delay'` holds a request over the limit until the limit admits it (slowing a client down instead
   * of refusing it), for at most `maxDelayMs`: see {@link RateLimitCommonOptions.maxDelayMs}. One mode
   * at a time, so shadow and delay do not mix.
   * @default 'enforce'
   */
  mode?: 'enforce' | 'shadow' | 'delay'
  /**
   * With `mode: 'delay'` (required there, refused with the other modes): the longest a request over
   * the limit is held, in milliseconds, 1 to 2147483647. A held request is admitted (and charged) at
   * the exact time the store says its cost fits, through `limiter.wait`: no polling, first come first
   * served per client in this process, never over the limit across processes. A request that cannot
   * be admitted within `maxDelayMs` is refused at once with the usual 429 and `Retry-After`, without
   * waiting in vain. A client that disconnects while held leaves its place to the next one at once and
   * its handler never runs; it is charged nothing (unless it left while its check was at the store,
   * which may then have charged it). The RateLimit headers of a held request describe the decision
   * that admitted it; `onLimit` is called for refused requests only. If the limiter is closed while
   * requests are held, they get what `onBackendError` answers when the store is out of reach
   * (`'fail-open'` lets them through, `'fail-closed'` and `{ fallback }` answer `outageStatusCode`,
   * `'throw'` passes the error on).
   * @default none
   * @example
   * ```ts
   * rateLimit({ rules: '10/s', mode: 'delay', maxDelayMs: 5000 }) // over 10/s: served late, up to 5 s
   * ```
   */
  maxDelayMs?: number
  /**
   * With `mode: 'delay'`: the most requests held at once per client (identity) in this process; one
   * more is refused at once with 429, its `Retry-After` saying `maxDelayMs` (by then every request
   * ahead has been served or refused). Bounds the memory and sockets a flood of one client can hold.
   * A whole number from 1 to 1000000000.
   * @default 1000
   */
  maxQueue?: number
  /**
   * Called with every request found over the limit (and every `'fail-closed'` refusal, whose
   * `decision.reason` says so), in both modes: log or count them here. In shadow mode it is how you
   * see what enforcing would refuse.
   * @default undefined
   */
  onLimit?: (req: Req, decision: Decision) => void
  /**
   * Which proxies in front of the app to believe about the client's address:
   * - `false`: none; the client is the connection's peer (forwarding headers are ignored, so they
   *   cannot be spoofed). A request from a loopback or private peer that carries a forwarding header
   *   makes the process warn once: the app is probably behind a proxy it does not trust.
   * - `{ hops, from }` (recommended): at most `hops` proxies, each connecting from an address of `from`
   *   (addresses, CIDRs and the names `'loopback'`, `'linklocal'`, `'private'`). The header is read only
   *   when the peer is in `from`, then right to left, one hop per proxy in `from`; the first other
   *   address is the client. A client that reaches the app directly is its own peer address, whatever
   *   its headers say. `from: 'any'` believes any peer: only when nothing but your proxies can reach
   *   the app (a platform's router). Without `hops`, every proxy in `from` in a row is skipped.
   * - a list of addresses, CIDRs and range names: `{ from: list }`, however many hops.
   * - a number: that many proxies, from any peer. A client that reaches the app directly then picks
   *   its own address; the process warns once. Prefer `{ hops, from }`.
   * @default false
   * @example
   * ```ts
   * rateLimit({ trustProxy: { hops: 1, from: ['10.0.0.0/8'] } }) // one load balancer in 10.0.0.0/8
   * ```
   */
  trustProxy?: TrustProxySetting
  /**
   * The header your trusted proxies write the client's address to: `'x-forwarded-for'` or the
   * RFC 7239 `'forwarded'`. Only this one is read, so a client cannot pick the other.
   * @default 'x-forwarded-for'
   */
  proxyHeader?: ProxyHeader
  /**
   * IPv6 clients are keyed by their network of this many bits (1 to 128), because one subscriber
   * usually holds a whole /56 (or /48 or /64) and can change address at will. `false` keys each
   * IPv6 address alone. IPv6 addresses that stand for an IPv4 client are keyed as that IPv4 address:
   * IPv4-mapped `::ffff:1.2.3.4`, NAT64 `64:ff9b::1.2.3.4`, `::ffff:0:1.2.3.4`, `::1.2.3.4`, 6to4
   * (`2002::/16`) and Teredo (`2001::/32`). Two middlewares with different subnets (and scopes) give
   * layered limits, e.g. 100/min per /56 and 1000/min per /48.
   * @default 56
   */
  ipv6Subnet?: number | false
  /**
   * A key space of its own (`'login'`, `'search'`), so that middlewares sharing one limiter and the
   * same rule count separately: passed to `limiter.check(identity, rules, { scope })`, so no identity,
   * whatever `key` returns, can reach into a scope or out of one. 1 to 64 of `A-Z a-z 0-9 _ . : -`.
   * @default undefined: the limiter's unscoped key space
   */
  scope?: string
  /**
   * A concurrency (in-flight) limit besides the rate rules: at most `limit` requests of one client (its
   * `key`, in this middleware's `scope`) in progress at once, each holding a slot from the moment it is
   * admitted until its response ends or the client disconnects (a request that never ends loses its
   * slot after `leaseMs`, default 60 s). A number `n` is `{ limit: n }`. Needs a limiter whose backend
   * has `acquire` and `release` (MemoryBackend, SQLiteBackend, RedisBackend).
   *
   * Order: skipped, allow-listed and cost-0 requests take no slot. Then the slot is taken, then the
   * rate rules are checked: a request refused for concurrency is not charged by the rate rules, and a
   * request the rate rules refuse gives its slot back before its refusal is sent. A refusal for
   * concurrency gets `statusCode` (429), `Retry-After` (when the earliest slot expires at the latest),
   * no RateLimit headers, and a problem details body saying so; `handler`, `message` and `onLimit`
   * receive a decision with `reason: 'concurrency-limited'`. Under `onBackendError: 'fail-closed'` an
   * outage is refused as for the rate rules (`outageStatusCode`); `'fail-open'` lets the request in
   * holding nothing. In shadow mode nothing is refused, and `onLimit` still hears it.
   * @default undefined: no concurrency limit
   * @example
   * ```ts
   * rateLimit({ rules: '100/min', concurrency: { limit: 5, leaseMs: 30_000 } })
   * ```
   */
  concurrency?: ConcurrencySetting
  /**
   * The clock, in epoch milliseconds, against which `RateLimit` reset values are computed. Give the
   * backend's clock when it has its own (tests with a fake clock).
   * @default Date.now
   */
  clock?: () => number
}
