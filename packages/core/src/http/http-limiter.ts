// The framework-neutral HTTP limiter: options checked once, then one lean path per request.

import { canLease, type Lease } from '../concurrency'
import { ConfigError, FastlimitError, show } from '../errors'
import { type CheckOptions, type Decision, FastLimit } from '../limiter'
import type { Rule, RuleSet } from '../rules'
import {
  acquireSlot,
  compileConcurrency,
  concurrencyDecision,
  concurrencyProblem,
  type HttpConcurrency,
  releaseWhenDone,
} from './concurrency'
import { delaySettings, HttpDelay } from './delay'
import {
  applyCombined,
  HEADER_FORMATS,
  type HeaderFormat,
  RateLimitHeaders,
  retryAfterValue,
  type SetHeader,
} from './headers'
import { type InfoOwner, type RateLimitInfo, RequestRateLimit } from './info'
import {
  compileTrust,
  createIpMatcher,
  formatIp,
  type IpAddress,
  ipKey,
  isLocalAddress,
  isLocalIPv4,
  type ProxyHeader,
  type ProxyTrust,
  parseIPv4Range,
  parseIp,
  walkProxies,
} from './ip'
import type { MessageBody, RateLimitCommonOptions } from './options'
import { Outcome, type Settleable } from './outcome'
import { type RulesEntry, RulesOfRequest } from './rules-of-request'
import { warned, warnOnce } from './warn'

/**
 * How an adapter reads its framework's request and writes its response. Plain functions, called
 * without `this`, so one object serves every request with no closure per request.
 */
export interface HttpAdapter<Req, Res> {
  /** The adapter's name in error messages: `'express'` gives `[fastlimit] [express] ...`. */
  readonly name: string
  /** Option names the adapter handles itself (e.g. `'handler'`), accepted by {@link createHttpLimiter}. */
  readonly extraOptions?: readonly string[]
  /**
   * What the framework's request is called in the adapter's option functions, for messages: `'req'`
   * (Express), `'c'` (Hono), `'ctx'` (Koa). The no-address error then says `key: (c) => ...`.
   * @default 'req'
   */
  readonly requestName?: string
  /**
   * Another way to identify clients, suggested when a request has no client address: the error
   * then reads `... pass key: (req) => ... to identify clients yourself, or <hint>, or trustProxy ...`.
   * Hono passes `'getConnInfo from your runtime (hono/bun, hono/deno, ...)'`.
   * @default none: only `key` and `trustProxy` are suggested
   */
  readonly noAddressHint?: string
  /** The address of the connection's peer (`req.socket.remoteAddress`), or `undefined` if unknown. */
  remoteAddress(req: Req): string | undefined
  /** A request header by lower-case name, or `undefined`. Repeated headers joined with `', '`. */
  header(req: Req, name: string): string | undefined
  /** The request's method as sent, in upper case for the standard ones (`'GET'`, `'OPTIONS'`). */
  method(req: Req): string
  /** Sets a response header. */
  setHeader: SetHeader<Res>
  /**
   * Stores what the middleware found for a request where the application's handlers read it
   * (Express `req.rateLimit`, Koa `ctx.state.rateLimit`, Hono `c.set('rateLimit', info)`), before the
   * request goes on or is refused. Not called for requests that were skipped, allow-listed or cost 0.
   * Give it with {@link HttpAdapter.attached}: together they let several middlewares on one request
   * send one coherent set of RateLimit headers, and `reset(req)` find the bucket the request was
   * counted in. Without them the HTTP layer keeps the same link in a `WeakMap` keyed by the request.
   */
  attach?(req: Req, res: Res, info: RateLimitInfo): void
  /** Reads back what {@link HttpAdapter.attach} stored for this request (`req.rateLimit`), or `undefined`. */
  attached?(req: Req): RateLimitInfo | undefined
  /**
   * Hands every decision made for a request to the application. Superseded by
   * {@link HttpAdapter.attach}, which hands a {@link RateLimitInfo} (the decision with nothing
   * invented, and reset/peek); still called, with the decision, by adapters that give no `attach`.
   * @deprecated give `attach` and `attached`
   */
  expose?(req: Req, res: Res, decision: Decision): void
  /**
   * Calls `done` once, when the response has been sent or the client went away (Node:
   * `res.once('close')`), so that the `concurrency` option releases the request's slot then. Without
   * it, `rateLimit()` refuses the `concurrency` option with a `ConfigError`.
   */
  onFinished?(req: Req, res: Res, done: () => void): void
  /**
   * An `AbortSignal` that aborts when the client of `req` goes away (closes the connection), for
   * `mode: 'delay'`: a request held while it waits leaves its queue at once and fails with a
   * `RequestAbortedError`. Asked for only when a request must wait. On Node's `http` server:
   * `signal: (req, res) => closeSignal(res)`; on the Fetch API: `(c) => c.req.raw.signal`.
   * @default none: a held request waits its turn even when its client has gone
   */
  signal?(req: Req, res: Res): AbortSignal | undefined
  /**
   * Calls `end` once when the response to `req` is over, for `countWhen` and `settle`: sent, or the
   * client gone first (the handler having thrown, the framework's error handling has answered by
   * then). Adapters on Node's `http` pass {@link onResponseClose} on the Node response. Without it,
   * the request is decided when the `next` given to {@link HttpLimiter.run} settles (Hono: the
   * handler's `Response` is built, its status and headers final).
   */
  responseEnd?(req: Req, res: Res, end: () => void): void
}

/** How warnings write a header's name. */
function headerName(name: ProxyHeader): string {
  return name === 'forwarded' ? 'Forwarded' : 'X-Forwarded-For'
}

/**
 * A refusal the limiter decided, which the adapter must send (the headers are already set on the
 * response): over the limit (`kind: 'limit'`, `statusCode`, 429 by default), or the limiter's store
 * unavailable under `'fail-closed'` (`kind: 'outage'`, `outageStatusCode`, 503 by default). An
 * application's own `handler` gets both.
 */
export interface HttpDenial {
  /**
   * `'limit'`: over the limit (or a cost the limit can never admit); `'concurrency'`: too many of the
   * client's requests in flight (the `concurrency` option; `lease` says how many); `'outage'`: the store
   * could not decide.
   */
  readonly kind: 'limit' | 'concurrency' | 'outage'
  /** The status to send: `statusCode` (429 by default) or, for an outage, `outageStatusCode` (503 by default). */
  readonly status: number
  /** The `Content-Type` of `body`. */
  readonly contentType: string
  /** The body, serialized. */
  readonly body: string
  /** The decision that refused the request (`reason: 'concurrency-limited'` for kind `'concurrency'`). */
  readonly decision: Decision
  /** For a refusal of the `concurrency` option: the refused lease. */
  readonly lease?: Lease
}

/**
 * A request refused with 400 before any decision, because `cost` gave no usable cost
 * (`invalidCost: 'reject'`). Given to the `invalid` callback of {@link HttpLimiter.run}; without one,
 * the request fails with an {@link InvalidCostError} instead.
 */
