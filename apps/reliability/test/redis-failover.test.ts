// Failovers under load, and how long until decisions are back on the store: a standalone master demoted
// behind a virtual IP (REPLICAOF; the VIP moves to the promoted replica), SENTINEL FAILOVER, CLUSTER
// FAILOVER. Then what a failover to a replica that lagged costs in admissions over the limit, without
// and with waitReplicas (WAIT), and what WAIT costs per call. Then 20 fresh Cluster backends on a busy
// machine: each first call is decided by the Cluster.
import { type ChildProcess, spawn } from 'node:child_process'
import { FastLimit } from '@fastlimit/core'
import { RedisBackend, type RedisBackendOptions } from '@fastlimit/redis'
import { Cluster } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { startProxy, type TcpProxy } from '../../../packages/redis/test/proxy'
import {
  type ClusterSetup,
  command,
  infoField,
  killProcess,
  type SentinelSetup,
  startCluster,
  startSentinel,
  startStandalone,
  stopAll,
} from '../../../packages/redis/test/servers'
import { identitiesIn, parseClusterSlots } from './cluster-slots'
import { formatTally, heapAfterGcMb, percentile, Recorder, round, sleep, waitUntil } from './helpers'
import { latencies, type PhaseStats, startRate } from './rate-driver'

const recorder = new Recorder('redis-failover', 'fault')
const LIMIT = 5
const RULE = `${LIMIT}/h`
const TIMEOUT_MS = 200
const MARGIN_MS = 800

afterAll(async () => {
  await stopAll()
  recorder.save()
})

interface Failover {
  readonly fault: string
  readonly limiter: FastLimit
  /** Does the failover; resolves once it is done on the servers' side. */
  readonly injure: () => Promise<void>
  /** How long to keep the load on after the failover. */
  readonly afterMs: number
  /** Fresh identities that must admit exactly the limit afterwards (one per slot range on a Cluster). */
  readonly probes?: string[]
}

/**
 * Runs a load of 300 checks/s (fail-open) through a failover; recovery is the time from the failover's
 * start to the last decision the policy made.
 */
async function runFailover(o: Failover): Promise<void> {
  let phase = 'before'
  expect((await o.limiter.check(`${o.fault}-warm`, RULE)).source).toBe('backend')
  const heapBefore = heapAfterGcMb()
  const load = startRate({
    ratePerSec: 300,
    phase: () => phase,
    identity: (i, p) => `${o.fault}-${p}-${Math.floor(i / (2 * LIMIT))}`,
    call: (identity) => o.limiter.check(identity, RULE),
  })
  await sleep(1500)
  phase = 'failover'
  const started = performance.now()
  await o.injure()
  const injuredMs = performance.now() - started
  await sleep(o.afterMs)
  phase = 'after'
  await sleep(1000)
  const hung = await load.stop()
  const during = load.stats.get('failover') as PhaseStats
  const after = load.stats.get('after') as PhaseStats
  const recoveryMs = during.lastPolicyAt === undefined ? 0 : during.lastPolicyAt - started
  const probes = o.probes ?? [`${o.fault}-exact`]
  let admitted = 0
  const sources = new Set<string>()
  for (const id of probes) {
    const ds = await Promise.all(Array.from({ length: 2 * LIMIT }, () => o.limiter.check(id, RULE)))
    admitted += ds.filter((d) => d.allowed).length
    for (const d of ds) sources.add(d.source)
  }
  const heapAfter = heapAfterGcMb()
  recorder.add({
    fault: o.fault,
    policy: 'fail-open',
    requests: [...load.stats.values()].reduce((n, p) => n + p.calls, 0),
    ratePerSec: 300,
    outcomesDuringFault: formatTally(during.outcomes),
    backendErrors: formatTally(during.errors),
    maxLatencyDuringFaultMs: latencies(during).max,
    p99LatencyDuringFaultMs: latencies(during).p99,
    boundMs: TIMEOUT_MS + MARGIN_MS,
    hung,
    unhandledRejections: 0,
    heapBeforeMb: round(heapBefore),
    heapAfterMb: round(heapAfter),
    recoveryMs: round(recoveryMs),
    failoverMs: round(injuredMs),
    overLimit: 0,
    exactAfter: `${admitted}/${probes.length * LIMIT} on ${probes.length} fresh id${probes.length > 1 ? 's' : ''}`,
  })
  expect(hung).toBe(0)
  // Back on the store for good: the last phase is decided by it only.
  expect(Object.keys(after.outcomes).filter((k) => k !== 'ok' && k !== 'rate-limited')).toEqual([])
  expect(latencies(during).max).toBeLessThan(TIMEOUT_MS + MARGIN_MS)
  expect({ admitted, sources: [...sources] }).toEqual({
    admitted: probes.length * LIMIT,
    sources: ['backend'],
  })
}

