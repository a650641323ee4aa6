// The lite entry's HTTP layer: one middleware's options checked once, then skip, key, cost, check,
// draft-7 RateLimit headers, Retry-After and the refusal, with the full entry's functions for each.

import { ConfigError, show } from '../errors'
import { delaySeconds, draft7Value, quotaPolicies, resetDelayMs, retryAfterValue } from '../http/headers'
import { type HttpAdapter, INVALID_COST, problemDetails } from '../http/http-limiter'
import { ipKey, parseIp } from '../http/ip'
import type { MessageBody } from '../http/options'
import type { Decision } from '../limiter'
import { parseRules, type RuleSet, type RulesInput } from '../rules'
import { canCheck, createLiteLimiter, type LiteLimiterOptions } from './limiter'
import type { LiteProxyTrust } from './trust'

/**
 * The options of a lite middleware (`@fastlimit/hono/lite`), `Req` being the framework's request. Each
 * means what the full entry's option of the same name means; what the full entry has besides
 * (delay and shadow modes, `countWhen`/`settle`, `concurrency`, `allowList`, rules per request,
 * `normalize`, `invalidCost`, draft-6/-8 and legacy headers, a shared `FastLimit`) is not here.
 */
export interface LiteRateLimitOptions<Req> extends LiteLimiterOptions {
  /**
   * One rule or several (all-or-nothing): `'100/min'`, `'10 per sec'`, `['10/s', '1000/day']`,
   * `{ limit: 5, window: '15m', name: 'login' }`. The full entry's grammar; gcra unless a rule names
   * another algorithm (which the backend must apply: see `liteMemoryBackend`'s `steps`).
   * @default '100/min'
   */
  rules?: RulesInput | RuleSet
  /**
   * Who is limited: returns the identity to count against (a user id, an API key). May be async.
   * Any string: it is escaped (or hashed) into a key no other identity shares.
   * @default the client's IP address (IPv6 grouped by `ipv6Subnet`), found as `trustProxy` says
   */
  key?: (req: Req) => string | Promise<string>
  /**
   * What a request costs: a whole number. May be async. `0` means not counted (no check, no headers);
   * anything else that is not a whole number of 1 or more is answered 400 (problem details).
   * @default every request costs 1
   */
  cost?: (req: Req) => number | Promise<number>
  /**
   * Requests for which this returns `true` are neither counted nor limited. May be async.
   * @default nothing is skipped
   */
  skip?: (req: Req) => boolean | Promise<boolean>
  /**
   * Methods whose requests are neither counted nor limited.
   * @default ['OPTIONS']
   */
  skipMethods?: readonly string[]
  /**
   * `'draft-7'` (or `true`): `RateLimit-Policy: 100;w=60` and `RateLimit: limit=100, remaining=99, reset=60`
   * on every counted request; `false`: none. `Retry-After` is sent on every refusal either way.
   * @default 'draft-7'
   */
  headers?: 'draft-7' | boolean
  /**
   * The status of a request over the limit: 400 to 599.
   * @default 429
   */
  statusCode?: number
  /**
   * The status of a request refused because the store failed or timed out under
   * `onBackendError: 'fail-closed'`: 400 to 599. Sent with `Retry-After: 1` and no RateLimit headers.
   * @default 503
   */
  outageStatusCode?: number
  /**
   * The body of a refusal: text, an object (sent as JSON) or a function of the request and the decision
   * returning either (may be async).
   * @default an RFC 9457 problem details object, sent as `application/problem+json`
   */
  message?: MessageBody | ((req: Req, decision: Decision) => MessageBody | Promise<MessageBody>)
  /**
   * Called with every refused request (over the limit, or an outage under `'fail-closed'`).
   * @default undefined
   */
  onLimit?: (req: Req, decision: Decision) => void
  /**
   * Which proxies to believe about the client's address: `false` (none: the connection's peer,
   * forwarding headers ignored), or what {@link proxyTrust} builds from the full entry's `trustProxy`
   * setting and `proxyHeader` (imported only by apps that need it, so others do not bundle the header parsers).
   * @default false
   * @example
   * ```ts
   * rateLimit({ trustProxy: proxyTrust({ hops: 1, from: ['10.0.0.0/8'] }) })
   * ```
   */
  trustProxy?: false | LiteProxyTrust
  /**
   * IPv6 clients are keyed by their network of this many bits (1 to 128); `false` keys each address alone.
   * @default 56
   */
  ipv6Subnet?: number | false
  /**
   * A key space of its own (`'login'`): 1 to 64 of `A-Z a-z 0-9 _ . : -`.
   * @default undefined
   */
  scope?: string
  /**
   * The clock the `RateLimit` reset is computed against, in epoch milliseconds (give the backend's).
   * @default Date.now
   */
  clock?: () => number
}

