// The Redis section: FastLimit.check on RedisBackend beside rate-limiter-flexible's RateLimiterRedis,
// express-rate-limit's rate-limit-redis store and a raw ioredis EVALSHA of an INCR+PEXPIRE script (the
// floor), all against one redis-server this section starts on a free loopback port and stops at the end.
import { type Algorithm, type BucketConfig, bucketId, FastLimit } from '@fastlimit/core'
import { RedisBackend } from '@fastlimit/redis'
import { GlideClient, Logger } from '@valkey/valkey-glide'
import { Redis, type RedisOptions } from 'ioredis'
import { Valkey } from 'iovalkey'
import { type RedisReply, RedisStore } from 'rate-limit-redis'
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible'
import { createClient } from 'redis'
import { SCRIPT } from '../../../packages/redis/src/scripts'
import { startStandalone } from '../../../packages/redis/test/servers'
import { fmtOps, fmtStat, rotate, type Stat, stat } from './harness'
import { progress } from './progress'
import { burst, type Call, percentile, processCpuSeconds, sequential } from './redis-measure'
import { type Headline, ratio, type Section, table } from './report'

const KEYS = 10_000
const keys = Array.from({ length: KEYS }, (_, i) => `user-${i}`)
/** Per minute, on every allowed path: never reached (each key sees a few thousand calls a minute at most). */
const LIMIT = 1_000_000
const WINDOW_MS = 60_000
const IN_FLIGHT = 256
const ALLOWED = 'rotating keys (10,000), allowed'
const DENIED = 'rotating keys (10,000), denied'
/** Diagnostic rows: fastlimit gcra's path with its layers peeled off one by one. */
const PEELED = 'gcra, layers peeled off'
const OURS: readonly Algorithm[] = ['gcra', 'fixed-window', 'sliding-window']
/** The reservation row: FastLimit.reserve, then settle below the reserved cost (a refund). */
const RESERVE = 'fastlimit gcra, reserve 2 + settle 1'

/** The floor: one counter per key, expiring with its window; the least a Redis limiter can run. */
const FLOOR_LUA = `local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`

/** Rows of `fastlimit gcra` on other clients (a client of each library, passed as `client`). */
const CLIENTS = 'gcra on other clients'
const CLIENT_ROW = 'fastlimit gcra, '

interface RedisCase {
  name: string
  group: string
  kind: 'fastlimit' | 'peer' | 'floor'
  /** Whether it also gets a sequential-latency row. */
  latency: boolean
  call: Call
}

interface Throughput {
  opsPerSec: Stat
  /** CPU µs of this (the client) process per decision. */
  clientUs: Stat
  /** CPU µs of redis-server per decision (its whole process: network, parsing, the script). */
  serverUs: Stat
  /** Server-side µs per EVAL/EVALSHA call (INFO commandstats): the script alone. */
  scriptUs: Stat
  unexpected: number
}

interface Latency {
  p50: Stat
  p99: Stat
  unexpected: number
}

/** A call over the 10,000 keys in turn; `fn` resolves whether the outcome was the expected one. */
function rotating(fn: (key: string) => Promise<boolean>): Call {
  let i = 0
  return () => fn(keys[i++ % KEYS] as string)
}

function ready(client: Redis): Promise<void> {
  if (client.status === 'ready') return Promise.resolve()
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`[bench] redis client not ready after 10 s (${client.status})`)),
      10_000,
    )
    client.once('ready', () => {
      clearTimeout(timer)
      resolve()
    })
  })
}

/** Sums calls and µs of EVAL and EVALSHA from INFO commandstats. */
function scriptStats(info: string): { calls: number; usec: number } {
  let calls = 0
  let usec = 0
  for (const m of info.matchAll(/^cmdstat_(?:eval|evalsha):calls=(\d+),usec=(\d+)/gm)) {
    calls += Number(m[1])
    usec += Number(m[2])
  }
  return { calls, usec }
}

const us = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '—')