describe('failover under load: decisions back on the store', () => {
  it('standalone behind a VIP: the master demoted with REPLICAOF, the VIP moved to the promoted replica', async () => {
    const a = await startStandalone()
    const b = await startStandalone({ config: [`replicaof 127.0.0.1 ${a.port}`] })
    await waitUntil(
      'the replica to sync',
      async () => infoField(await command(b.port, 'INFO', 'replication'), 'master_link_status') === 'up',
      10_000,
    )
    const vip = await startProxy(a.port)
    const backend = RedisBackend.fromUrl(`redis://127.0.0.1:${vip.port}`)
    const limiter = new FastLimit({ backend, prefix: 'vip', timeoutMs: TIMEOUT_MS })
    try {
      await runFailover({
        fault: 'standalone behind a VIP: REPLICAOF',
        limiter,
        injure: async () => {
          await command(b.port, 'REPLICAOF', 'NO', 'ONE')
          await command(a.port, 'REPLICAOF', '127.0.0.1', String(b.port))
          vip.moveTo(b.port)
        },
        afterMs: 4000,
      })
    } finally {
      await limiter.close()
      await backend.close()
      await vip.close()
    }
  })

  it('Sentinel: SENTINEL FAILOVER (the master demoted, its replica promoted)', async () => {
    const s = await startSentinel({ replicas: 1, sentinels: 3, downAfterMs: 1000 })
    const backend = RedisBackend.fromUrl(s.url)
    const limiter = new FastLimit({ backend, prefix: 'sentinel', timeoutMs: TIMEOUT_MS })
    const replica = s.replicas[0]
    if (replica === undefined) throw new Error('no replica')
    try {
      await runFailover({
        fault: 'sentinel: SENTINEL FAILOVER',
        limiter,
        injure: async () => {
          expect(await command(s.sentinels[0]?.port as number, 'SENTINEL', 'FAILOVER', s.masterName)).toBe(
            'OK',
          )
          await waitUntil(
            'the replica to be promoted',
            async () => infoField(await command(replica.port, 'INFO', 'replication'), 'role') === 'master',
            20_000,
            20,
          )
        },
        afterMs: 5000,
      })
      // The decisions after the failover were written on the promoted replica.
      expect(
        await command(replica.port, 'EXISTS', 'fastlimit::sentinel:{sentinel: SENTINEL FAILOVER-exact}'),
      ).toBe(1)
    } finally {
      await limiter.close()
      await backend.close()
      await s.stop()
    }
  })

  it('Cluster: CLUSTER FAILOVER on a replica (its master demoted)', async () => {
    const c = await startCluster({ masters: 3, replicasPerMaster: 1, nodeTimeoutMs: 2000 })
    const backend = RedisBackend.fromUrl(c.url)
    const limiter = new FastLimit({ backend, prefix: 'cluster', timeoutMs: TIMEOUT_MS })
    const replica = c.replicas[0]
    if (replica === undefined) throw new Error('no replica')
    try {
      const slots = parseClusterSlots(await command(c.masters[0]?.port as number, 'CLUSTER', 'SLOTS'))
      const groups = c.masters.map((m) => slots.filter((r) => r.port === m.port))
      await runFailover({
        fault: 'cluster 3+3: CLUSTER FAILOVER',
        limiter,
        injure: async () => {
          expect(await command(replica.port, 'CLUSTER', 'FAILOVER')).toBe('OK')
          await waitUntil(
            'the replica to be promoted',
            async () => infoField(await command(replica.port, 'INFO', 'replication'), 'role') === 'master',
            20_000,
            20,
          )
        },
        afterMs: 4000,
        probes: groups.flatMap((g, i) => identitiesIn(g, 1, `cluster-failover-exact-${i}`)),
      })
    } finally {
      await limiter.close()
      await backend.close()
      await c.stop()
    }
  })
})