/**
 * How a lite adapter reads its framework's request: the request half of the full layer's
 * {@link HttpAdapter} (plain functions, called without `this`).
 */
export type LiteAdapter<Req> = Pick<
  HttpAdapter<Req, unknown>,
  'name' | 'extraOptions' | 'requestName' | 'noAddressHint' | 'remoteAddress' | 'header' | 'method'
>

/** A refusal to send, the headers already set: over the limit, an outage, or (no `decision`) a bad cost. */
export interface LiteRefusal {
  /** `statusCode`, `outageStatusCode`, or 400 for a cost that cannot be weighed. */
  readonly status: number
  /** The `Content-Type` of `body`. */
  readonly contentType: string
  /** The body, serialized. */
  readonly body: string
  /** The decision that refused the request; `undefined` for a bad cost. */
  readonly decision?: Decision
}

/**
 * Decides one request: sets the headers through `set` and resolves with the refusal to send, or
 * `undefined` to let the request go on. Rejects with the error of `key`, `cost`, `skip` or `message`.
 */
export type LiteHttp<Req> = (
  req: Req,
  set: (name: string, value: string) => void,
) => Promise<LiteRefusal | undefined>

const OPTIONS = [
  'rules',
  'backend',
  'prefix',
  'timeoutMs',
  'onBackendError',
  'key',
  'cost',
  'skip',
  'skipMethods',
  'headers',
  'statusCode',
  'outageStatusCode',
  'message',
  'onLimit',
  'trustProxy',
  'ipv6Subnet',
  'scope',
  'clock',
]
const PROBLEM_JSON = 'application/problem+json'

/**
 * Builds the HTTP layer of a lite middleware. Checks every option now and throws a `ConfigError`
 * naming the adapter for a bad one (an unknown option, a bad rule, a status out of range, ...).
 */
