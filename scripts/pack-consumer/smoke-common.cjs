// What a user does first with each installed tarball, shared by smoke.mjs (import) and smoke.cjs
// (require): a limiter that refuses the second call, each adapter in a real app answering 200 then 429
// (NestJS: loaded only),
// and (Node 20+) SQLite on a real file and a Redis backend built from a URL, directly and through
// core's backendFromUrl (which imports the backend package only then).
const assert = require('node:assert/strict')
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')

/** Sends two requests to a server listening on a free port and returns their statuses. */
async function twice(server) {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${server.address().port}/`
  try {
    const a = await fetch(url)
    const b = await fetch(url)
    return [a.status, b.status, b.headers.get('ratelimit')]
  } finally {
    server.close()
  }
}

async function run(mods, { label, native }) {
  const { core, express, hono, koa, expressLib, honoLib, koaLib } = mods
  if (mods.testing) assert.equal(typeof mods.testing.backendConformance, 'function')
  const limiter = new core.FastLimit()
  assert.equal((await limiter.check('user', '1/min')).allowed, true)
  assert.equal((await limiter.check('user', '1/min')).allowed, false)
  await limiter.close()

  const eapp = expressLib()
  eapp.use(express.rateLimit({ rules: '1/min' }))
  eapp.get('/', (_req, res) => res.send('ok'))
  const [e1, e2, eh] = await twice(http.createServer(eapp))
  assert.deepEqual([e1, e2], [200, 429], 'express')
  assert.match(String(eh), /remaining=0/)

  const happ = new honoLib.Hono()
  happ.use(hono.rateLimit({ rules: '1/min', key: () => 'client' }))
  happ.get('/', (c) => c.text('ok'))
  const h1 = await happ.request('/')
  const h2 = await happ.request('/')
  assert.deepEqual([h1.status, h2.status], [200, 429], 'hono')

  // The lite entries: the lean Hono middleware, and core's pieces sharing the full entry's classes.
  const { coreLite, honoLite } = mods
  assert.equal(
    coreLite.ConfigError,
    core.ConfigError,
    '@fastlimit/core/lite shares the classes of @fastlimit/core',
  )
  assert.throws(() => honoLite.rateLimit({ rules: '1/mn' }), core.ConfigError)
  const lapp = new honoLib.Hono()
  lapp.use(honoLite.rateLimit({ rules: '1/min', key: () => 'client' }))
  lapp.get('/', (c) => c.text('ok'))
  const l1 = await lapp.request('/')
  const l2 = await lapp.request('/')
  assert.deepEqual([l1.status, l2.status], [200, 429], 'hono/lite')
  assert.match(String(l2.headers.get('ratelimit')), /remaining=0/)

  const kapp = new koaLib()
  kapp.use(koa.rateLimit({ rules: '1/min' }))
  kapp.use((ctx) => {
    ctx.body = 'ok'
  })
  const [k1, k2] = await twice(http.createServer(kapp.callback()))
  assert.deepEqual([k1, k2], [200, 429], 'koa')

  if (native) {
    const fapp = mods.fastifyLib()
    await fapp.register(mods.fastify.rateLimit, { rules: '1/min' })
    fapp.get('/', async () => 'ok')
    const f1 = await fapp.inject({ url: '/' })
    const f2 = await fapp.inject({ url: '/' })
    assert.deepEqual([f1.statusCode, f2.statusCode], [200, 429], 'fastify')
    await fapp.close()

    // NestJS needs decorators compiled by the user's TypeScript; here only that the module loads whole.
    for (const name of ['FastLimitModule', 'FastLimitGuard', 'RateLimit', 'SkipRateLimit']) {
      assert.ok(mods.nestjs[name], `@fastlimit/nestjs exports ${name}`)
    }

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-consumer-db-'))
    const backend = new mods.sqlite.SQLiteBackend(path.join(dir, 'limits.db'))
    const sl = new core.FastLimit({ backend })
    assert.equal((await sl.check('user', '1/min')).allowed, true)
    assert.equal((await sl.check('user', '1/min')).allowed, false)
    await sl.close()
    await backend.close()
    fs.rmSync(dir, { recursive: true, force: true })
    const redis = mods.redis.RedisBackend.fromUrl('redis://127.0.0.1:1', {
      redisOptions: { lazyConnect: true },
    })
    assert.equal(typeof redis.checkAndIncrement, 'function')
    await redis.close()

    // backendFromUrl imports the backend package from core's place (an optional peer the app installed).
    const fromUrl = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-consumer-url-'))
    const chosen = await core.backendFromUrl(`sqlite:${path.join(fromUrl, 'limits.db')}`)
    assert.match(chosen.constructor.name, /SQLiteBackend$/)
    const ul = new core.FastLimit({ backend: chosen })
    assert.equal((await ul.check('user', '1/min')).allowed, true)
    assert.equal((await ul.check('user', '1/min')).allowed, false)
    await ul.close()
    await chosen.close()
    fs.rmSync(fromUrl, { recursive: true, force: true })
    const viaUrl = await core.backendFromUrl('redis://127.0.0.1:1', {
      options: { redisOptions: { lazyConnect: true } },
    })
    assert.match(viaUrl.constructor.name, /RedisBackend$/) // esbuild may name it _RedisBackend
    await viaUrl.close()
    // A connection string opens nothing until the first decision.
    const pgBackend = await core.backendFromUrl('postgres://fastlimit@127.0.0.1:1/fastlimit')
    assert.match(pgBackend.constructor.name, /PostgresBackend$/)
    assert.ok(mods.postgres.PostgresBackend)
    await pgBackend.close()
  }
  console.log(`[consumer] ${label} on Node ${process.versions.node}: every package works`)
}

module.exports = { run }
