import { fileURLToPath } from 'node:url'
import { demoSuite } from '@fastlimit/demo-kit/testing'
import { afterAll, beforeAll, describe } from 'vitest'

const root = fileURLToPath(new URL('..', import.meta.url))

demoSuite('nestjs demo (Express platform)', root)

// The same app on Nest's Fastify platform (NEST_PLATFORM is read when each demo process starts).
describe('on the Fastify platform', () => {
  beforeAll(() => {
    process.env.NEST_PLATFORM = 'fastify'
  })
  afterAll(() => {
    delete process.env.NEST_PLATFORM
  })
  demoSuite('nestjs demo (Fastify platform)', root)
})
