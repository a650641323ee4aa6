import { fileURLToPath } from 'node:url'
import { demoSuite } from '@fastlimit/demo-kit/testing'

demoSuite('express demo', fileURLToPath(new URL('..', import.meta.url)))