describe('Sentinel failover to a replica that lagged: admissions over the limit', () => {
  /**
   * One identity at 50/min, checked as fast as 4 loops go (fail-closed). Both replicas replicate through a
   * proxy whose link stops delivering (frozen: no error on either side), so no admission from then on
   * reaches them; the burst is admitted by the master (at least 3 s, and without WAIT until all 50 are in);
   * the master is SIGKILLed; a stale replica is promoted, and the sentinels make the other one its replica.
   * The loops go on until the promoted master has denied a call (its own burst used up), and for
   * 14 s in all at least: each step waits for what it needs rather than for a time, so a slow election or
   * reconnection on a loaded machine lengthens the run instead of ending it before the new master decided
   * anything. The bound over the whole run is 50 + 50 per minute elapsed; without WAIT the run is capped at
   * 50 s, where the bound (91) is still below the two bursts (100) it admits.
   */
  async function lagging(options: Omit<RedisBackendOptions, 'url' | 'client'>, label: string): Promise<void> {
    let link: TcpProxy | undefined
    const s: SentinelSetup = await startSentinel({
      replicas: 2,
      sentinels: 3,
      downAfterMs: 1000,
      replicateFrom: async (port) => {
        link = await startProxy(port)
        return link.port
      },
    })
    const backend = RedisBackend.fromUrl(s.url, options)
    const limiter = new FastLimit({ backend, prefix: 'lag', timeoutMs: 500, onBackendError: 'fail-closed' })
    if (link === undefined) throw new Error('no replication link')
    let stop = false
    let loops: Array<Promise<void>> = []
    try {
      await limiter.check('warm', '50/min')
      let admitted = 0
      let calls = 0
      const outcomes: Record<string, number> = {}
      let killed = 0
      let atKill = 0
      let resumedAt: number | undefined
      // The promoted master denied a call: its burst is used up (admitted, or, under WAIT, charged by calls
      // whose WAIT fell short). A call made after the kill cannot have reached the old master.
      let promotedDenied = false
      const loop = async () => {
        while (!stop) {
          const after = killed > 0
          const d = await limiter.check('victim', '50/min')
          calls++
          const k = d.source === 'backend' ? d.reason : (d.error?.code ?? d.reason)
          outcomes[k] = (outcomes[k] ?? 0) + 1
          if (d.source === 'backend' && d.allowed) {
            admitted++
            if (killed > 0) resumedAt ??= performance.now()
          } else if (d.source === 'backend' && after) {
            promotedDenied = true
          }
          await sleep(2)
        }
      }
      link.freeze()
      const t0 = performance.now()
      // Every wait ends by then: without WAIT at 50 s, where the bound (91) is still below the two bursts
      // (100); with WAIT later, as the promoted master may be charged only by the breaker's probes (one a
      // second) while its replica misses WAIT's 50 ms on a loaded machine, and time only raises the bound.
      const endsBy = t0 + (options.waitReplicas ? 120_000 : 50_000)
      const left = () => Math.max(0, endsBy - performance.now())
      const until = (what: string, check: () => Promise<boolean> | boolean, everyMs: number) =>
        waitUntil(what, check, left(), everyMs).catch(async (err: Error) => {
          const replicas = await Promise.all(
            s.replicas.map(async (r) => {
              const info = await command(r.port, 'INFO', 'replication').catch(() => '')
              return `${r.port} ${infoField(info, 'role')} link ${infoField(info, 'master_link_status')} replicas ${infoField(info, 'connected_slaves')}`
            }),
          )
          throw new Error(
            `${err.message}: ${admitted} admitted (${atKill} before the kill), ${formatTally(outcomes)}; ${replicas.join('; ')}`,
          )
        })
      loops = [loop(), loop(), loop(), loop()]
      await sleep(3000)
      // Without WAIT the master admits its whole burst, none of which reaches the replicas.
      if (!options.waitReplicas) await until('the master to admit the burst', () => admitted >= 50, 20)
      atKill = admitted
      killProcess(s.master)
      await link.close()
      killed = performance.now()
      const roles = async () =>
        Promise.all(
          s.replicas.map(async (r) => infoField(await command(r.port, 'INFO', 'replication'), 'role')),
        )
      await until('a replica to be promoted', async () => (await roles()).includes('master'), 50)
      const promotedMs = performance.now() - killed
      await until('the promoted master to use up its burst', () => promotedDenied, 20)
      await sleep(Math.max(0, 14_000 - (performance.now() - t0)))
      stop = true
      await Promise.all(loops)
      const elapsedMs = performance.now() - t0
      const bound = 50 + Math.floor((elapsedMs / 60_000) * 50)
      recorder.add({
        fault: `sentinel failover to a replica that lagged, ${label}`,
        policy: 'fail-closed',
        requests: calls,
        outcomesDuringFault: formatTally(outcomes),
        seconds: round(elapsedMs / 1000),
        failoverMs: round(promotedMs),
        recoveryMs: resumedAt === undefined ? null : round(resumedAt - killed),
        overLimit: Math.max(0, admitted - bound),
        exactAfter: `${admitted} admitted by Redis (bound ${bound}; ${atKill} before the master died)`,
      })
      recorder.details[`lagging ${label}`] = {
        admitted,
        bound,
        atKill,
        seconds: round(elapsedMs / 1000),
        promotedMs: round(promotedMs),
        outcomes,
      }
      if (options.waitReplicas) {
        // No replica acknowledged anything over a link that delivered nothing: nothing was admitted to lose.
        expect(atKill, 'admitted before the master died').toBe(0)
        expect(admitted, 'admissions over the bound').toBeLessThanOrEqual(bound)
      } else {
        expect(atKill, 'admitted before the master died').toBeGreaterThanOrEqual(50)
        expect(admitted, 'without WAIT the lost writes are admitted again').toBeGreaterThan(bound)
      }
    } finally {
      stop = true
      await Promise.allSettled(loops)
      await limiter.close()
      await backend.close()
      await s.stop()
    }
  }

  it('without waitReplicas the admissions the replica never got are admitted again', async () => {
    await lagging({}, 'without waitReplicas')
  })

  it('with waitReplicas { replicas: 1, timeoutMs: 50 } no admission is lost', async () => {
    await lagging({ waitReplicas: { replicas: 1, timeoutMs: 50 } }, 'waitReplicas 1/50 ms')
  })

  it('what WAIT costs on a healthy pair: latency per call, sequential and 50 in flight', async () => {
    const s = await startSentinel({ replicas: 1, sentinels: 3 })
    const variants = [
      ['without', {}],
      ['waitReplicas 1/50 ms', { waitReplicas: { replicas: 1, timeoutMs: 50 } }],
    ] as const
    // A loaded machine may miss the 50 ms now and then: such an admission fails (the policy applies), and
    // is counted rather than failing the measurement.
    const errors: Record<string, number> = {}
    const made = variants.map(([label, options]) => {
      const backend = RedisBackend.fromUrl(s.url, options)
      const limiter = new FastLimit({
        backend,
        prefix: 'cost',
        onError: (err) => {
          errors[`${label}: ${err.code}`] = (errors[`${label}: ${err.code}`] ?? 0) + 1
        },
      })
      return { label, backend, limiter }
    })
    const add = (m: Record<string, number[]>, k: string, v: number) => {
      m[k] = [...(m[k] ?? []), v]
    }
    const p50: Record<string, number[]> = {}
    const p99: Record<string, number[]> = {}
    const rate: Record<string, number[]> = {}
    try {
      for (const { limiter } of made)
        for (let i = 0; i < 200; i++) await limiter.check(`warm-${i}`, '1000000/min')
      // Rounds alternate the variants (and their order), so that the machine's load hits both alike.
      for (let round = 0; round < 4; round++) {
        for (const { label, limiter } of round % 2 === 0 ? made : [...made].reverse()) {
          const seq: number[] = []
          for (let i = 0; i < 1000; i++) {
            const t = performance.now()
            await limiter.check(`seq-${i % 100}`, '1000000/min')
            seq.push((performance.now() - t) * 1000)
          }
          const t = performance.now()
          let n = 0
          await Promise.all(
            Array.from({ length: 50 }, async (_, w) => {
              for (let i = 0; i < 40; i++) {
                await limiter.check(`par-${w}-${i}`, '1000000/min')
                n++
              }
            }),
          )
          add(p50, label, percentile(seq, 50))
          add(p99, label, percentile(seq, 99))
          add(rate, label, (n * 1000) / (performance.now() - t))
        }
      }
    } finally {
      for (const { limiter, backend } of made) {
        await limiter.close()
        await backend.close()
      }
      await s.stop()
    }
    const rows: Record<string, unknown> = {}
    for (const [label] of variants) {
      rows[label] = {
        sequentialP50Us: round(percentile(p50[label] ?? [], 50)),
        sequentialP99Us: round(percentile(p99[label] ?? [], 50)),
        decisionsPerSec50InFlight: Math.round(percentile(rate[label] ?? [], 50)),
      }
    }
    rows.errors = errors
    recorder.details['WAIT cost on loopback (1 master, 1 replica; medians of 4 alternating rounds)'] = rows
  })
})

