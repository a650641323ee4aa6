// countWhen and settle: a request is reserved when it arrives and charged what it really cost when its response ends.

import { ConfigError, show } from '../errors'
import type { Decision, FastLimit } from '../limiter'
import { warnOnce } from './warn'

/**
 * A function of the request and its response, as `countWhen` and `settle` are typed: `(req, res)` in
 * adapters whose framework has both (Express, Fastify, NestJS), `(c)` / `(ctx)` where one context
 * holds both (Hono, Koa: `Res` is `never` there).
 */
export type OutcomeFunction<Req, Res, T> = [Res] extends [never]
  ? (req: Req) => T | Promise<T>
  : (req: Req, res: Res) => T | Promise<T>

/**
 * The options that decide a request's cost after its response: part of every adapter's options
 * (`RateLimitCommonOptions`). With either, a request is reserved when it arrives
 * (`limiter.reserve`), goes on if the reservation is allowed, and is charged when its response ends:
 * - after the response is sent (Express, Koa, Fastify, NestJS: when Node's response closes; Hono:
 *   when the handler's `Response` is ready, before its body streams);
 * - when the handler throws: after the framework's error handling answered (the status it sent,
 *   500 unless the error carries its own);
 * - when the client disconnects first (Node adapters): with the status sent if the response had
 *   begun, otherwise 499 (Client Closed Request), so `res.statusCode < 400` counts it.
 * Exactly once per request. The RateLimit headers, sent before the body, describe the reservation
 * (the request counted at its reserved `cost`); a refund or a higher charge shows in the next
 * response. A denied request is refused as usual and charged nothing: neither function runs.
 * Without these options the middleware makes a plain check and adds no response hook.
 */
export interface OutcomeOptions<Req, Res> {
  /**
   * Whether the request counts, decided when its response ends: `false` refunds its reserved cost
   * (skip successful logins: `(req, res) => res.statusCode >= 400`; count only client errors:
   * `res.statusCode >= 400 && res.statusCode < 500`). May be async. Express and Fastify pass
   * `(req, res)` / `(request, reply)`, Hono and Koa their context, NestJS the platform's request
   * and response. An error it throws is warned about once and the request stays counted.
   * @default undefined: every request admitted counts
   */
  countWhen?: OutcomeFunction<Req, Res, boolean>
  /**
   * The actual cost of the request, read from its response when it ends (a header the handler set,
   * a value it stored on the request): charged instead of the reserved `cost`, refunding the
   * difference or charging more (charged even past what remains: the bucket fills up to its
   * capacity, later requests wait, and what does not fit is forgiven). `0` refunds everything. May be async. Something that is not a whole
   * number of 0 or more (or an error) is warned about once and the reserved cost stays charged.
   * With `countWhen`, runs only for requests that count.
   * @default undefined: requests cost what `cost` says
   * @example
   * ```ts
   * // An LLM token budget: reserve 1,000 tokens, charge what the completion used.
   * rateLimit({ rules: '100000/hour', cost: () => 1000, settle: (req, res) => Number(res.getHeader('x-tokens-used')) })
   * ```
   */
  settle?: OutcomeFunction<Req, Res, number>
}

/**
 * What the HTTP layer needs of a reserved request: `limiter.reserve()`'s `Reservation`, seen from here.
 * @internal
 */
export interface Settleable {
  settle(actualCost: number): Promise<unknown>
  cancel(): Promise<unknown>
}

function noop(): void {}

/**
 * A Node `ServerResponse` (Express's `res`, Koa's `ctx.res`, Fastify's `reply.raw`), as
 * {@link onResponseClose} uses it: no Node import, so core stays runnable on Workers.
 */
export interface NodeResponseLike {
  statusCode: number
  readonly headersSent: boolean
  /** `true` once the response (or its connection) is closed (Node 18.0+). */
  readonly closed?: boolean
  on(event: 'close', listener: () => void): unknown
}

/**
 * The status `countWhen` and `settle` see for a request whose client disconnected before the
 * response began: 499, "Client Closed Request" as nginx logs it, so that `res.statusCode < 400`
 * counts it (a client cannot dodge a limit by hanging up) and `res.statusCode >= 400` too.
 */
export const CLIENT_CLOSED_REQUEST = 499

/**
 * For adapters on Node's `http` (Express, Koa, Fastify, NestJS): calls `end` once, when `res` closes:
 * after the response is sent, or when the client disconnects first. If the response had not begun
 * then (no headers sent), its `statusCode` is set to {@link CLIENT_CLOSED_REQUEST} before `end` runs.
 * A response already closed calls `end` at once.
 */
export function onResponseClose(res: NodeResponseLike, end: () => void): void {
  const closed = (): void => {
    if (!res.headersSent) res.statusCode = CLIENT_CLOSED_REQUEST
    end()
  }
  if (res.closed === true) closed()
  // 'close' is emitted once: `on` spares the wrapper `once` would allocate per request.
  else res.on('close', closed)
}

