import { fileURLToPath } from 'node:url'
import { demoSuite } from '@fastlimit/demo-kit/testing'

demoSuite('fastify demo', fileURLToPath(new URL('..', import.meta.url)))