describe('a fresh Cluster backend on a busy machine', () => {
  it('decides its first call on the Cluster, 20 times with a URL and 20 times with a client passed in', async () => {
    const c: ClusterSetup = await startCluster({ masters: 3 })
    // Two busy processes: the machine is loaded, as one often is when an app starts.
    const hogs: ChildProcess[] = [0, 1].map(() =>
      spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }),
    )
    const firsts: number[] = []
    const failures: string[] = []
    let reconnects = 0
    try {
      for (const mode of ['url', 'client'] as const) {
        for (let i = 0; i < 20; i++) {
          const client =
            mode === 'client'
              ? new Cluster([...c.nodes], {
                  enableOfflineQueue: false,
                  retryDelayOnFailover: 0,
                  redisOptions: { maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false },
                })
              : undefined
          const backend = client === undefined ? RedisBackend.fromUrl(c.url) : new RedisBackend({ client })
          ;(backend.client as Cluster).on('reconnecting', () => {
            reconnects++
          })
          const limiter = new FastLimit({ backend, prefix: `fresh-${mode}`, timeoutMs: 1000 })
          try {
            const t = performance.now()
            const d = await limiter.check(`first-${i}`, RULE)
            firsts.push(performance.now() - t)
            if (d.source !== 'backend') failures.push(`${mode} ${i}: ${d.error?.message}`)
          } finally {
            await limiter.close()
            await backend.close()
            client?.disconnect()
          }
        }
      }
    } finally {
      for (const h of hogs) if (h.pid !== undefined) process.kill(h.pid, 'SIGKILL')
      await c.stop()
    }
    recorder.add({
      fault:
        'cluster: first call on 40 fresh backends (20 from a URL, 20 with a client passed in), 2 busy CPUs',
      policy: 'fail-open',
      requests: firsts.length,
      outcomesDuringFault: formatTally({ backend: firsts.length - failures.length, policy: failures.length }),
      maxLatencyDuringFaultMs: round(Math.max(...firsts)),
      p99LatencyDuringFaultMs: round(percentile(firsts, 99)),
      boundMs: 1000,
      hung: 0,
      overLimit: 0,
      exactAfter: `first call p50 ${round(percentile(firsts, 50))} ms, max ${round(Math.max(...firsts))} ms; Cluster reconnects ${reconnects}`,
    })
    expect(failures).toEqual([])
    expect(reconnects, 'Cluster reconnects while starting (ready check on a node still connecting)').toBe(0)
  })
})