export function createLiteHttp<Req>(
  options: LiteRateLimitOptions<Req> | undefined,
  adapter: LiteAdapter<Req>,
): LiteHttp<Req> {
  const fail = (message: string): never => {
    throw new ConfigError(`[fastlimit] [${adapter.name}] ${message}`)
  }
  /** Fails unless `ok`, saying what `name` must be. */
  const need = (ok: boolean, name: string, want: string, value: unknown): void => {
    if (!ok) fail(`${name} must be ${want}, got ${show(value)}.`)
  }
  const o = options ?? {}
  const known = [...OPTIONS, ...(adapter.extraOptions ?? [])]
  for (const name of Object.keys(o))
    need(known.includes(name), 'Each option', `one of ${known.join(', ')}`, name)
  const fn = <F>(name: keyof LiteRateLimitOptions<Req>): F | undefined => {
    const value = o[name]
    need(value === undefined || typeof value === 'function', name, 'a function', value)
    return value as F | undefined
  }
  const status = (name: 'statusCode' | 'outageStatusCode', value: number): number => {
    need(
      Number.isInteger(value) && value >= 400 && value <= 599,
      name,
      'a whole number from 400 to 599',
      value,
    )
    return value
  }
  const { backend, scope } = o
  const rules = parseRules(o.rules ?? '100/min')
  for (const r of rules.rules)
    need(
      backend !== undefined || r.algorithm === 'gcra',
      'rules without a backend',
      'gcra, or pass backend: liteMemoryBackend({ steps }) with their steps',
      r.algorithm,
    )
  const limiter = createLiteLimiter({
    backend,
    prefix: o.prefix,
    timeoutMs: o.timeoutMs,
    onBackendError: o.onBackendError,
  })
  canCheck(limiter.backend, rules)
  need(
    scope === undefined || (typeof scope === 'string' && /^[A-Za-z0-9_.:-]{1,64}$/.test(scope)),
    'scope',
    "1 to 64 of A-Z a-z 0-9 _ . : -, e.g. 'login'",
    scope,
  )
  const keyFn = fn<(req: Req) => string | Promise<string>>('key')
  const costFn = fn<(req: Req) => number | Promise<number>>('cost')
  const skip = fn<(req: Req) => boolean | Promise<boolean>>('skip')
  const onLimit = fn<(req: Req, decision: Decision) => void>('onLimit')
  const clock = fn<() => number>('clock') ?? Date.now
  const skipMethods = o.skipMethods ?? ['OPTIONS']
  need(
    Array.isArray(skipMethods) && skipMethods.every((m) => typeof m === 'string'),
    'skipMethods',
    "a list of methods, e.g. ['OPTIONS']",
    skipMethods,
  )
  const skipped = skipMethods.map((m) => m.toUpperCase())
  const headers = o.headers ?? true
  need(
    headers === true || headers === false || headers === 'draft-7',
    'headers',
    "'draft-7', true or false (other formats: the full entry)",
    headers,
  )
  const policy = headers === false ? undefined : quotaPolicies(rules.rules)
  const statusCode = status('statusCode', o.statusCode ?? 429)
  const outageStatusCode = status('outageStatusCode', o.outageStatusCode ?? 503)
  const message = o.message
  need(
    message === undefined ||
      typeof message === 'function' ||
      typeof message === 'string' ||
      (typeof message === 'object' && message !== null),
    'message',
    'a string, a plain object or a function',
    message,
  )
  const trust = o.trustProxy ?? false
  need(
    trust === false || typeof trust?.walk === 'function',
    'trustProxy',
    'false or proxyTrust(setting), e.g. proxyTrust({ hops: 1 })',
    trust,
  )
  const subnet = o.ipv6Subnet ?? 56
  need(
    subnet === false || (Number.isInteger(subnet) && subnet >= 1 && subnet <= 128),
    'ipv6Subnet',
    'a prefix length from 1 to 128, or false',
    subnet,
  )

  const noAddress = (): never =>
    fail(
      "Cannot find the client's address for this request, so it cannot be limited by IP: pass " +
        `key: (${adapter.requestName ?? 'req'}) => ... to identify clients yourself` +
        (adapter.noAddressHint === undefined ? '' : `, or ${adapter.noAddressHint}`) +
        ', or trustProxy if the app listens on a Unix socket behind a proxy.',
    )

  /** The client's IP key: the peer, or the first untrusted hop through the trusted proxies. */
  const clientKey = (req: Req): string => {
    const remote = adapter.remoteAddress(req)
    if (remote === '') return noAddress()
    const peer = remote === undefined ? undefined : parseIp(remote)
    // An address that is not an IP comes from the platform, not the client: counted as it is.
    if (peer === undefined && remote !== undefined) return remote
    const ip = trust === false ? peer : trust.walk(peer, (name) => adapter.header(req, name))
    return ip === undefined ? noAddress() : ipKey(ip, subnet)
  }

  const refuse = async (req: Req, decision: Decision): Promise<LiteRefusal> => {
    const code = decision.reason === 'fail-closed' ? outageStatusCode : statusCode
    const m = typeof message === 'function' ? await message(req, decision) : message
    if (m === undefined)
      return { status: code, contentType: PROBLEM_JSON, body: problemDetails(code, decision), decision }
    return typeof m === 'string'
      ? { status: code, contentType: 'text/plain; charset=utf-8', body: m, decision }
      : { status: code, contentType: 'application/json; charset=utf-8', body: JSON.stringify(m), decision }
  }

  return async (req, set) => {
    if (skipped.includes(adapter.method(req)) || (skip !== undefined && (await skip(req)) === true))
      return undefined
    const identity = keyFn === undefined ? clientKey(req) : await keyFn(req)
    let cost = 1
    if (costFn !== undefined) {
      cost = await costFn(req)
      if (cost === 0) return undefined
      if (typeof cost !== 'number' || !(cost > 0) || !Number.isSafeInteger(cost)) return INVALID_COST
    }
    const decision = await limiter.check(identity, rules, cost, scope)
    if (policy !== undefined && decision.source !== 'policy') {
      const now = clock()
      set('ratelimit-policy', policy)
      set(
        'ratelimit',
        draft7Value(
          decision.rule.burst ?? decision.rule.limit,
          decision.remaining,
          delaySeconds(resetDelayMs(decision, now)),
        ),
      )
    }
    if (decision.allowed) return undefined
    onLimit?.(req, decision)
    const retry = retryAfterValue(decision.retryAfterMs)
    if (retry !== undefined) set('retry-after', retry)
    return refuse(req, decision)
  }
}