export async function redisSection({ quick }: { quick: boolean }): Promise<Section> {
  const rounds = quick ? 3 : 7
  const sliceMs = quick ? 150 : 800
  const latencyCalls = quick ? 500 : 3000
  const latencyMaxMs = quick ? 150 : 800
  console.log(
    `[bench] redis: ${rounds} rounds, ${sliceMs} ms slices at ${IN_FLIGHT} in flight, then sequential latency`,
  )

  const server = await startStandalone()
  const closers: Array<() => Promise<unknown>> = []
  const own = (client: Redis): Redis => {
    // Errors surface through the calls that fail (counted as unexpected outcomes).
    client.on('error', () => undefined)
    closers.push(() => client.quit().catch(() => client.disconnect()))
    return client
  }
  try {
    const admin = own(new Redis(server.url))
    await ready(admin)
    const version = /^redis_version:(.*)$/m.exec(await admin.info('server'))?.[1]?.trim() ?? '?'
    const cases: RedisCase[] = []

    // Ours: RedisBackend from a URL (its defaults), one connection per algorithm.
    let gcra: { limiter: FastLimit } | undefined
    for (const algorithm of OURS) {
      const backend = RedisBackend.fromUrl(server.url, { keyPrefix: `fl-${algorithm}:` })
      closers.push(() => backend.close())
      const limiter = new FastLimit({ backend, algorithm })
      const rules = limiter.rules({ limit: LIMIT, window: '1m' })
      if (algorithm === 'gcra') gcra = { limiter }
      cases.push({
        name: `fastlimit ${algorithm}`,
        group: ALLOWED,
        kind: 'fastlimit',
        latency: true,
        call: rotating(async (k) => (await limiter.check(k, rules)).reason === 'ok'),
      })
      if (algorithm === 'gcra') {
        // A reservation: reserve 2, then settle at 1 (a refund of 1: RedisBackend.adjust, a second EVALSHA).
        cases.push({
          name: RESERVE,
          group: ALLOWED,
          kind: 'fastlimit',
          latency: true,
          call: rotating(async (k) => {
            const r = await limiter.reserve(`reserve-${k}`, rules, { cost: 2 })
            return r.reason === 'ok' && (await r.settle(1)).outcome === 'adjusted'
          }),
        })
      }
    }
    if (gcra) {
      // Where the time goes: the same decision without FastLimit, then without RedisBackend (our gcra script
      // sent by plain ioredis clients with RedisBackend's arguments), with and without auto-pipelining.
      const backend = RedisBackend.fromUrl(server.url, { keyPrefix: 'peel-backend:' })
      closers.push(() => backend.close())
      const rule = gcra.limiter.rules({ limit: LIMIT, window: '1m' }).rules[0] as BucketConfig
      cases.push({
        name: 'RedisBackend.checkAndIncrement (no FastLimit)',
        group: PEELED,
        kind: 'fastlimit',
        latency: true,
        call: rotating(async (k) => (await backend.checkAndIncrement(`fl:{${k}}`, rule, 1)).allowed),
      })
      // The field (whose id is the bucket's configuration): cost 1, the server's TIME, the default margin.
      const args = [bucketId(rule)]
      for (const [label, options] of [
        ['auto-pipelined client', { enableAutoPipelining: true }],
        ['default client', {}],
      ] as Array<[string, RedisOptions]>) {
        const client = own(new Redis(server.url, options))
        await ready(client)
        client.defineCommand('fastlimitGcra', { numberOfKeys: 1, lua: SCRIPT.lua })
        const run = (
          client as unknown as {
            fastlimitGcra(key: string, ...args: string[]): Promise<string>
          }
        ).fastlimitGcra.bind(client)
        const prefix = label.startsWith('auto') ? 'peel-ap:' : 'peel-def:'
        cases.push({
          name: `gcra script via raw EVALSHA, ${label}`,
          group: PEELED,
          kind: 'floor',
          latency: true,
          call: rotating(async (k) => (await run(`${prefix}fl:{${k}}`, ...args)).startsWith('1,')),
        })
      }
      const { limiter } = gcra
      const deny = limiter.rules({ limit: 1, window: '1h' })
      cases.push({
        name: 'fastlimit gcra',
        group: DENIED,
        kind: 'fastlimit',
        latency: false,
        call: rotating(async (k) => (await limiter.check(`deny-${k}`, deny)).reason === 'rate-limited'),
      })
    }

    // The same decision on a client of another library, each passed to RedisBackend as `client` with that
    // library's defaults (ioredis's row is `fastlimit gcra` above, from the URL).
    if (gcra) {
      const rules = gcra.limiter.rules({ limit: LIMIT, window: '1m' })
      const nodeRedis = createClient({ url: server.url })
      nodeRedis.on('error', () => undefined)
      await nodeRedis.connect()
      closers.push(() => Promise.resolve(nodeRedis.destroy()))
      const iovalkey = new Valkey(server.url)
      iovalkey.on('error', () => undefined)
      closers.push(() => iovalkey.quit().catch(() => iovalkey.disconnect()))
      await new Promise<void>((resolve) => iovalkey.once('ready', () => resolve()))
      Logger.setLoggerConfig('off')
      // requestTimeout as FastLimit's timeoutMs (GLIDE's own default, 250 ms, fails calls under load).
      const glide = await GlideClient.createClient({
        addresses: [{ host: '127.0.0.1', port: server.port }],
        requestTimeout: 1000,
      })
      closers.push(() => Promise.resolve(glide.close()))
      for (const [label, client] of [
        ['node-redis 6 client', nodeRedis],
        ['iovalkey client', iovalkey],
        ['Valkey GLIDE client', glide],
      ] as const) {
        const backend = new RedisBackend({ client, keyPrefix: `fl-${label.split(' ')[0]?.toLowerCase()}:` })
        closers.push(() => backend.close())
        const limiter = new FastLimit({ backend, algorithm: 'gcra' })
        cases.push({
          name: `${CLIENT_ROW}${label}`,
          group: CLIENTS,
          kind: 'fastlimit',
          latency: true,
          call: rotating(async (k) => (await limiter.check(k, rules)).reason === 'ok'),
        })
      }
    }

    // rate-limiter-flexible: its docs' ioredis client (offline queue off), and the same auto-pipelined.
    for (const [label, options] of [
      ['default client', { enableOfflineQueue: false }],
      ['auto-pipelined client', { enableOfflineQueue: false, enableAutoPipelining: true }],
    ] as Array<[string, RedisOptions]>) {
      const client = own(new Redis(server.url, options))
      await ready(client)
      const tag = label.startsWith('auto') ? 'ap' : 'def'
      const rlf = new RateLimiterRedis({
        storeClient: client,
        points: LIMIT,
        duration: WINDOW_MS / 1000,
        keyPrefix: `rlf-${tag}`,
      })
      const rlfDeny = new RateLimiterRedis({
        storeClient: client,
        points: 1,
        duration: 3600,
        keyPrefix: `rlf-deny-${tag}`,
      })
      cases.push({
        name: `rate-limiter-flexible, ${label}`,
        group: ALLOWED,
        kind: 'peer',
        latency: true,
        call: rotating((k) =>
          rlf.consume(k).then(
            () => true,
            () => false,
          ),
        ),
      })
      cases.push({
        name: `rate-limiter-flexible, ${label}`,
        group: DENIED,
        kind: 'peer',
        latency: false,
        // Its denied path rejects with a RateLimiterRes (an Error means Redis failed).
        call: rotating((k) =>
          rlfDeny.consume(k).then(
            () => false,
            (res) => res instanceof RateLimiterRes,
          ),
        ),
      })
    }

    // express-rate-limit's rate-limit-redis store, on an ioredis client as its README shows.
    {
      const client = own(new Redis(server.url))
      await ready(client)
      const store = new RedisStore({
        sendCommand: (command: string, ...args: string[]) =>
          client.call(command, ...args) as Promise<RedisReply>,
        prefix: 'erl:',
      })
      await store.init({ windowMs: WINDOW_MS } as never)
      cases.push({
        name: 'express-rate-limit + rate-limit-redis',
        group: ALLOWED,
        kind: 'peer',
        latency: true,
        call: rotating(async (k) => (await store.increment(k)).totalHits <= LIMIT),
      })
    }

    // The floor: a raw EVALSHA (ioredis defineCommand) of INCR + PEXPIRE-on-first, without and with auto-pipelining.
    for (const [label, options] of [
      ['default client', {}],
      ['auto-pipelined client', { enableAutoPipelining: true }],
    ] as Array<[string, RedisOptions]>) {
      const client = own(new Redis(server.url, options))
      await ready(client)
      client.defineCommand('floorIncr', { numberOfKeys: 1, lua: FLOOR_LUA })
      const incr = (
        client as unknown as { floorIncr(key: string, windowMs: number): Promise<number> }
      ).floorIncr.bind(client)
      const prefix = label.startsWith('auto') ? 'floor-ap:' : 'floor-def:'
      cases.push({
        name: `raw EVALSHA INCR+PEXPIRE, ${label}`,
        group: ALLOWED,
        kind: 'floor',
        latency: true,
        call: rotating(async (k) => (await incr(prefix + k, WINDOW_MS)) <= LIMIT),
      })
    }

    // Warm up: loads the scripts, touches every key (the denied paths' first call per key is allowed).
    progress.update({ case: 'warming up', done: 0, total: 2 * rounds + 1 })
    for (const c of cases) {
      await burst(c.call, {
        inFlight: IN_FLIGHT,
        maxOps: Math.round(KEYS * (quick ? 1.2 : 2)),
        maxMs: quick ? 2000 : 5000,
      })
      if (c.latency) await sequential(c.call, { calls: 200, maxMs: 300 })
    }

    // Throughput: IN_FLIGHT concurrent loops per case for a slice, cases round-robin, order rotating.
    const pid = server.server.pid
    const raw = new Map(
      cases.map((c) => [
        c,
        {
          ops: [] as number[],
          client: [] as number[],
          server: [] as number[],
          script: [] as number[],
          unexpected: 0,
        },
      ]),
    )
    for (let r = 0; r < rounds; r++) {
      progress.update({ case: 'throughput', round: r + 1, rounds, done: r + 1, total: 2 * rounds + 1 })
      for (const c of rotate(cases, r)) {
        const m = raw.get(c) as NonNullable<ReturnType<typeof raw.get>>
        await admin.config('RESETSTAT')
        const cpu0 = process.cpuUsage()
        const srv0 = processCpuSeconds(pid)
        const b = await burst(c.call, { inFlight: IN_FLIGHT, maxOps: 5_000_000, maxMs: sliceMs })
        const cpu = process.cpuUsage(cpu0)
        const srv = processCpuSeconds(pid) - srv0
        const s = scriptStats(await admin.info('commandstats'))
        m.ops.push(b.ops / b.seconds)
        m.client.push((cpu.user + cpu.system) / b.ops)
        m.server.push((srv * 1e6) / b.ops)
        m.script.push(s.calls > 0 ? s.usec / s.calls : Number.NaN)
        m.unexpected += b.unexpected
      }
    }
    const throughput = new Map<RedisCase, Throughput>(
      [...raw].map(([c, m]) => [
        c,
        {
          opsPerSec: stat(m.ops),
          clientUs: stat(m.client),
          serverUs: stat(m.server),
          scriptUs: stat(m.script),
          unexpected: m.unexpected,
        },
      ]),
    )

    // Sequential latency: one awaited call at a time, each timed; p50 and p99 per round.
    const latencyCases = cases.filter((c) => c.latency)
    const lat = new Map(
      latencyCases.map((c) => [c, { p50: [] as number[], p99: [] as number[], unexpected: 0 }]),
    )
    for (let r = 0; r < rounds; r++) {
      progress.update({ case: 'latency', round: r + 1, rounds, done: rounds + r + 1, total: 2 * rounds + 1 })
      for (const c of rotate(latencyCases, r)) {
        const m = lat.get(c) as NonNullable<ReturnType<typeof lat.get>>
        const s = await sequential(c.call, { calls: latencyCalls, maxMs: latencyMaxMs })
        m.p50.push(percentile(s.sortedUs, 50))
        m.p99.push(percentile(s.sortedUs, 99))
        m.unexpected += s.unexpected
      }
    }
    const latency = new Map<RedisCase, Latency>(
      [...lat].map(([c, m]) => [c, { p50: stat(m.p50), p99: stat(m.p99), unexpected: m.unexpected }]),
    )

    return report({ cases, throughput, latency, version, rounds, sliceMs, latencyCalls })
  } finally {
    for (const close of closers.reverse()) await close().catch(() => undefined)
    await server.stop()
  }
}

