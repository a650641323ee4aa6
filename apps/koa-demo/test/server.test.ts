import { fileURLToPath } from 'node:url'
import { demoSuite } from '@fastlimit/demo-kit/testing'

demoSuite('koa demo', fileURLToPath(new URL('..', import.meta.url)))
