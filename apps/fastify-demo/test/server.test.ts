import { fileURLToPath } from 'node:url'
import { demoSuite } from '@fastlimit/demo-kit/testing'

// A route's config.rateLimit replaces the app-wide limit in Fastify: its headers list its own policy.
demoSuite('fastify demo', fileURLToPath(new URL('..', import.meta.url)), { layered: false })