function report({
  cases,
  throughput,
  latency,
  version,
  rounds,
  sliceMs,
  latencyCalls,
}: {
  cases: RedisCase[]
  throughput: Map<RedisCase, Throughput>
  latency: Map<RedisCase, Latency>
  version: string
  rounds: number
  sliceMs: number
  latencyCalls: number
}): Section {
  const tp = (c: RedisCase) => throughput.get(c) as Throughput
  const lt = (c: RedisCase) => latency.get(c) as Latency
  /** The case of `kind` (whose name starts with `prefix`) in `group` with the highest throughput. */
  const bestTp = (group: string, prefix: string) =>
    cases
      .filter((c) => c.group === group && c.name.startsWith(prefix))
      .sort((a, b) => tp(b).opsPerSec.median - tp(a).opsPerSec.median)[0]
  /** The latency case (whose name starts with `prefix`) with the lowest p50. */
  const bestP50 = (prefix: string) =>
    cases
      .filter((c) => c.latency && c.name.startsWith(prefix))
      .sort((a, b) => lt(a).p50.median - lt(b).p50.median)[0]
  const ours = (algorithm: string, group = ALLOWED) =>
    cases.find((c) => c.group === group && c.name === `fastlimit ${algorithm}`)

  const body: string[] = [
    `One redis-server ${version} started by the bench on a free loopback port (no persistence), on the same 2 cores`,
    'as this client process. Every case keys 10,000 rotating identities (`user-0` … `user-9999`, each library',
    'under its own key prefix), every allowed path has 1,000,000 per minute (never reached), and each case has a',
    'connection of its own:',
    '',
    '- `fastlimit <algorithm>`: `FastLimit.check(identity, rule)` on `RedisBackend.fromUrl(url)` (its defaults:',
    '  no auto-pipelining, the calls of one tick written together, no offline queue), the whole path: rule',
    '  lookup, identity escaping, one `EVALSHA` of its script (server `TIME`, `HGET`, the step, and on a charge',
    '  `HSET`, `PTTL` and, when the expiry must grow, `PEXPIRE`), the `timeoutMs` timer, a `Decision`.',
    `- \`${RESERVE}\`: \`FastLimit.reserve(identity, rule, { cost: 2 })\`, then \`settle(1)\` once it resolves: the check,`,
    '  then `RedisBackend.adjust` (a second `EVALSHA` of the same script, refunding 1 of the charge); one decision',
    '  counts both round trips. Compare it with `fastlimit gcra` for the cost of a reservation.',
    '- `rate-limiter-flexible`: `RateLimiterRedis.consume` (one `EVALSHA` of `SET NX EX` + `INCRBY` + `PTTL`), on',
    '  the ioredis client its docs show (`enableOfflineQueue: false`) and on the same with',
    '  `enableAutoPipelining: true`. **fastlimit is compared with the better of the two** in every ratio.',
    "- `express-rate-limit + rate-limit-redis`: the store's `increment` (one `EVALSHA` of `PTTL` + `INCR`, or",
    '  `SET PX`), which is what the middleware awaits per request, on a plain ioredis client as its README shows.',
    '- the floor: ioredis `defineCommand` (`EVALSHA`) of `INCR` and, on the first hit of a window, `PEXPIRE`,',
    '  without and with auto-pipelining; the least any atomic Redis limiter does.',
    '',
    `Throughput: ${IN_FLIGHT} async loops per case, each awaiting one call after another, for ${sliceMs} ms slices`,
    `(bounded by count and time), the cases round-robin with the order rotating each round, ${rounds} rounds. CPU`,
    'µs per decision: of this process (`process.cpuUsage`) and of the redis-server process (`/proc/<pid>/stat`)',
    "over the slice; script µs: Redis's own `INFO commandstats` time per `EVAL`/`EVALSHA` (the Lua alone).",
    'The denied rows use a 1-per-hour rule (and keys touched once before); "unexpected" counts calls whose',
    'outcome was not the expected one (an error, a fail-open, a denial on an allowed path), summed over rounds.',
    '',
  ]
  for (const group of [ALLOWED, DENIED]) {
    const rows = cases.filter((c) => c.group === group)
    const rlf = bestTp(group, 'rate-limiter-flexible')
    const floor = bestTp(group, 'raw EVALSHA INCR')
    body.push(`### ${IN_FLIGHT} in flight, ${group}`, '')
    body.push(
      table(
        [
          'case',
          'decisions/s, median (min–max)',
          'vs rate-limiter-flexible (better client)',
          ...(floor ? ['vs raw EVALSHA (better client)'] : []),
          'client CPU µs/decision',
          'redis-server CPU µs/decision',
          'script µs/call',
          'unexpected',
        ],
        rows.map((c) => [
          c.name,
          fmtStat(tp(c).opsPerSec),
          rlf ? ratio(tp(c).opsPerSec.median, tp(rlf).opsPerSec.median) : '—',
          ...(floor ? [ratio(tp(c).opsPerSec.median, tp(floor).opsPerSec.median)] : []),
          us(tp(c).clientUs.median),
          us(tp(c).serverUs.median),
          us(tp(c).scriptUs.median),
          String(tp(c).unexpected),
        ]),
      ),
      '',
    )
  }
  const floorLat = bestP50('raw EVALSHA INCR')
  const latencyRow = (c: RedisCase) => [fmtStat(lt(c).p50, us), fmtStat(lt(c).p99, us)]
  body.push(
    `### Sequential latency, ${ALLOWED}`,
    '',
    `One awaited call at a time, each timed with \`process.hrtime.bigint()\`; up to ${latencyCalls.toLocaleString()} calls per case and`,
    'round; p50 and p99 per round, then the median (min–max) over the rounds. "raw p50 / p50" divides the',
    "floor's p50 (its faster client) by the row's: 1.00 is as fast as the floor, ≥ 0.91 is within 10% of it.",
    '',
    table(
      ['case', 'p50 µs, median (min–max)', 'p99 µs, median (min–max)', 'raw p50 / p50', 'unexpected'],
      cases
        .filter((c) => c.latency && c.group === ALLOWED)
        .map((c) => [
          c.name,
          ...latencyRow(c),
          floorLat ? ratio(lt(floorLat).p50.median, lt(c).p50.median) : '—',
          String(lt(c).unexpected),
        ]),
    ),
    '',
  )
  const ioredisRow = ours('gcra')
  const clientRows = cases.filter((c) => c.group === CLIENTS)
  if (ioredisRow && clientRows.length > 0) {
    body.push(
      '### The same decision on other clients (gcra, allowed)',
      '',
      '`fastlimit gcra` above runs on the ioredis client `RedisBackend.fromUrl` creates; these rows pass a client',
      "of another library as `client`, with that library's defaults (node-redis `createClient({ url })`, iovalkey",
      "`new Valkey(url)`, GLIDE `GlideClient.createClient` with `requestTimeout: 1000`, FastLimit's `timeoutMs`), in the",
      'same rounds. Ratios divide by the ioredis row.',
      '',
      table(
        [
          'case',
          `decisions/s at ${IN_FLIGHT} in flight`,
          'vs ioredis',
          'client CPU µs/decision',
          'sequential p50 µs',
          'p50 ioredis / p50',
          'sequential p99 µs',
          'unexpected',
        ],
        [ioredisRow, ...clientRows].map((c) => [
          c === ioredisRow ? 'fastlimit gcra, ioredis client (from the URL)' : c.name,
          fmtStat(tp(c).opsPerSec),
          ratio(tp(c).opsPerSec.median, tp(ioredisRow).opsPerSec.median),
          us(tp(c).clientUs.median),
          fmtStat(lt(c).p50, us),
          ratio(lt(ioredisRow).p50.median, lt(c).p50.median),
          fmtStat(lt(c).p99, us),
          String(tp(c).unexpected + lt(c).unexpected),
        ]),
      ),
      '',
    )
  }
  const peeled = [
    ours('gcra'),
    ...cases.filter((c) => c.group === PEELED),
    ...cases.filter((c) => c.group === ALLOWED && c.kind === 'floor'),
  ].filter((c): c is RedisCase => c !== undefined)
  body.push(
    '### Where the time goes (gcra, allowed)',
    '',
    "The same decision with fastlimit's layers peeled off one by one, measured in the same rounds as the rest:",
    '`RedisBackend.checkAndIncrement` called directly (no `FastLimit`: no rule lookup, identity escaping,',
    '`timeoutMs` timer or `Decision`); then the gcra script itself sent by a plain ioredis client',
    "(`defineCommand`, RedisBackend's arguments) with and without auto-pipelining (no RedisBackend); then the",
    'INCR+PEXPIRE floor (a lighter script).',
    '',
    table(
      [
        'case',
        `decisions/s at ${IN_FLIGHT} in flight`,
        'client CPU µs/decision',
        'redis-server CPU µs/decision',
        'script µs/call',
        'sequential p50 µs',
        'sequential p99 µs',
        'unexpected',
      ],
      peeled.map((c) => [
        c.name,
        fmtStat(tp(c).opsPerSec),
        us(tp(c).clientUs.median),
        us(tp(c).serverUs.median),
        us(tp(c).scriptUs.median),
        ...latencyRow(c),
        String(tp(c).unexpected + lt(c).unexpected),
      ]),
    ),
  )

  const layer = (name: string) => peeled.find((c) => c.name === name)
  const steps = [
    ours('gcra'),
    layer('RedisBackend.checkAndIncrement (no FastLimit)'),
    layer('gcra script via raw EVALSHA, auto-pipelined client'),
    layer('gcra script via raw EVALSHA, default client'),
    cases.find((c) => c.group === ALLOWED && c.name === 'raw EVALSHA INCR+PEXPIRE, default client'),
  ]
  if (steps.every((c) => c !== undefined)) {
    const [fl, backend, ap, plain, floor] = steps as [RedisCase, RedisCase, RedisCase, RedisCase, RedisCase]
    const d = (a: RedisCase, b: RedisCase) => {
      const x = lt(a).p50.median - lt(b).p50.median
      return `${x >= 0 ? '+' : '−'}${us(Math.abs(x))} µs`
    }
    body.push(
      '',
      `Sequential p50, layer by layer (differences of the medians above): \`FastLimit\` ${d(fl, backend)}, RedisBackend's`,
      `JavaScript ${d(backend, plain)}, the gcra script instead of INCR+PEXPIRE ${d(plain, floor)} (server time`,
      `${us(tp(plain).scriptUs.median)} vs ${us(tp(floor).scriptUs.median)} µs per call); auto-pipelining (off in RedisBackend's client) would add ${d(ap, plain)}.`,
    )
    const best = bestTp(ALLOWED, 'rate-limiter-flexible')
    const script = tp(fl).scriptUs.median
    if (best && Number.isFinite(script)) {
      body.push(
        '',
        `Redis runs scripts one at a time, so at ${us(script)} µs of Lua per decision (\`fastlimit gcra\`, above) one redis-server`,
        `can make at most ${fmtOps(1e6 / script)} of them per second even with a core to itself and a free client; 1.5x the better`,
        `rate-limiter-flexible row would be ${fmtOps(1.5 * tp(best).opsPerSec.median)}/s.`,
      )
    }
  }

  const headlines: Headline[] = []
  const rlf = bestTp(ALLOWED, 'rate-limiter-flexible')
  for (const algorithm of ['gcra', 'fixed-window']) {
    const o = ours(algorithm)
    if (!o || !rlf) continue
    headlines.push({
      label: `redis ${algorithm} vs RLF, ${IN_FLIGHT} in flight`,
      ratio: tp(o).opsPerSec.median / tp(rlf).opsPerSec.median,
      target: 1.5,
      detail: `${fmtOps(tp(o).opsPerSec.median)} vs ${fmtOps(tp(rlf).opsPerSec.median)} decisions/s (RLF ${rlf.name.split(', ')[1]})`,
    })
  }
  const floorAp = cases.find(
    (c) => c.group === ALLOWED && c.kind === 'floor' && c.name.endsWith('auto-pipelined client'),
  )
  for (const algorithm of ['gcra', 'fixed-window']) {
    const o = ours(algorithm)
    if (!o || !floorLat) continue
    headlines.push({
      label: `redis ${algorithm} p50: raw EVALSHA / ours`,
      ratio: lt(floorLat).p50.median / lt(o).p50.median,
      target: 0.91,
      detail:
        `${us(lt(o).p50.median)} vs ${us(lt(floorLat).p50.median)} µs sequential p50 (raw ${floorLat.name.split(', ')[1]}); ≥ 0.91 = within 10%` +
        (floorAp && floorAp !== floorLat
          ? `; ${ratio(lt(floorAp).p50.median, lt(o).p50.median)} vs the auto-pipelined raw`
          : ''),
    })
  }
  const reserve = cases.find((c) => c.group === ALLOWED && c.name === RESERVE)
  const check = ours('gcra')
  if (reserve && check) {
    body.push(
      '',
      `A reservation (\`${RESERVE}\`) against a plain check (\`fastlimit gcra\`): ${ratio(tp(reserve).opsPerSec.median, tp(check).opsPerSec.median)} the`,
      `throughput at ${IN_FLIGHT} in flight, ${us(tp(reserve).serverUs.median)} vs ${us(tp(check).serverUs.median)} redis-server CPU µs and ${us(tp(reserve).clientUs.median)} vs`,
      `${us(tp(check).clientUs.median)} client CPU µs per decision, sequential p50 ${us(lt(reserve).p50.median)} vs ${us(lt(check).p50.median)} µs (two round trips instead of one).`,
    )
    headlines.push({
      label: `redis gcra reserve + settle vs check, ${IN_FLIGHT} in flight`,
      ratio: tp(reserve).opsPerSec.median / tp(check).opsPerSec.median,
      detail: `${fmtOps(tp(reserve).opsPerSec.median)} vs ${fmtOps(tp(check).opsPerSec.median)} decisions/s; sequential p50 ${us(lt(reserve).p50.median)} vs ${us(lt(check).p50.median)} µs`,
    })
  }
  const deniedOurs = ours('gcra', DENIED)
  const deniedRlf = bestTp(DENIED, 'rate-limiter-flexible')
  if (deniedOurs && deniedRlf) {
    headlines.push({
      label: `redis gcra denied vs RLF denied, ${IN_FLIGHT} in flight`,
      ratio: tp(deniedOurs).opsPerSec.median / tp(deniedRlf).opsPerSec.median,
      detail: `${fmtOps(tp(deniedOurs).opsPerSec.median)} vs ${fmtOps(tp(deniedRlf).opsPerSec.median)} decisions/s`,
    })
  }
  const onNodeRedis = cases.find((c) => c.name === `${CLIENT_ROW}node-redis 6 client`)
  if (ioredisRow && onNodeRedis) {
    headlines.push({
      label: `redis gcra on node-redis vs on ioredis, ${IN_FLIGHT} in flight`,
      ratio: tp(onNodeRedis).opsPerSec.median / tp(ioredisRow).opsPerSec.median,
      detail: `${fmtOps(tp(onNodeRedis).opsPerSec.median)} vs ${fmtOps(tp(ioredisRow).opsPerSec.median)} decisions/s; sequential p50 ${us(lt(onNodeRedis).p50.median)} vs ${us(lt(ioredisRow).p50.median)} µs`,
    })
  }
  return { title: 'Redis', body: body.join('\n'), headlines }
}
