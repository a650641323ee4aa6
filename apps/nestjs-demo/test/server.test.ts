import { fileURLToPath } from 'node:url'
import { demoSuite } from '@fastlimit/demo-kit/testing'
import { afterAll, beforeAll, describe } from 'vitest'

const root = fileURLToPath(new URL('..', import.meta.url))

// A route's @RateLimit replaces the module-wide limit in NestJS: its headers list its own policy.
demoSuite('nestjs demo (Express platform)', root, { layered: false })

// The same app on Nest's Fastify platform (NEST_PLATFORM is read when each demo process starts).
describe('on the Fastify platform', () => {
  beforeAll(() => {
    process.env.NEST_PLATFORM = 'fastify'
  })
  afterAll(() => {
    delete process.env.NEST_PLATFORM
  })
  demoSuite('nestjs demo (Fastify platform)', root, { layered: false })
})
