// The concurrency option on Fastify, over a real socket: the shared suite of @fastlimit/core/testing.
import { adaptOptions, concurrencyConformance } from '@fastlimit/core/testing'
import Fastify, { type FastifyRequest } from 'fastify'
import { rateLimit } from './index'

const view = (request: FastifyRequest) => ({
  method: request.method,
  path: request.url.split('?')[0] as string,
  header: (name: string) => {
    const v = request.headers[name]
    return typeof v === 'string' ? v : undefined
  },
})

concurrencyConformance({
  name: '@fastlimit/fastify',
  listen: async (options, hold) => {
    const app = Fastify()
    await app.register(rateLimit, adaptOptions(options, view))
    app.get('/slow', async () => {
      await hold()
      return 'ok'
    })
    app.get('/', async () => 'ok')
    const url = await app.listen({ port: 0, host: '127.0.0.1' })
    return {
      url,
      close: async () => {
        app.server.closeAllConnections()
        await app.close()
      },
    }
  },
})
