// The request and response behind a Nest execution context: HTTP on Express or Fastify, or a GraphQL operation.

import type { ExecutionContext } from '@nestjs/common'

// biome-ignore lint/suspicious/noExplicitAny: platform objects (Express or Fastify), read by duck typing.
type Loose = any

/** The GraphQL context of a resolver call: Apollo on Express (`req`, `res`), on Fastify (`request`, `reply`), Mercurius (`reply`). */
function graphqlRequest(context: ExecutionContext): Loose {
  const g: Loose = context.getArgByIndex(2)
  if (g === null || typeof g !== 'object') return undefined
  return g.req ?? g.request ?? g.reply?.request
}

function graphqlResponse(context: ExecutionContext): Loose {
  const g: Loose = context.getArgByIndex(2)
  if (g === null || typeof g !== 'object') return undefined
  return g.res ?? g.reply ?? g.req?.res
}

/**
 * The platform request of an HTTP or GraphQL context (an Express `Request`, a Fastify
 * `FastifyRequest`), or `undefined` for other contexts (microservices, websockets).
 */
export function requestOf(context: ExecutionContext): Loose {
  const type = context.getType<string>()
  if (type === 'http') return context.getArgByIndex(0)
  if (type === 'graphql') return graphqlRequest(context)
  return undefined
}

/** The platform response of an HTTP or GraphQL context, or `undefined`. */
export function responseOf(context: ExecutionContext): Loose {
  const type = context.getType<string>()
  if (type === 'http') return context.getArgByIndex(1)
  if (type === 'graphql') return graphqlResponse(context)
  return undefined
}

/** Sets a header on an Express (or Node) response or a Fastify reply. */
export function setHeader(res: Loose, name: string, value: string): void {
  if (typeof res?.setHeader === 'function') res.setHeader(name, value)
  else if (typeof res?.header === 'function') res.header(name, value)
}
