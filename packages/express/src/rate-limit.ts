// rateLimit() for Express 4 and 5: translates Express's request and response; core's HTTP layer does the rest.

import {
  checkHandler,
  createHttpLimiter,
  type Decision,
  type HttpAdapter,
  type HttpDenial,
  type RateLimitCommonOptions,
} from '@fastlimit/core'
import type { NextFunction, Request, RequestHandler, Response } from 'express'

declare global {
  namespace Express {
    interface Request {
      /**
       * The decision of the last fastlimit middleware that checked this request: `remaining`,
       * `resetMs`, the rule... Absent when no fastlimit middleware checked it (skipped, allow-listed).
       */
      rateLimit?: Decision
    }
  }
}

/** Options of {@link rateLimit}: the options every fastlimit adapter takes, plus `handler`. */
export interface RateLimitOptions extends RateLimitCommonOptions<Request> {
  /**
   * Sends the refusal yourself instead of `statusCode` and `message` (render a page, redirect...).
   * The RateLimit headers and `Retry-After` are already set. Errors it throws go to `next(err)`.
   * @default undefined: answers `statusCode` with `message`
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
  expose: (req, _res, decision) => {
    req.rateLimit = decision
  },
}

/**
 * Express middleware (Express 4 and 5) that limits requests: use it app-wide (`app.use(rateLimit())`)
 * or per route (`app.post('/login', rateLimit({ rules: '5/15m' }), login)`). Options are checked
 * now: a bad one throws a `ConfigError`. Later handlers find the decision in `req.rateLimit`.
 *
 * @example
 * ```ts
 * import express from 'express'
 * import { rateLimit } from '@fastlimit/express'
 *
 * const app = express()
 * app.use(rateLimit({ rules: '100/min' }))
 * app.post('/login', rateLimit({ rules: { limit: 5, window: '15m', name: 'login' } }), login)
 * ```
 */
export function rateLimit(options: RateLimitOptions = {}): RequestHandler {
  const handler = checkHandler(options, 'express', '(req, res, next, decision) => void')
  const http = createHttpLimiter(options, adapter)
  const deny = handler === undefined ? sendDenial : denyWith(handler)
  // Not async: run() sends errors to next(err) itself, so nothing is left for Express 4 to drop.
  return function fastlimit(req: Request, res: Response, next: NextFunction): void {
    void http.run<void>(req, res, next, deny, next)
  }
}

function sendDenial(_req: Request, res: Response, denial: HttpDenial, next: () => void): void {
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
