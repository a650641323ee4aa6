// rateLimit() for Express 4 and 5: translates Express's request and response; core's HTTP layer does the rest.

import {
  checkHandler,
  closeSignal,
  createHttpLimiter,
  type Decision,
  type HttpAdapter,
  type HttpDenial,
  type HttpInvalidCost,
  isRequestAborted,
  onResponseClose,
  type RateLimitCommonOptions,
  type RateLimitInfo,
} from '@fastlimit/core'
import type { NextFunction, Request, Response } from 'express'

declare global {
  namespace Express {
    interface Request {
      /**
       * What the last fastlimit middleware that counted this request found: `remaining`, `resetMs`,
       * the rule, `reset()` and `peek()` of the bucket, and `all` for every middleware that counted it.
       * Absent when none did (skipped, allow-listed, cost 0).
       */
      rateLimit?: RateLimitInfo
    }
  }
}

/** Express's route parameters by default (`ParamsDictionary`), as the installed `@types/express` types them. */
type DefaultParams = Request['params']
/** Express's parsed query by default (`ParsedQs`). */
type DefaultQuery = Request['query']
/** Whatever Express types the body as by default (its own `RequestHandler` says `any`). */
// biome-ignore lint/suspicious/noExplicitAny: Express's own defaults; unknown would reject handlers typed with any
type AnyBody = any
/** Any route's request: its params, bodies and query typed as the route says. */
type AnyRequest = Request<unknown, AnyBody, AnyBody, unknown, Record<string, AnyBody>>

/**
 * What {@link rateLimit} returns: an Express middleware that keeps the route's types (its generic
 * parameters are inferred from the route, so `req.params.id` stays a `string` on
 * `app.get('/users/:id', limit, handler)`), with `reset(req)` and `peek(req)` for the bucket a
 * request is counted in.
 */
export interface RateLimitMiddleware {
  <
    P = DefaultParams,
    ResBody = AnyBody,
    ReqBody = AnyBody,
    ReqQuery = DefaultQuery,
    LocalsObj extends Record<string, AnyBody> = Record<string, AnyBody>,
  >(
    req: Request<P, ResBody, ReqBody, ReqQuery, LocalsObj>,
    res: Response<ResBody, LocalsObj>,
    next: NextFunction,
  ): void
  /**
   * Forgets the bucket `req` is counted in by this middleware (the client's address, or what `key`
   * returns, in this middleware's `scope`): after a successful login, for example. Works in any later
   * handler, whether or not this middleware ran for the request. Rejects when the store fails.
   */
  reset(req: AnyRequest): Promise<void>
  /**
   * Reads the bucket `req` is counted in by this middleware, charging nothing: `remaining`,
   * `resetMs`, `allowed` (would a request of cost 1 pass). `undefined` for an allow-listed client.
   */
  peek(req: AnyRequest): Promise<RateLimitInfo | undefined>
}

/** Options of {@link rateLimit}: the options every fastlimit adapter takes, plus `handler`. */
export interface RateLimitOptions extends RateLimitCommonOptions<Request, Response> {
  /**
   * Sends the refusal yourself instead of `statusCode` and `message` (render a page, redirect...).
   * Called for requests over the limit and for outages (`decision.reason === 'fail-closed'`), with
   * the RateLimit headers and `Retry-After` already set; not for a request whose cost is unusable
   * (that one is answered 400, see `invalidCost`). Errors it throws go to `next(err)`.
   * @default undefined: answers `statusCode` (or `outageStatusCode`) with `message`
   */
  handler?: (req: Request, res: Response, next: NextFunction, decision: Decision) => void | Promise<void>
}

const adapter: HttpAdapter<Request, Response> = {
  name: 'express',
  extraOptions: ['handler'],
  // The connection's peer, never req.ip: which proxies to believe is trustProxy's job.
  remoteAddress: (req) => req.socket.remoteAddress,
  header: (req, name) => {
    const value = req.headers[name]
    return typeof value === 'string' ? value : Array.isArray(value) ? value.join(', ') : undefined
  },
  method: (req) => req.method,
  setHeader: (res, name, value) => {
    res.setHeader(name, value)
  },
  attach: (req, _res, info) => {
    req.rateLimit = info
  },
  attached: (req) => req.rateLimit,
  // The concurrency option's slot is released once the response is sent or the client went away.
  onFinished: (_req, res, done) => {
    res.once('finish', done)
    res.once('close', done)
  },
  // mode: 'delay' drops a held request whose client has gone.
  signal: (_req, res) => closeSignal(res),
  // countWhen and settle: decided when Node's response closes (sent, or the client gone).
  responseEnd: (_req, res, end) => onResponseClose(res, end),
}

/**
 * Express middleware (Express 4 and 5) that limits requests: use it app-wide (`app.use(rateLimit())`)
 * or per route (`app.post('/login', rateLimit({ rules: '5/15m' }), login)`). Options are checked
 * now: a bad one throws a `ConfigError`. Later handlers find what it found in `req.rateLimit`;
 * `middleware.reset(req)` forgets a request's bucket (after a successful login).
 *
 * @example
 * ```ts
 * import express from 'express'
 * import { rateLimit } from '@fastlimit/express'
 *
 * const app = express()
 * app.use(rateLimit({ rules: '100/min' }))
 * const loginLimit = rateLimit({ rules: '5/15m', scope: 'login' })
 * app.post('/login', loginLimit, async (req, res) => {
 *   if (!(await checkPassword(req.body))) return void res.status(401).end()
 *   await loginLimit.reset(req) // or req.rateLimit?.reset()
 *   res.json({ ok: true })
 * })
 * ```
 */
export function rateLimit(options: RateLimitOptions = {}): RateLimitMiddleware {
  const handler = checkHandler(options, 'express', '(req, res, next, decision) => void')
  const http = createHttpLimiter(options, adapter)
  const deny = handler === undefined ? sendDenial : denyWith(handler)
  // Not async: run() sends errors to next(err) itself, so nothing is left for Express 4 to drop; and
  // when the store decides at once (memory), next() is called before run() returns.
  // Only mode 'delay' holds requests, so only there can a client leave while held: elsewhere errors go
  // straight to next, with no closure per request.
  const fastlimit =
    http.mode === 'delay'
      ? function fastlimit(req: Request, res: Response, next: NextFunction): void {
          void http.run<void>(req, res, next, deny, (err) => fail(err, next), sendDenial)
        }
      : function fastlimit(req: Request, res: Response, next: NextFunction): void {
          void http.run<void>(req, res, next, deny, next, sendDenial)
        }
  return Object.assign(fastlimit, {
    reset: (req: Request) => http.reset(req),
    peek: (req: Request) => http.peek(req),
  }) as RateLimitMiddleware
}

/** Errors go to Express's error handling, but a request whose client left while held (mode 'delay') just ends. */
function fail(err: unknown, next: NextFunction): void {
  if (!isRequestAborted(err)) next(err)
}

function sendDenial(
  _req: Request,
  res: Response,
  denial: HttpDenial | HttpInvalidCost,
  next: () => void,
): void {
  try {
    res.statusCode = denial.status
    res.setHeader('content-type', denial.contentType)
    res.end(denial.body)
  } catch (err) {
    ;(next as NextFunction)(err)
  }
}

function denyWith(handler: NonNullable<RateLimitOptions['handler']>) {
  return async (req: Request, res: Response, denial: HttpDenial, next: () => void): Promise<void> => {
    try {
      await handler(req, res, next as NextFunction, denial.decision)
    } catch (err) {
      ;(next as NextFunction)(err)
    }
  }
}
