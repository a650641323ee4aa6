// Requires every tarball as CommonJS (the `require` condition) and runs the shared checks.
const assert = require('node:assert/strict')
const { run } = require('./smoke-common.cjs')

// On Node 18 (FASTLIMIT_CONSUMER_NODE18=1) only core and the Express, Hono and Koa adapters (see smoke.mjs).
const native = process.env.FASTLIMIT_CONSUMER_NODE18 !== '1'
const mods = {
  core: require('@fastlimit/core'),
  coreLite: require('@fastlimit/core/lite'),
  express: require('@fastlimit/express'),
  hono: require('@fastlimit/hono'),
  honoLite: require('@fastlimit/hono/lite'),
  koa: require('@fastlimit/koa'),
  expressLib: require('express'),
  honoLib: require('hono'),
  koaLib: require('koa'),
}
if (native) {
  require('reflect-metadata')
  mods.nestjs = require('@fastlimit/nestjs')
  mods.fastify = require('@fastlimit/fastify')
  mods.fastifyLib = require('fastify')
  mods.sqlite = require('@fastlimit/sqlite')
  mods.redis = require('@fastlimit/redis')
  mods.postgres = require('@fastlimit/postgres')
}
// @fastlimit/core/testing is ESM only (it imports vitest, which cannot be require()d).
assert.throws(() => require('@fastlimit/core/testing'), { code: 'ERR_PACKAGE_PATH_NOT_EXPORTED' })
run(mods, { label: 'CommonJS (require)', native }).catch((err) => {
  console.error(err)
  process.exit(1)
})
