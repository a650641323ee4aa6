// Imports every tarball as ESM (the `import` condition) and runs the shared checks.
import * as core from '@fastlimit/core'
import * as coreLite from '@fastlimit/core/lite'
import * as express from '@fastlimit/express'
import * as hono from '@fastlimit/hono'
import * as honoLite from '@fastlimit/hono/lite'
import * as koa from '@fastlimit/koa'
import expressLib from 'express'
import * as honoLib from 'hono'
import koaLib from 'koa'
import common from './smoke-common.cjs'

// On Node 18 (FASTLIMIT_CONSUMER_NODE18=1) only core and the Express, Hono and Koa adapters: the
// backends (ioredis 6, better-sqlite3 12), Fastify 5, NestJS 11 and vitest 4 (which
// @fastlimit/core/testing imports) need Node 20.
const native = process.env.FASTLIMIT_CONSUMER_NODE18 !== '1'
const mods = { core, coreLite, express, hono, honoLite, koa, expressLib, honoLib, koaLib }
if (native) {
  await import('reflect-metadata')
  mods.nestjs = await import('@fastlimit/nestjs')
  mods.fastify = await import('@fastlimit/fastify')
  mods.fastifyLib = (await import('fastify')).default
  mods.testing = await import('@fastlimit/core/testing')
  mods.sqlite = await import('@fastlimit/sqlite')
  mods.redis = await import('@fastlimit/redis')
  mods.postgres = await import('@fastlimit/postgres')
}
await common.run(mods, { label: 'ESM (import)', native })
