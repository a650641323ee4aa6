// Redis Cluster (3 masters, 3 replicas) under load: one master is SIGKILLed, its replica is promoted, and
// the same FastLimit instances decide exactly again for identities in every slot range.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  type ClusterSetup,
  command,
  infoField,
  killProcess,
  startCluster,
  stopAll,
} from '../../../packages/redis/test/servers'
import { identitiesIn, inRanges, parseClusterSlots, type SlotRange, slotOf } from './cluster-slots'
import { closeLimiters, makeLimiters, type PolicyLimiter, runFault, waitRefused } from './fault-scenario'
import { Recorder, waitUntil } from './helpers'

const TIMEOUT_MS = 200
const MARGIN_MS = 800
const recorder = new Recorder('redis-cluster', 'fault')

let cluster: ClusterSetup | undefined
let limiters: PolicyLimiter[] = []

beforeAll(async () => {
  cluster = await startCluster({ masters: 3, replicasPerMaster: 1, nodeTimeoutMs: 2000 })
})

afterAll(async () => {
  await closeLimiters(limiters)
  limiters = []
  await stopAll()
  recorder.save()
})

describe('Redis Cluster 3+3', () => {
  it('one master SIGKILLed under load: its slots get the policy, its replica is promoted, exact again in every slot range', async () => {
    const c = cluster as ClusterSetup
    expect(c.masters).toHaveLength(3)
    expect(c.replicas).toHaveLength(3)
    const survivor = c.masters[1]
    const victim = c.masters[0]
    if (victim === undefined || survivor === undefined) throw new Error('no masters')
    const slots = parseClusterSlots(await command(survivor.port, 'CLUSTER', 'SLOTS'))
    const killed = slots.filter((r) => r.port === victim.port)
    expect(killed.length).toBeGreaterThan(0)
    // One group of ranges per original master, so probes cover every slot range, the killed one included.
    const groups: SlotRange[][] = c.masters.map((m) => slots.filter((r) => r.port === m.port))
    const replicaPorts = new Set(c.replicas.map((r) => r.port))
    limiters = makeLimiters(c.url, TIMEOUT_MS)
    let promotedPort = 0
    await runFault({
      fault: 'cluster 3+3: master SIGKILL, replica promoted',
      limiters,
      recorder,
      timeoutMs: TIMEOUT_MS,
      marginMs: MARGIN_MS,
      ratePerSec: 100,
      beforeMs: 2000,
      injure: async () => {
        killProcess(victim)
        await waitRefused(victim.port)
      },
      outageMs: 500,
      outageUntil: async () => {
        await waitUntil(
          "the victim's replica to be promoted and the cluster to be whole",
          async () => {
            const now = parseClusterSlots(await command(survivor.port, 'CLUSTER', 'SLOTS'))
            const owner = now.find((r) => r.from === killed[0]?.from)
            if (owner === undefined || !replicaPorts.has(owner.port)) return false
            promotedPort = owner.port
            for (const m of [survivor, c.masters[2]]) {
              if (m === undefined) continue
              if (infoField(await command(m.port, 'CLUSTER', 'INFO'), 'cluster_state') !== 'ok') return false
            }
            return infoField(await command(owner.port, 'CLUSTER', 'INFO'), 'cluster_state') === 'ok'
          },
          40_000,
          50,
        )
      },
      outageGraceMs: 1000,
      // Calls for the dead master's slots cannot reach Redis; the other masters may still answer.
      mustFail: (call) => inRanges(slotOf(call.identity), killed),
      heal: async () => {
        expect(infoField(await command(promotedPort, 'INFO', 'replication'), 'role')).toBe('master')
      },
      afterMs: 2000,
      // Two fresh identities in each original master's slot ranges (the promoted replica's included).
      probes: (policy, round) =>
        groups.flatMap((g, i) => identitiesIn(g, 2, `cluster-${policy}-${round}-${i}`)),
      recoveryTimeoutMs: 30_000,
    })
    recorder.details.promotedPort = promotedPort
    await closeLimiters(limiters)
    limiters = []
  })
})
