// Requires every tarball as CommonJS (the `require` condition) and runs the shared checks.
const assert = require('node:assert/strict')
const { run } = require('./smoke-common.cjs')

// On Node 18 (FASTLIMIT_CONSUMER_NODE18=1) only core and the adapters: ioredis 6, better-sqlite3 12 and
// vitest 4 (which @fastlimit/core/testing imports) need Node 20.
const native = process.env.FASTLIMIT_CONSUMER_NODE18 !== '1'
const mods = {
  core: require('@fastlimit/core'),
  express: require('@fastlimit/express'),
  hono: require('@fastlimit/hono'),
  koa: require('@fastlimit/koa'),
  expressLib: require('express'),
  honoLib: require('hono'),
  koaLib: require('koa'),
}
if (native) {
  mods.sqlite = require('@fastlimit/sqlite')
  mods.redis = require('@fastlimit/redis')
}
// @fastlimit/core/testing is ESM only (it imports vitest, which cannot be require()d).
assert.throws(() => require('@fastlimit/core/testing'), { code: 'ERR_PACKAGE_PATH_NOT_EXPORTED' })
run(mods, { label: 'CommonJS (require)', native }).catch((err) => {
  console.error(err)
  process.exit(1)
})
