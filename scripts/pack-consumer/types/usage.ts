// The README's usage, type-checked against the installed tarballs' declarations (copied to .mts,
// .cts and .ts: node16 ESM, node16 CommonJS and bundler resolution).
import { type Backend, type Decision, FastLimit, MemoryBackend } from '@fastlimit/core'
import { rateLimit as expressLimit } from '@fastlimit/express'
import { rateLimit as fastifyLimit } from '@fastlimit/fastify'
import { rateLimit as honoLimit } from '@fastlimit/hono'
import { rateLimit as honoLite, liteMemoryBackend, proxyTrust } from '@fastlimit/hono/lite'
import { rateLimit as koaLimit } from '@fastlimit/koa'
import { FastLimitModule } from '@fastlimit/nestjs'
import { PostgresBackend } from '@fastlimit/postgres'
import { RedisBackend } from '@fastlimit/redis'
import { SQLiteBackend } from '@fastlimit/sqlite'
import express from 'express'
import Fastify from 'fastify'
import { Hono } from 'hono'
import Koa from 'koa'

const limiter = new FastLimit({ backend: new MemoryBackend({ maxKeys: 1000 }) })
export const decision: Promise<Decision> = limiter.check('user', ['10/s', '1000/day'], { cost: 2 })

const eapp = express()
eapp.use(expressLimit({ rules: '100/min' }))
eapp.post('/login', expressLimit({ limiter, rules: { limit: 5, window: '15m', name: 'login' } }))

const happ = new Hono()
happ.use(honoLimit({ rules: '100/min', key: (c) => c.req.header('cf-connecting-ip') ?? 'unknown' }))
happ.use(
  honoLite({
    rules: ['10/s', '1000/day'],
    backend: liteMemoryBackend({ maxKeys: 1000 }),
    trustProxy: proxyTrust({ hops: 1, from: ['10.0.0.0/8'] }),
    handler: (c, d: Decision) => c.text(`retry in ${d.retryAfterMs} ms`, 429),
  }),
)

const kapp = new Koa()
kapp.use(koaLimit({ rules: '100/min' }))

const fapp = Fastify()
export const registered = fapp.register(fastifyLimit, { rules: '100/min' })

export const nestModule = FastLimitModule.forRoot({ rules: '100/min' })

export const backends: Backend[] = [
  new SQLiteBackend(':memory:'),
  RedisBackend.fromUrl('redis://localhost:6379'),
  new PostgresBackend('postgres://localhost/app'),
]