export interface HttpInvalidCost {
  readonly kind: 'invalid-cost'
  /** 400. */
  readonly status: number
  /** `application/problem+json`. */
  readonly contentType: string
  /** RFC 9457 problem details saying the request cannot be weighed. */
  readonly body: string
}

/**
 * The error a request fails with when `cost` gave no usable cost and the adapter passed no `invalid`
 * callback to {@link HttpLimiter.run} (or used {@link HttpLimiter.handle}). It carries `status` and
 * `statusCode` 400 and `expose: true`, which Express's, Koa's and Fastify's default error handling
 * read, so the client gets a 400, not a 500.
 */
export class InvalidCostError extends FastlimitError {
  /** 400. */
  readonly status = 400
  /** 400. */
  readonly statusCode = 400
  /** The message may be shown to the client. */
  readonly expose = true
  /** The value `cost` gave. */
  readonly cost: unknown

  constructor(adapter: string, cost: unknown) {
    super(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [${adapter}] This request cannot be weighed: cost gave ${show(cost)}, not a whole number of 0 or more (invalidCost: 'reject').`,
    )
    this.name = 'InvalidCostError'
    this.cost = cost
  }
}

function passThrough(): undefined {
  return undefined
}

function refusal<Req, Res>(_req: Req, _res: Res, denial: HttpDenial): HttpDenial {
  return denial
}

/** The `invalid` callback of {@link HttpLimiter.handle}: none, so the request fails with InvalidCostError. */
const NO_INVALID = undefined

/** Says that a `skip`, `key` or `rules` function was not called yet for the request. */
const UNCALLED: unique symbol = Symbol('uncalled')

/** An error while deciding, as the asynchronous path gives it: to `fail`, or a rejection. */
function failed<T>(err: unknown, fail: ((error: unknown) => T) | undefined): T | Promise<T> {
  if (fail === undefined) return Promise.reject(err)
  try {
    return fail(err)
  } catch (thrown) {
    return Promise.reject(thrown)
  }
}

const OPTION_NAMES = [
  'limiter',
  'rules',
  'key',
  'cost',
  'skip',
  'allowList',
  'headers',
  'legacyHeaders',
  'statusCode',
  'message',
  'mode',
  'onLimit',
  'trustProxy',
  'proxyHeader',
  'ipv6Subnet',
  'scope',
  'clock',
  'skipMethods',
  'normalize',
  'invalidCost',
  'outageStatusCode',
  'concurrency',
  'maxDelayMs',
  'maxQueue',
  'countWhen',
  'settle',
] as const

/** Forwarding headers a proxy in front of the app would add, as they are named in warnings. */
const FORWARDING_HEADERS = [
  ['x-forwarded-for', 'X-Forwarded-For'],
  ['forwarded', 'Forwarded'],
] as const

/** Requests looked at for forwarding headers from a local peer while trust does not cover it: one in 64. */
const SNIFF_MASK = 63

const PROBLEM_JSON = 'application/problem+json'
const TEXT = 'text/plain; charset=utf-8'
const JSON_TYPE = 'application/json; charset=utf-8'
const MAX_KEY_CACHE = 10_000

const TITLES: Readonly<Record<number, string>> = {
  400: 'Bad Request',
  403: 'Forbidden',
  409: 'Conflict',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
}

/**
 * The default body of a refusal: RFC 9457 problem details (`application/problem+json`), with the
 * status's reason phrase as `title` (as `about:blank` requires) and what to do in `detail`.
 */
export function problemDetails(status: number, decision: Decision): string {
  const title = TITLES[status] ?? 'Rate Limit Exceeded'
  let detail: string
  if (decision.reason === 'fail-closed') {
    detail = 'The rate limiter is unavailable; retry in 1 second.'
  } else if (decision.retryAfterMs === Number.POSITIVE_INFINITY) {
    detail = 'This request costs more than the rate limit can ever admit.'
  } else {
    const s = Math.ceil(decision.retryAfterMs / 1000)
    detail = `Too many requests; retry in ${s} second${s === 1 ? '' : 's'}.`
  }
  return `{"type":"about:blank","title":"${title}","status":${status},"detail":"${detail}"}`
}

/** The refusal of a request whose cost is unusable. */
export const INVALID_COST: HttpInvalidCost = /* @__PURE__ */ Object.freeze({
  kind: 'invalid-cost',
  status: 400,
  contentType: PROBLEM_JSON,
  body: '{"type":"about:blank","title":"Bad Request","status":400,"detail":"This request cannot be weighed: its rate-limit cost is not a whole number of 0 or more."}',
})

/** Where the HTTP layer links the infos of a request when the adapter gives no `attach`/`attached`. */
const INFOS = new WeakMap<object, RateLimitInfo>()

function attachInMap(req: unknown, _res: unknown, info: RateLimitInfo): void {
  if (typeof req === 'object' && req !== null) INFOS.set(req, info)
}

function attachedInMap(req: unknown): RateLimitInfo | undefined {
  return typeof req === 'object' && req !== null ? INFOS.get(req) : undefined
}

/**
 * How many middlewares were built on each limiter in each scope (`''` for none): reset() warns when
 * another shares its key space. Counts, not the middlewares, so building many costs no memory.
 */
const MIDDLEWARES = new WeakMap<FastLimit, Map<string, number>>()

function isPlainObject(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null || Array.isArray(value)
}

/**
 * The engine behind every adapter's `rateLimit()`: validates the options once, then for each request
 * finds the client (proxies, IPv6 subnets, allow list), skips, keys, charges, writes the headers and
 * says whether to refuse. See {@link createHttpLimiter}.
 */
export class HttpLimiter<Req, Res> {
  /** The limiter deciding. */
  readonly limiter: FastLimit
  /** The rules, compiled once; `undefined` when `rules` is a function of the request. */
  readonly rules: RuleSet | undefined
  /** The header writer; `undefined` when `rules` is a function of the request (one writer per rule set then). */
  readonly headers: RateLimitHeaders | undefined
  /** The status of a refusal. */
  readonly statusCode: number
  /** The status of a refusal because the limiter's store is unavailable (`'fail-closed'`). */
  readonly outageStatusCode: number
  /** `'enforce'`, `'shadow'` or `'delay'`. */
  readonly mode: 'enforce' | 'shadow' | 'delay'
  /** The middleware's scope, or `undefined`. */
  readonly scope: string | undefined

  readonly #name: string
  /** `, or <adapter.noAddressHint>`, or `''`. */
  readonly #noAddressHint: string
  /** How the request is called in messages: `req`, `c`, `ctx`. */
  readonly #requestName: string
  readonly #remoteAddress: (req: Req) => string | undefined
  readonly #header: (req: Req, name: string) => string | undefined
  readonly #setHeader: SetHeader<Res>
  readonly #attach: (req: Req, res: Res, info: RateLimitInfo) => void
  readonly #attached: (req: Req) => RateLimitInfo | undefined
  /** What this middleware's request infos share: reset, peek and its header writer. */
  readonly #owner: InfoOwner
  /** The cost charged when `cost` gives an unusable one, or `'reject'` to answer 400. */
  readonly #invalidCost: 'reject' | number
  readonly #key: ((req: Req) => string | Promise<string>) | undefined
  readonly #normalize: ((identity: string) => string) | undefined
  readonly #method: (req: Req) => string
  /** Methods never counted (`skipMethods`), or `undefined` for none. */
  readonly #skipMethods: readonly string[] | undefined
  readonly #cost: ((req: Req) => number | Promise<number>) | undefined
  readonly #skip: ((req: Req) => boolean | Promise<boolean>) | undefined
  readonly #onLimit: ((req: Req, decision: Decision) => void) | undefined
  readonly #allow: ((ip: IpAddress) => boolean) | undefined
  readonly #trust: ProxyTrust
  readonly #proxyHeader: ProxyHeader
  readonly #subnet: number | false
  readonly #scope: string | undefined
  /** `{ scope }` for every check without a cost function, built once; `undefined` when unscoped. */
  readonly #scoped: CheckOptions | undefined
  readonly #concurrency: HttpConcurrency | undefined
  readonly #onFinished: ((req: Req, res: Res, done: () => void) => void) | undefined
  readonly #clock: () => number
  readonly #writeHeaders: boolean
  readonly #messageFn: ((req: Req, decision: Decision) => MessageBody | Promise<MessageBody>) | undefined
  readonly #messageBody: string | undefined
  readonly #messageType: string
  /** Whether the default key is the peer address as is: no proxy, no allow list. */
  readonly #direct: boolean
  readonly #needIp: boolean
  readonly #cache = new Map<string, string>()
  /** The waiting of `mode: 'delay'`, or `undefined` in the other modes. */
  readonly #delay: HttpDelay<Req, Res> | undefined
  /** `countWhen` and `settle`, or `undefined` when neither is given: plain checks then. */
  readonly #outcome: Outcome<Req, Res> | undefined
  /** The rules of each request when `rules` is a function, or `undefined`. */
  readonly #perRequest: RulesOfRequest<Req> | undefined
  /** Whether a request may have to wait for more than its decision (cost, countWhen/settle, concurrency, delay): the full path. */
  readonly #waits: boolean
  /** Whether to look for a proxy the trust setting does not cover (until this process has warned of one). */
  #sniff = true
  #sniffCount = 0

  constructor(
    options: RateLimitCommonOptions<Req, NoInfer<Res>> | RateLimitCommonOptions<Req>,
    adapter: HttpAdapter<Req, Res>,
  ) {
    const where = typeof adapter?.name === 'string' ? adapter.name : 'core'
    this.#name = where
    const fail = (message: string): never => {
      throw new ConfigError(`[fastlimit] [${where}] ${message}`)
    }
    if (options === undefined) options = {}
    if (typeof options !== 'object' || options === null || Array.isArray(options)) {
      fail(`rateLimit() takes an options object, got ${show(options)}: e.g. rateLimit({ rules: '100/min' }).`)
    }
    const known = new Set<string>([...OPTION_NAMES, ...(adapter.extraOptions ?? [])])
    for (const name of Object.keys(options)) {
      if (!known.has(name)) {
        fail(`Unknown option ${show(name)}: rateLimit() takes ${[...known].join(', ')}.`)
      }
    }
    const o = options as RateLimitCommonOptions<Req, Res>
    const fn = <F>(name: string, value: unknown): F | undefined => {
      if (value !== undefined && typeof value !== 'function') {
        fail(`${name} must be a function, got ${show(value)}.`)
      }
      return value as F | undefined
    }

    if (o.limiter !== undefined) {
      const l = o.limiter as unknown as Record<string, unknown>
      if (
        typeof l !== 'object' ||
        l === null ||
        typeof l.check !== 'function' ||
        typeof l.rules !== 'function'
      ) {
        fail(`limiter must be a FastLimit, got ${show(o.limiter)}: e.g. new FastLimit({ backend }).`)
      }
    }
    this.limiter = o.limiter ?? new FastLimit()
    const rulesFn = typeof o.rules === 'function' ? o.rules : undefined
    this.rules = rulesFn === undefined ? this.limiter.rules((o.rules ?? '100/min') as RuleSet) : undefined
    this.#concurrency = compileConcurrency(o.concurrency, where)
    if (this.#concurrency !== undefined && !canLease(this.limiter.backend)) {
      fail(
        'concurrency needs a limiter whose backend has acquire() and release() (MemoryBackend, SQLiteBackend, ' +
          'RedisBackend): implement them on yours, or remove concurrency.',
      )
    }
    this.#onFinished = typeof adapter.onFinished === 'function' ? adapter.onFinished : undefined
    if (this.#concurrency !== undefined && this.#onFinished === undefined) {
      fail(
        `concurrency needs to know when a response ends, which this adapter (${where}) does not tell ` +
          '(HttpAdapter.onFinished): remove concurrency, or use limiter.acquire() in your handler.',
      )
    }

    this.#key = fn('key', o.key)
    this.#normalize = fn('normalize', o.normalize)
    if (this.#normalize !== undefined && this.#key === undefined) {
      fail('normalize applies to what key returns (client addresses are canonical already): pass key too.')
    }
    this.#cost = fn('cost', o.cost)
    this.#skip = fn('skip', o.skip)
    this.#onLimit = fn('onLimit', o.onLimit)
    this.#clock = fn<() => number>('clock', o.clock) ?? Date.now

    const allow = o.allowList ?? []
    // An empty array allows no one: no matcher. Anything else, arrays or not, goes to createIpMatcher to be checked.
    this.#allow =
      allow.length === 0 && Array.isArray(allow) ? undefined : createIpMatcher(allow, 'allowList', where)

    this.#trust = compileTrust(o.trustProxy ?? false, where)
    const proxyHeader = o.proxyHeader ?? 'x-forwarded-for'
    if (proxyHeader !== 'x-forwarded-for' && proxyHeader !== 'forwarded') {
      fail(`proxyHeader must be 'x-forwarded-for' or 'forwarded', got ${show(proxyHeader)}.`)
    }
    this.#proxyHeader = proxyHeader
    if (this.#trust.anyPeer) {
      const hops = typeof o.trustProxy === 'number' ? o.trustProxy : 1
      const setting = typeof o.trustProxy === 'number' ? `${o.trustProxy}` : show(o.trustProxy)
      warnOnce(
        'trust-any-peer',
        `[fastlimit] [${where}] trustProxy: ${setting} believes ${headerName(proxyHeader)} from any peer: a client ` +
          'that reaches the app directly, not through your proxy, picks its own address, so its own limit and a ' +
          `way past allowList. Say where your proxies are: trustProxy: { hops: ${hops}, from: ['10.0.0.0/8'] } ` +
          `(their addresses or networks; 'private' and 'loopback' work too), or trustProxy: { hops: ${hops}, ` +
          "from: 'any' } if nothing but your proxies can reach the app.",
      )
    }

    const skipMethods = o.skipMethods ?? ['OPTIONS']
    if (
      !Array.isArray(skipMethods) ||
      !skipMethods.every((m) => typeof m === 'string' && /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$/.test(m))
    ) {
      fail(
        `skipMethods must be a list of HTTP methods, got ${show(skipMethods)}: e.g. ['OPTIONS'], or [] to count every request.`,
      )
    }
    this.#skipMethods = skipMethods.length === 0 ? undefined : skipMethods.map((m) => m.toUpperCase())

    const subnet = o.ipv6Subnet ?? 56
    if (subnet !== false && (!Number.isInteger(subnet) || subnet < 1 || subnet > 128)) {
      fail(`ipv6Subnet must be a prefix length from 1 to 128, or false, got ${show(subnet)}: e.g. 56 or 64.`)
    }
    this.#subnet = subnet

    if (o.scope !== undefined && (typeof o.scope !== 'string' || !/^[A-Za-z0-9_.:-]{1,64}$/.test(o.scope))) {
      fail(`scope must be 1 to 64 of A-Z a-z 0-9 _ . : -, got ${show(o.scope)}: e.g. 'login'.`)
    }
    this.#scope = o.scope
    this.scope = o.scope
    this.#scoped = o.scope === undefined ? undefined : Object.freeze({ scope: o.scope })

    const invalidCost = o.invalidCost ?? 'reject'
    if (invalidCost !== 'reject' && !(Number.isSafeInteger(invalidCost) && (invalidCost as number) > 0)) {
      fail(
        `invalidCost must be 'reject' or a whole number of 1 or more, got ${show(invalidCost)}: e.g. 'reject' (answer 400) or 1.`,
      )
    }
    this.#invalidCost = invalidCost

    const headers = o.headers ?? true
    let format: HeaderFormat | false
    if (headers === true) format = 'draft-7'
    else if (headers === false) format = false
    else if (HEADER_FORMATS.includes(headers as HeaderFormat)) format = headers as HeaderFormat
    else {
      format = fail(
        `headers must be 'draft-6', 'draft-7', 'draft-8', 'legacy', true or false, got ${show(headers)}.`,
      )
    }
    const legacy = o.legacyHeaders ?? false
    if (typeof legacy !== 'boolean') fail(`legacyHeaders must be true or false, got ${show(legacy)}.`)
    this.headers = this.rules === undefined ? undefined : new RateLimitHeaders(this.rules, format, legacy)
    this.#writeHeaders = format !== false || legacy

    const status = o.statusCode ?? 429
    if (!Number.isInteger(status) || status < 400 || status > 599) {
      fail(`statusCode must be a whole number from 400 to 599, got ${show(status)}: e.g. 429.`)
    }
    this.statusCode = status
    const outage = o.outageStatusCode ?? 503
    if (!Number.isInteger(outage) || outage < 400 || outage > 599) {
      fail(`outageStatusCode must be a whole number from 400 to 599, got ${show(outage)}: e.g. 503.`)
    }
    this.outageStatusCode = outage

    const message = o.message
    this.#messageType = PROBLEM_JSON
    if (typeof message === 'function') {
      this.#messageFn = message
    } else if (typeof message === 'string') {
      this.#messageBody = message
      this.#messageType = TEXT
    } else if (message !== undefined) {
      if (!isPlainObject(message)) {
        fail(`message must be a string, a plain object or a function, got ${show(message)}.`)
      }
      try {
        this.#messageBody = JSON.stringify(message)
      } catch (err) {
        fail(`message cannot be serialized as JSON (${(err as Error).message}): pass a plain object.`)
      }
      this.#messageType = JSON_TYPE
    }

    const mode = o.mode ?? 'enforce'
    if (mode !== 'enforce' && mode !== 'shadow' && mode !== 'delay')
      fail(`mode must be 'enforce', 'shadow' or 'delay', got ${show(mode)}.`)
    this.mode = mode
    const delay = delaySettings(mode, o, fail)
    if (adapter.signal !== undefined && typeof adapter.signal !== 'function')
      fail('The adapter signal must be a function (req, res) => AbortSignal | undefined.')
    this.#delay =
      delay === undefined
        ? undefined
        : new HttpDelay(this.limiter, this.rules, o.scope, delay, where, adapter.signal)
    // Observers of the limiter ('decision' events, @fastlimit/otel) see shadow checks as such.
    if (mode === 'shadow') this.#scoped = Object.freeze({ ...this.#scoped, mode: 'shadow' })

    if (
      typeof adapter.remoteAddress !== 'function' ||
      typeof adapter.header !== 'function' ||
      typeof adapter.method !== 'function'
    ) {
      fail('The adapter must provide remoteAddress(req), header(req, name) and method(req).')
    }
    this.#method = adapter.method
    if (typeof adapter.setHeader !== 'function') fail('The adapter must provide setHeader(res, name, value).')
    this.#remoteAddress = adapter.remoteAddress
    this.#header = adapter.header
    this.#setHeader = adapter.setHeader
    if (adapter.expose !== undefined && typeof adapter.expose !== 'function')
      fail('The adapter expose must be a function (req, res, decision) => void.')
    const { attach, attached } = adapter
    if ((attach === undefined) !== (attached === undefined))
      fail('The adapter must give attach and attached together, or neither.')
    if (attach !== undefined && (typeof attach !== 'function' || typeof attached !== 'function'))
      fail('The adapter attach and attached must be functions.')
    if (attach !== undefined && attached !== undefined) {
      this.#attach = attach
      this.#attached = attached
    } else {
      const expose = adapter.expose
      this.#attach =
        expose === undefined
          ? attachInMap
          : (req, res, info) => {
              attachInMap(req, res, info)
              expose(req, res, info.decision)
            }
      this.#attached = attachedInMap
    }
    const hint = adapter.noAddressHint
    if (hint !== undefined && typeof hint !== 'string') fail('The adapter noAddressHint must be a string.')
    this.#noAddressHint = hint === undefined ? '' : `, or ${hint}`
    const requestName = adapter.requestName ?? 'req'
    if (typeof requestName !== 'string' || !/^[A-Za-z_$][\w$]{0,31}$/.test(requestName))
      fail('The adapter requestName must be an identifier, e.g. req.')
    this.#requestName = requestName
    if (adapter.responseEnd !== undefined && typeof adapter.responseEnd !== 'function')
      fail('The adapter responseEnd must be a function (req, res, end) => void.')
    this.#outcome =
      o.countWhen === undefined && o.settle === undefined
        ? undefined
        : new Outcome<Req, Res>(o.countWhen, o.settle, adapter.responseEnd, where, this.limiter)
    if (this.#outcome !== undefined && mode === 'delay') {
      // A held request is admitted by limiter.wait, which charges at once: there is no reservation to settle.
      fail(
        "mode 'delay' cannot be combined with countWhen or settle: a held request is charged when it is admitted. Use two middlewares (a delaying one, then one with countWhen or settle), or mode 'enforce'.",
      )
    }
    this.#waits =
      this.#cost !== undefined ||
      this.#outcome !== undefined ||
      this.#concurrency !== undefined ||
      this.#delay !== undefined
    this.#direct = this.#trust.hops === 0 && this.#allow === undefined
    this.#needIp = this.#key === undefined || this.#allow !== undefined

    const limiter = this.limiter
    const rules = this.rules
    const scoped = this.#scoped
    let checkedShared = false
    const reset = (identity: string): Promise<void> => {
      if (!checkedShared) {
        checkedShared = true
        this.#warnSharedScope()
      }
      return limiter.reset(identity, scoped)
    }
    this.#owner = {
      scope: o.scope,
      headers: this.#writeHeaders ? this.headers : undefined,
      reset,
      // With rules per request, this owner only resets: each rule set has its own owner for the rest.
      peek: (identity) => limiter.peek(identity, rules as RuleSet, scoped),
    }
    this.#perRequest =
      rulesFn === undefined
        ? undefined
        : new RulesOfRequest(
            rulesFn,
            limiter,
            this.#owner,
            reset,
            scoped,
            (set) => (this.#writeHeaders ? new RateLimitHeaders(set, format, legacy) : undefined),
            where,
            this.#requestName,
          )
    let built = MIDDLEWARES.get(limiter)
    if (built === undefined) {
      built = new Map()
      MIDDLEWARES.set(limiter, built)
    }
    const scopeKey = o.scope ?? ''
    built.set(scopeKey, (built.get(scopeKey) ?? 0) + 1)
  }

  /**
   * Warns once per process when this middleware's reset would forget another middleware's counts:
   * `limiter.reset(identity, { scope })` forgets the identity under every rule in the scope.
   */
  #warnSharedScope(): void {
    if ((MIDDLEWARES.get(this.limiter)?.get(this.scope ?? '') ?? 0) < 2) return
    const where = this.scope === undefined ? 'unscoped' : `in scope '${this.scope}'`
    warnOnce(
      'reset-shared-scope',
      `[fastlimit] [${this.#name}] reset() forgets every count of the client ${where} on this limiter, and ` +
        'another rateLimit() counts there too: resetting a login limit would also reset that one. Give the ' +
        "middleware you reset a scope of its own, e.g. rateLimit({ scope: 'login', ... }).",
    )
  }

  /**
   * Forgets the bucket `req` was counted in by this middleware (after a successful login, say): the
   * identity this middleware counted the request under, or, when it did not count it, the one it
   * would (its client address, or what `key` returns). Forgets the identity's counts under every rule
   * of the limiter in this middleware's scope. Resolves without doing anything for an allow-listed
   * client; rejects when the store fails or `key` throws.
   */
  async reset(req: Req): Promise<void> {
    const identity = await this.#identityOf(req)
    if (identity !== undefined) await this.#owner.reset(identity)
  }

  /**
   * Reads the bucket `req` is counted in by this middleware, without charging anything (`cost` 0;
   * `allowed` says whether a request of cost 1 would pass). `undefined` for an allow-listed client.
   * Needs a backend with `peek` (the memory, Redis and SQLite backends have it).
   */
  async peek(req: Req): Promise<RateLimitInfo | undefined> {
    const identity = await this.#identityOf(req)
    if (identity === undefined) return undefined
    const owner = this.#perRequest === undefined ? this.#owner : (await this.#perRequest.of(req)).owner
    const decision = await owner.peek(identity)
    return new RequestRateLimit(decision, identity, owner, undefined, 0)
  }

  /** The identity this middleware counted `req` under, or would; `undefined` when allow-listed. */
  async #identityOf(req: Req): Promise<string | undefined> {
    const last = this.#attached(req)
    const found = RequestRateLimit.find(last instanceof RequestRateLimit ? last : undefined, this.#owner)
    if (found !== undefined) return found.identity
    let identity = ''
    if (this.#needIp) {
      const ip = this.#ipIdentity(req)
      if (ip === null) return undefined
      identity = ip
    }
    const keyFn = this.#key
    if (keyFn !== undefined) {
      identity = await keyFn(req)
      if (this.#normalize !== undefined) identity = this.#normalize(identity)
    }
    return identity
  }

  /**
   * The client's address as found through the trusted proxies, in canonical text (`203.0.113.7`,
   * `2001:db8::1`), or `undefined` if there is none.
   */
  clientAddress(req: Req): string | undefined {
    const ip = this.#resolve(req)
    return ip === undefined ? undefined : formatIp(ip)
  }

  #resolve(req: Req): IpAddress | undefined {
    const remote = this.#remoteAddress(req)
    const peer = remote === undefined ? undefined : parseIp(remote)
    const trust = this.#trust
    // A peer with an address that is not an IP: nothing to walk from.
    if (peer === undefined && remote !== undefined) return undefined
    if (peer !== undefined && (trust.hops === 0 || (trust.match !== undefined && !trust.match(peer)))) {
      if (this.#sniff && (this.#sniffCount++ & SNIFF_MASK) === 0) this.#sniffProxy(req, peer)
      return peer
    }
    if (trust.hops === 0) return peer
    return walkProxies(peer, this.#header(req, this.#proxyHeader), trust, this.#proxyHeader)
  }

  /**
   * Warns once per process when a request from a local peer (loopback, private) carries a forwarding
   * header that trust does not let us read: the app is most likely behind a proxy it does not trust, and
   * every client behind it shares the proxy's limit.
   */
  #sniffProxy(req: Req, peer: IpAddress): void {
    if (warned('untrusted-proxy')) {
      this.#sniff = false
      return
    }
    if (!isLocalAddress(peer)) return
    for (const [name, label] of FORWARDING_HEADERS) {
      const value = this.#header(req, name)
      if (value === undefined || value === '') continue
      const address = formatIp(peer)
      const off = this.#trust.hops === 0
      const header = name === this.#proxyHeader ? '' : `, proxyHeader: '${name}'`
      warnOnce(
        'untrusted-proxy',
        `[fastlimit] [${this.#name}] Requests from ${address} carry ${label} but ` +
          (off ? 'trustProxy is off' : `trustProxy does not trust ${address}`) +
          ', so every client behind that proxy shares one limit. If it is your proxy, set ' +
          `trustProxy: { hops: 1, from: ['${address}'] }${header} (or its network, e.g. 'private').`,
      )
      this.#sniff = false
      return
    }
  }

  #noAddress(): never {
    throw new ConfigError(
      `[fastlimit] [${this.#name}] Cannot find the client's address for this request, so it cannot be limited ` +
        `by IP: pass key: (${this.#requestName}) => ... to identify clients yourself` +
        this.#noAddressHint +
        ', or trustProxy if the app listens on a Unix socket behind a proxy.',
    )
  }

  /** The default identity of a request: its client's IP key, or `null` when allow-listed. */
  #ipIdentity(req: Req): string | null {
    if (this.#direct) {
      const remote = this.#remoteAddress(req)
      if (remote === undefined || remote === '') return this.#noAddress()
      const n = remote.length
      // Fast path: the peer address as the OS gives it, canonical dotted-quad IPv4 (or IPv4-mapped).
      const v4 = parseIPv4Range(remote, 0, n)
      if (v4 >= 0) {
        if (this.#sniff && (this.#sniffCount++ & SNIFF_MASK) === 0 && isLocalIPv4(v4)) {
          this.#sniffProxy(req, { version: 4, value: v4 })
        }
        return remote
      }
      if (this.#sniff && (this.#sniffCount++ & SNIFF_MASK) === 0) {
        const ip = parseIp(remote)
        if (ip !== undefined) this.#sniffProxy(req, ip)
      }
      if (
        n > 7 &&
        remote.charCodeAt(0) === 58 &&
        remote.startsWith('::ffff:') &&
        parseIPv4Range(remote, 7, n) >= 0
      )
        return remote.slice(7)
      const cached = this.#cache.get(remote)
      if (cached !== undefined) return cached
      const ip = parseIp(remote)
      // An address that is not an IP comes from the platform, not the client: count it as it is.
      const key = ip === undefined ? remote : ipKey(ip, this.#subnet)
      if (this.#cache.size >= MAX_KEY_CACHE) this.#cache.clear()
      this.#cache.set(remote, key)
      return key
    }
    const ip = this.#resolve(req)
    if (ip === undefined) {
      const remote = this.#remoteAddress(req)
      if (remote === undefined || remote === '' || parseIp(remote) !== undefined) return this.#noAddress()
      return remote
    }
    if (this.#allow?.(ip)) return null
    return ipKey(ip, this.#subnet)
  }

  /**
   * Decides one request: sets the RateLimit headers on `res` and resolves with the refusal to send,
   * or `undefined` to let the request through (allowed, skipped, allow-listed, or in shadow mode).
   * Rejects with the error of a `key`, `cost` or `skip` function, of the backend under
   * `onBackendError: 'throw'`, or an {@link InvalidCostError} (status 400) for an unusable cost: the
   * adapter hands it to the framework's error handling.
   */
  handle(req: Req, res: Res): Promise<HttpDenial | undefined> {
    const done = this.run(req, res, passThrough, refusal, undefined, NO_INVALID)
    return done instanceof Promise ? done : Promise.resolve(done)
  }

  /**
   * {@link handle} for middleware, in one step: decides, then returns `next()` when the request may
   * proceed or `deny(req, res, denial, next)` when it must be refused (no closure per request). An error while deciding rejects,
   * or goes to `fail` when given (for frameworks, like Express 4, that ignore a rejected promise).
   * A request whose `cost` is unusable goes to `invalid(req, res, refusal, next)` when given (send
   * `refusal` as it is: 400, problem details), otherwise it fails with an {@link InvalidCostError}.
   * Errors of `next`, `deny` and `invalid` are theirs: they are not caught here.
   *
   * Answers in the same turn when nothing needs to wait: with a synchronous `skip`, `key` and `rules`
   * (or none), a limiter whose backend decides synchronously (`MemoryBackend`) and no `cost`,
   * `countWhen`, `settle`, `concurrency` or `mode: 'delay'`, the headers are set and `next()` (or
   * `deny`) is called before `run` returns, and `run` returns what they returned. Otherwise it returns
   * a promise. Await the result (or pass it on, as Koa and Hono middleware return it) either way.
   *
   * @example
   * ```ts
   * const middleware = (req, res, next) => http.run(req, res, next, sendDenial, next, sendDenial)
   * ```
   */
  run<T>(
    req: Req,
    res: Res,
    next: () => T | Promise<T>,
    deny: (req: Req, res: Res, denial: HttpDenial, next: () => T | Promise<T>) => T | Promise<T>,
    fail?: (error: unknown) => T,
    invalid?: (req: Req, res: Res, refusal: HttpInvalidCost, next: () => T | Promise<T>) => T | Promise<T>,
  ): T | Promise<T> {
    if (this.#waits) return this.#run(req, res, next, deny, fail, invalid, UNCALLED, UNCALLED, UNCALLED)
    let denial: HttpDenial | Promise<HttpDenial> | undefined
    let skipped = false
    try {
      const skipMethods = this.#skipMethods
      if (skipMethods !== undefined) {
        const method = this.#method(req)
        for (let i = 0; i < skipMethods.length; i++) {
          if (skipMethods[i] === method) {
            skipped = true
            break
          }
        }
      }
      const skip = this.#skip
      if (!skipped && skip !== undefined) {
        const s = skip(req)
        if (s === true) skipped = true
        else if (s !== false) return this.#run(req, res, next, deny, fail, invalid, s, UNCALLED, UNCALLED)
      }
      if (!skipped) {
        let identity = ''
        if (this.#needIp) {
          const ipIdentity = this.#ipIdentity(req)
          if (ipIdentity === null) skipped = true
          else identity = ipIdentity
        }
        const keyFn = this.#key
        if (!skipped && keyFn !== undefined) {
          const k = keyFn(req)
          if (typeof k !== 'string') return this.#run(req, res, next, deny, fail, invalid, false, k, UNCALLED)
          identity = this.#normalize === undefined ? k : this.#normalize(k)
        }
        if (!skipped) {
          let rules = this.rules as RuleSet
          let owner = this.#owner
          let headers = this.headers as RateLimitHeaders
          const perRequest = this.#perRequest
          if (perRequest !== undefined) {
            const e = perRequest.of(req)
            if (e instanceof Promise)
              return this.#run(req, res, next, deny, fail, invalid, false, identity, e)
            rules = e.rules
            owner = e.owner
            headers = e.headers as RateLimitHeaders
          }
          const limiter = this.limiter
          // A limiter whose check was replaced (a subclass, a spy) is called through it. (Read here, not
          // at the top level: a module-level read of FastLimit kept the whole limiter in lite bundles.)
          const decided =
            limiter.check === FastLimit.prototype.check
              ? limiter.checkNow(identity, rules, this.#scoped)
              : limiter.check(identity, rules, this.#scoped)
          if (decided instanceof Promise)
            return this.#decideLater(req, res, decided, identity, owner, headers, next, deny, fail)
          denial = this.#conclude(req, res, decided, identity, owner, headers)
        }
      }
    } catch (err) {
      return failed(err, fail)
    }
    if (denial instanceof Promise) return this.#denyLater(req, res, denial, next, deny, fail)
    try {
      return denial === undefined ? next() : deny(req, res, denial, next)
    } catch (err) {
      // As from the asynchronous path: the error of next or deny rejects what run returns.
      return Promise.reject(err)
    }
  }

  /** The rest of {@link run} once a backend's decision arrives. */
  async #decideLater<T>(
    req: Req,
    res: Res,
    decided: Promise<Decision>,
    identity: string,
    owner: InfoOwner,
    headers: RateLimitHeaders,
    next: () => T | Promise<T>,
    deny: (req: Req, res: Res, denial: HttpDenial, next: () => T | Promise<T>) => T | Promise<T>,
    fail: ((error: unknown) => T) | undefined,
  ): Promise<T> {
    let denial: HttpDenial | undefined
    try {
      denial = await this.#conclude(req, res, await decided, identity, owner, headers)
    } catch (err) {
      if (fail === undefined) throw err
      return fail(err)
    }
    return denial === undefined ? next() : deny(req, res, denial, next)
  }

  /** The rest of {@link run} once an asynchronous `message` function has built the refusal. */
  async #denyLater<T>(
    req: Req,
    res: Res,
    denying: Promise<HttpDenial>,
    next: () => T | Promise<T>,
    deny: (req: Req, res: Res, denial: HttpDenial, next: () => T | Promise<T>) => T | Promise<T>,
    fail: ((error: unknown) => T) | undefined,
  ): Promise<T> {
    let denial: HttpDenial
    try {
      denial = await denying
    } catch (err) {
      if (fail === undefined) throw err
      return fail(err)
    }
    return deny(req, res, denial, next)
  }

  /**
   * What a decision means for the request: attaches its info, writes the RateLimit headers (and
   * `Retry-After`), calls `onLimit`, and gives the refusal to send, if any (a promise only from an
   * asynchronous `message` function).
   */
  #conclude(
    req: Req,
    res: Res,
    decision: Decision,
    identity: string,
    owner: InfoOwner,
    headers: RateLimitHeaders,
  ): HttpDenial | Promise<HttpDenial> | undefined {
    const last = this.#attached(req)
    const previous = last instanceof RequestRateLimit ? last : undefined
    // A decision made by the error policy knows nothing of the client's standing: no RateLimit headers.
    const write = this.#writeHeaders && decision.source !== 'policy'
    const now = write ? this.#clock() : 0
    const info = new RequestRateLimit(decision, identity, owner, previous, now)
    this.#attach(req, res, info)
    if (write) {
      if (previous === undefined) headers.apply(res, this.#setHeader, decision, now)
      else applyCombined(res, this.#setHeader, RequestRateLimit.headerEntries(info))
    }
    if (decision.allowed) return undefined
    if (this.#onLimit !== undefined) this.#onLimit(req, decision)
    if (this.mode === 'shadow') return undefined
    const retry = retryAfterValue(decision.retryAfterMs)
    if (retry !== undefined) this.#setHeader(res, 'retry-after', retry)
    return this.#deny(req, decision)
  }

  /**
   * {@link run} in full, for what may wait (cost, countWhen/settle, concurrency, mode 'delay'), and
   * where a `skip`, `key` or `rules` function answered with a promise: `skipped`, `keyed` and `entry`
   * are then what it gave ({@link UNCALLED} for a function not called yet; `keyed` a string is the
   * identity, normalized).
   */
  async #run<T>(
    req: Req,
    res: Res,
    next: () => T | Promise<T>,
    deny: (req: Req, res: Res, denial: HttpDenial, next: () => T | Promise<T>) => T | Promise<T>,
    fail: ((error: unknown) => T) | undefined,
    invalid:
      | ((req: Req, res: Res, refusal: HttpInvalidCost, next: () => T | Promise<T>) => T | Promise<T>)
      | undefined,
    skipped: unknown,
    keyed: unknown,
    entry: unknown,
  ): Promise<T> {
    let denial: HttpDenial | undefined
    let unusable = false
    /** The reservation to decide when the response ends (`countWhen`, `settle`). */
    let reserved: (Decision & Settleable) | undefined
    // The concurrency option: the request's slot, and how to release it once the response is done.
    let lease: Lease | undefined
    let finish: ((settled: unknown) => void) | undefined
    try {
      let proceed = true
      const skipMethods = this.#skipMethods
      if (skipMethods !== undefined) {
        const method = this.#method(req)
        for (let i = 0; i < skipMethods.length; i++) {
          if (skipMethods[i] === method) {
            proceed = false
            break
          }
        }
      }
      const skip = this.#skip
      if (proceed && skip !== undefined) {
        const s = skipped === UNCALLED ? skip(req) : skipped
        if (s === true || (s !== false && (await s) === true)) proceed = false
      }
      let identity = ''
      if (proceed && this.#needIp) {
        const ipIdentity = this.#ipIdentity(req)
        if (ipIdentity === null) proceed = false
        else identity = ipIdentity
      }
      if (proceed) {
        const keyFn = this.#key
        if (keyFn !== undefined && typeof keyed === 'string') {
          identity = keyed
        } else if (keyFn !== undefined) {
          const k = keyed === UNCALLED ? keyFn(req) : (keyed as Promise<string>)
          identity = typeof k === 'string' ? k : await k
          if (this.#normalize !== undefined) identity = this.#normalize(identity)
        }
        const costFn = this.#cost
        let decision: Decision | undefined
        let rules = this.rules as RuleSet
        let owner = this.#owner
        let headers = this.headers as RateLimitHeaders
        if (this.#perRequest !== undefined) {
          const e = entry === UNCALLED ? this.#perRequest.of(req) : (entry as Promise<RulesEntry>)
          const found: RulesEntry = e instanceof Promise ? await e : e
          rules = found.rules
          owner = found.owner
          headers = found.headers as RateLimitHeaders
        }
        // mode 'delay': a client with requests held here joins them; any other is checked as in 'enforce'.
        const delay = this.#delay
        let join = false
        if (costFn === undefined && this.#outcome === undefined) {
          if (this.#concurrency !== undefined) lease = await this.#slot(identity)
          join = delay?.holding(identity) === true
          if (lease === undefined || lease.allowed)
            decision = join
              ? await (delay as HttpDelay<Req, Res>).wait(identity, 1, req, res, undefined, rules)
              : await this.limiter.check(identity, rules, this.#scoped)
        } else {
          let given: unknown = 1
          let cost: number | undefined = 1
          if (costFn !== undefined) {
            const c = costFn(req)
            given = typeof c === 'number' ? c : await c
            cost = given as number
            // 0 is "not counted"; anything else that is not a whole number of 1 or more follows invalidCost.
            if (typeof cost !== 'number' || !(cost > 0) || !Number.isSafeInteger(cost)) {
              cost = cost === 0 ? 0 : this.#unusableCost(cost)
            }
          }
          if (cost === undefined) {
            if (this.mode !== 'shadow') {
              if (invalid === undefined) throw new InvalidCostError(this.#name, given)
              unusable = true
            }
          } else if (cost !== 0) {
            if (this.#concurrency !== undefined) lease = await this.#slot(identity)
            join = delay?.holding(identity) === true
            const checkOptions = {
              cost,
              scope: this.#scope,
              mode: this.mode === 'shadow' ? ('shadow' as const) : ('enforce' as const),
            }
            if (lease !== undefined && !lease.allowed) {
              // Refused for concurrency: the rate rules charge nothing.
            } else if (join) {
              decision = await (delay as HttpDelay<Req, Res>).wait(identity, cost, req, res, undefined, rules)
            } else if (this.#outcome === undefined) {
              decision = await this.limiter.check(identity, rules, checkOptions)
            } else {
              // countWhen / settle: reserve now, decide the cost when the response ends.
              const reservation = await this.limiter.reserve(identity, rules, checkOptions)
              decision = reservation
              if (reservation.allowed) reserved = reservation
            }
          }
        }
        // A denial the limit can lift within maxDelayMs: held until it does.
        if (delay !== undefined && !join && decision !== undefined && delay.holds(decision)) {
          decision = await delay.wait(identity, decision.cost, req, res, decision, rules)
        }
        if (decision !== undefined)
          denial = await this.#conclude(req, res, decision, identity, owner, headers)
        if (lease !== undefined) {
          if (!lease.allowed) denial = await this.#denyConcurrency(req, res, lease, rules)
          else if (denial !== undefined) await lease.release()
          else finish = releaseWhenDone(lease, req, res, this.#onFinished)
        }
      }
    } catch (err) {
      // The rate check (or a message function) failed after the slot was taken: give it back.
      if (lease?.allowed === true && finish === undefined) void lease.release().catch(() => undefined)
      if (fail === undefined) throw err
      return fail(err)
    }
    if (unusable) return (invalid as NonNullable<typeof invalid>)(req, res, INVALID_COST, next)
    if (denial !== undefined) return deny(req, res, denial, next)
    const outcome = this.#outcome
    if (finish === undefined) {
      if (reserved !== undefined) return (outcome as Outcome<Req, Res>).follow(req, res, reserved, next)
      return next()
    }
    let settled: T | Promise<T>
    try {
      settled =
        reserved !== undefined ? (outcome as Outcome<Req, Res>).follow(req, res, reserved, next) : next()
    } catch (err) {
      finish(undefined)
      throw err
    }
    finish(settled)
    return settled
  }

  /** Takes the request's slot (the `concurrency` option). */
  #slot(identity: string): Promise<Lease> {
    const mode = this.mode === 'shadow' ? 'shadow' : 'enforce'
    return acquireSlot(this.limiter, this.#concurrency as HttpConcurrency, identity, this.#scope, mode)
  }

  /**
   * A request refused for concurrency (or for an outage of the store under `'fail-closed'`): `onLimit`,
   * `Retry-After`, and the refusal to send (none in shadow mode). No RateLimit headers: no rate rule
   * was checked.
   */
  async #denyConcurrency(req: Req, res: Res, lease: Lease, rules: RuleSet): Promise<HttpDenial | undefined> {
    const decision = concurrencyDecision(lease, rules.rules[0] as Rule, this.#clock())
    if (this.#onLimit !== undefined) this.#onLimit(req, decision)
    if (this.mode === 'shadow') return undefined
    const retry = retryAfterValue(lease.retryAfterMs)
    if (retry !== undefined) this.#setHeader(res, 'retry-after', retry)
    if (decision.reason === 'fail-closed') return this.#deny(req, decision)
    const status = this.statusCode
    const base = { kind: 'concurrency', status, decision, lease } as const
    if (this.#messageBody !== undefined)
      return { ...base, contentType: this.#messageType, body: this.#messageBody }
    const messageFn = this.#messageFn
    if (messageFn === undefined)
      return { ...base, contentType: PROBLEM_JSON, body: concurrencyProblem(status, lease) }
    const m = await messageFn(req, decision)
    if (typeof m === 'string') return { ...base, contentType: TEXT, body: m }
    return { ...base, contentType: JSON_TYPE, body: JSON.stringify(m) }
  }

  /**
   * What to charge for a cost `cost` gave that is not a whole number of 1 or more (nor 0): the
   * `invalidCost` number, or `undefined` to refuse the request with 400. A value that is not even a
   * number is the application's mistake, not the client's: warned about once per process.
   */
  #unusableCost(cost: unknown): number | undefined {
    if (typeof cost !== 'number') {
      warnOnce(
        'cost-not-a-number',
        `[fastlimit] [${this.#name}] cost returned ${show(cost)}, which is not a number: return a whole number ` +
          '(e.g. Number(req.query.weight)). ' +
          (this.#invalidCost === 'reject'
            ? 'Such requests are refused with 400 (invalidCost).'
            : `Such requests are charged ${this.#invalidCost} (invalidCost).`),
      )
    }
    return this.#invalidCost === 'reject' ? undefined : this.#invalidCost
  }

  #deny(req: Req, decision: Decision): HttpDenial | Promise<HttpDenial> {
    const outage = decision.reason === 'fail-closed'
    const kind = outage ? 'outage' : 'limit'
    const status = outage ? this.outageStatusCode : this.statusCode
    if (this.#messageBody !== undefined) {
      return { kind, status, contentType: this.#messageType, body: this.#messageBody, decision }
    }
    const messageFn = this.#messageFn
    if (messageFn === undefined) {
      return { kind, status, contentType: PROBLEM_JSON, body: problemDetails(status, decision), decision }
    }
    return this.#denyWith(messageFn, req, decision, kind, status)
  }

  async #denyWith(
    messageFn: (req: Req, decision: Decision) => MessageBody | Promise<MessageBody>,
    req: Req,
    decision: Decision,
    kind: 'limit' | 'outage',
    status: number,
  ): Promise<HttpDenial> {
    const m = await messageFn(req, decision)
    if (typeof m === 'string') return { kind, status, contentType: TEXT, body: m, decision }
    return { kind, status, contentType: JSON_TYPE, body: JSON.stringify(m), decision }
  }
}

/**
 * Builds the framework-neutral HTTP limiter an adapter wraps. Checks every option now and throws a
 * {@link ConfigError} naming the adapter (`[fastlimit] [express] ...`) for a bad one.
 *
 * @example
 * ```ts
 * const http = createHttpLimiter({ rules: '100/min' }, {
 *   name: 'node',
 *   remoteAddress: (req) => req.socket.remoteAddress,
 *   header: (req, name) => req.headers[name] as string | undefined,
 *   setHeader: (res, name, value) => res.setHeader(name, value),
 * })
 * const denial = await http.handle(req, res)
 * if (denial) { res.statusCode = denial.status; res.setHeader('Content-Type', denial.contentType); res.end(denial.body) }
 * ```
 */
export function createHttpLimiter<Req, Res>(
  options: RateLimitCommonOptions<Req, NoInfer<Res>> | RateLimitCommonOptions<Req> | undefined,
  adapter: HttpAdapter<Req, Res>,
): HttpLimiter<Req, Res> {
  return new HttpLimiter(options ?? {}, adapter)
}

/**
 * For adapter authors: checks the `handler` option of an adapter that lets the application send the
 * refusal itself, and returns it. Call it before {@link createHttpLimiter}. Throws a
 * {@link ConfigError} when `handler` is not a function (`[fastlimit] [<adapter>] handler must be a
 * function <signature>.`) or comes with `message`, which it replaces.
 *
 * @param signature - the handler's shape, for the error: `'(req, res, next, decision) => void'`
 * @param verb - what the handler does with the refusal: `'sends'` it, or `'builds'` it (returns a Response)
 *
 * @example
 * ```ts
 * const handler = checkHandler(options, 'express', '(req, res, next, decision) => void')
 * const http = createHttpLimiter(options, adapter)
 * ```
 */
export function checkHandler<H>(
  options: { readonly handler?: H; readonly message?: unknown } | undefined,
  adapter: string,
  signature: string,
  verb = 'sends',
): H | undefined {
  const handler = options?.handler
  if (handler !== undefined && typeof handler !== 'function') {
    throw new ConfigError(`[fastlimit] [${adapter}] handler must be a function ${signature}.`)
  }
  if (handler !== undefined && options?.message !== undefined) {
    throw new ConfigError(
      `[fastlimit] [${adapter}] Give handler or message, not both: handler ${verb} the whole refusal.`,
    )
  }
  return handler
}