/**
 * Decides what a reserved request costs once its response has ended: `countWhen` false cancels the
 * reservation (charges nothing), `settle` charges the cost it gives instead of the reserved one.
 * Errors after the response cannot reach the framework: they are warned about (once per process)
 * and the reserved cost stays charged.
 */
export class Outcome<Req, Res> {
  readonly #countWhen: ((req: Req, res: Res) => boolean | Promise<boolean>) | undefined
  readonly #settle: ((req: Req, res: Res) => number | Promise<number>) | undefined
  readonly #name: string
  /** The adapter's response hook, or `undefined` to decide when `next()` settles. */
  readonly responseEnd: ((req: Req, res: Res, end: () => void) => void) | undefined

  constructor(
    countWhen: unknown,
    settle: unknown,
    responseEnd: ((req: Req, res: Res, end: () => void) => void) | undefined,
    name: string,
    limiter: FastLimit,
  ) {
    for (const [option, value] of [
      ['countWhen', countWhen],
      ['settle', settle],
    ] as const) {
      if (value !== undefined && typeof value !== 'function') {
        throw new ConfigError(
          `[fastlimit] [${name}] ${option} must be a function of the request, got ${show(value)}.`,
        )
      }
    }
    const backend = limiter.backend as { adjust?: unknown; adjustSync?: unknown }
    if (typeof backend.adjust !== 'function' && typeof backend.adjustSync !== 'function') {
      throw new ConfigError(
        `[fastlimit] [${name}] countWhen and settle refund or charge after the response, which needs a backend ` +
          'with adjust (MemoryBackend, RedisBackend, SQLiteBackend, PostgresBackend): this one has none.',
      )
    }
    this.#countWhen = countWhen as ((req: Req, res: Res) => boolean | Promise<boolean>) | undefined
    this.#settle = settle as ((req: Req, res: Res) => number | Promise<number>) | undefined
    this.#name = name
    this.responseEnd = responseEnd
  }

  /**
   * Lets the request go on with `next()` and decides its cost once when its response ends: through
   * the adapter's response hook, or (without one) when `next()` settles, before its result is passed on.
   */
  follow<T>(
    req: Req,
    res: Res,
    reservation: Decision & Settleable,
    next: () => T | Promise<T>,
  ): T | Promise<T> {
    const hook = this.responseEnd
    if (hook !== undefined) {
      hook(req, res, () => {
        void this.decide(req, res, reservation)
      })
      return next()
    }
    return this.#afterNext(req, res, reservation, next)
  }

  async #afterNext<T>(req: Req, res: Res, reservation: Settleable, next: () => T | Promise<T>): Promise<T> {
    try {
      return await next()
    } finally {
      await this.decide(req, res, reservation)
    }
  }

  /**
   * Cancels or settles `reservation` as `countWhen` and `settle` say. Never rejects. A `countWhen`
   * alone that answers a boolean is decided without a promise unless there is something to refund.
   */
  decide(req: Req, res: Res, reservation: Settleable): void | Promise<void> {
    const countWhen = this.#countWhen
    if (countWhen !== undefined && this.#settle === undefined) {
      let counted: boolean | Promise<boolean>
      try {
        counted = countWhen(req, res)
      } catch (err) {
        this.#failed('countWhen', err)
        return
      }
      if (counted === true) return
      if (counted === false) {
        return reservation.cancel().then(noop, (err: unknown) => this.#failed('cancel', err))
      }
    }
    return this.#decide(req, res, reservation)
  }

  async #decide(req: Req, res: Res, reservation: Settleable): Promise<void> {
    let step = 'countWhen'
    try {
      const countWhen = this.#countWhen
      if (countWhen !== undefined) {
        const c = countWhen(req, res)
        const counted = typeof c === 'boolean' ? c : await c
        if (counted === false) {
          step = 'cancel'
          await reservation.cancel()
          return
        }
      }
      const settle = this.#settle
      if (settle === undefined) return
      step = 'settle'
      const s = settle(req, res)
      const cost = typeof s === 'number' ? s : await s
      if (typeof cost !== 'number' || !Number.isSafeInteger(cost) || cost < 0) {
        warnOnce(
          'settle-not-a-cost',
          `[fastlimit] [${this.#name}] settle returned ${show(cost)}, not a whole number of 0 or more: the request ` +
            'keeps its reserved cost. Return the actual cost, e.g. Number(res.getHeader("x-tokens")) || 0. (Warned once.)',
        )
        return
      }
      step = 'settle the reservation'
      if (cost === 0) await reservation.cancel()
      else await reservation.settle(cost)
    } catch (err) {
      this.#failed(step, err)
    }
  }

  /** Warns (once per process and step) that deciding after the response failed: the reserved cost stays. */
  #failed(step: string, err: unknown): void {
    warnOnce(
      `outcome-error-${step}`,
      `[fastlimit] [${this.#name}] ${step} failed after the response (${err instanceof Error ? err.message : show(err)}): ` +
        'the request keeps its reserved cost. (Warned once per process.)',
    )
  }
}
