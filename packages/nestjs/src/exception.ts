// The refusal, Nest style: an HttpException subclass, and the filter that sends it as every fastlimit adapter does.

import type { Decision, HttpDenial, HttpInvalidCost } from '@fastlimit/core'
import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException } from '@nestjs/common'

/** The exception's response: the body parsed when it is JSON, as Nest's own filter expects. */
function responseOf(denial: HttpDenial | HttpInvalidCost): string | Record<string, unknown> {
  if (!denial.contentType.includes('json')) return denial.body
  return JSON.parse(denial.body) as Record<string, unknown>
}

/**
 * Thrown by the guard for a request over the limit (or refused by `'fail-closed'`). Its status is
 * the limit's `statusCode` (429 by default) and its response the refusal's body: the RFC 9457
 * problem details object, or your `message`. The RateLimit headers and `Retry-After` are already set
 * on the response. Catch it with `@Catch(RateLimitException)` to answer differently.
 *
 * @example
 * ```ts
 * @Catch(RateLimitException)
 * class TooManyFilter implements ExceptionFilter {
 *   catch(e: RateLimitException, host: ArgumentsHost) {
 *     host.switchToHttp().getResponse().status(e.getStatus()).json({ retryInMs: e.decision.retryAfterMs })
 *   }
 * }
 * ```
 */
export class RateLimitException extends HttpException {
  /** The decision that refused the request. */
  readonly decision: Decision
  /** The `Content-Type` of {@link body}: `application/problem+json` by default. */
  readonly contentType: string
  /** The refusal's body as every fastlimit adapter sends it. */
  readonly body: string
  /**
   * What a GraphQL error reports (GraphQL servers copy an error's `extensions`): `code`
   * `'TOO_MANY_REQUESTS'`, the `status`, and `retryAfterMs` (`null` when the request can never pass).
   */
  readonly extensions: { code: 'TOO_MANY_REQUESTS'; status: number; retryAfterMs: number | null }

  constructor(denial: HttpDenial) {
    const response = responseOf(denial)
    super(response, denial.status, { description: 'Too Many Requests' })
    // What GraphQL errors and logs show: the problem's detail (`Too many requests; retry in 30 seconds.`).
    this.message =
      typeof response === 'string'
        ? response
        : String(response.detail ?? response.message ?? response.title ?? 'Too Many Requests')
    this.decision = denial.decision
    this.contentType = denial.contentType
    this.body = denial.body
    const wait = denial.decision.retryAfterMs
    this.extensions = {
      code: 'TOO_MANY_REQUESTS',
      status: denial.status,
      retryAfterMs: Number.isFinite(wait) ? wait : null,
    }
  }
}

/**
 * Thrown by the guard for a request whose `cost` is not a whole number of 0 or more (`NaN` from
 * `?limit=abc`, a negative or fractional number, a string) under `invalidCost: 'reject'`: 400 with
 * RFC 9457 problem details, since the request cannot be weighed. Nothing was charged.
 */
export class InvalidCostException extends HttpException {
  /** `application/problem+json`. */
  readonly contentType: string
  /** The problem details as every fastlimit adapter sends them. */
  readonly body: string

  constructor(refusal: HttpInvalidCost) {
    const response = responseOf(refusal)
    super(response, refusal.status, { description: 'Bad Request' })
    this.message =
      typeof response === 'string' ? response : String(response.detail ?? response.title ?? 'Bad Request')
    this.contentType = refusal.contentType
    this.body = refusal.body
  }
}

/**
 * Sends a {@link RateLimitException} (or an {@link InvalidCostException}) with its exact status, `Content-Type` and body (installed by
 * the module unless `exceptionFilter: false`). In a GraphQL operation it hands the exception back
 * to Nest, which reports it as a GraphQL error.
 */
export class RateLimitExceptionFilter implements ExceptionFilter<RateLimitException | InvalidCostException> {
  /** Sends the refusal (HTTP), or returns the exception for Nest to report (GraphQL). */
  catch(exception: RateLimitException | InvalidCostException, host: ArgumentsHost): unknown {
    if (host.getType() !== 'http') return exception
    // biome-ignore lint/suspicious/noExplicitAny: an Express response or a Fastify reply.
    const res: any = host.switchToHttp().getResponse()
    const status = exception.getStatus()
    if (typeof res.code === 'function' && res.raw !== undefined) {
      // Fastify: a Buffer, so the content type goes out as given (Fastify adds a charset to JSON strings).
      res.code(status).header('content-type', exception.contentType).send(Buffer.from(exception.body))
    } else {
      res.statusCode = status
      res.setHeader('content-type', exception.contentType)
      res.end(exception.body)
    }
    return undefined
  }
}

// Decorators applied as calls: the source then compiles without experimentalDecorators (tsx, vitest).
Catch(RateLimitException, InvalidCostException)(RateLimitExceptionFilter)
