import { fileURLToPath } from 'node:url'
import { demoSuite } from '@fastlimit/demo-kit/testing'

demoSuite('hono demo', fileURLToPath(new URL('..', import.meta.url)))
