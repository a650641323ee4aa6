// Sentinel failover under load: the master is SIGKILLed and stays down, the sentinels promote the replica,
// and the same FastLimit instances decide exactly on the new master.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  command,
  killProcess,
  type SentinelSetup,
  startSentinel,
  stopAll,
} from '../../../packages/redis/test/servers'
import { closeLimiters, makeLimiters, type PolicyLimiter, runFault, waitRefused } from './fault-scenario'
import { Recorder, waitUntil } from './helpers'

const TIMEOUT_MS = 200
const MARGIN_MS = 800
const recorder = new Recorder('redis-sentinel', 'fault')

let setup: SentinelSetup | undefined
let limiters: PolicyLimiter[] = []

beforeAll(async () => {
  setup = await startSentinel({ replicas: 1, sentinels: 3, downAfterMs: 1000 })
})

afterAll(async () => {
  await closeLimiters(limiters)
  limiters = []
  await stopAll()
  recorder.save()
})

async function masterPort(s: SentinelSetup): Promise<number | undefined> {
  for (const sentinel of s.sentinels) {
    try {
      const addr = (await command(sentinel.port, 'SENTINEL', 'get-master-addr-by-name', s.masterName)) as
        | string[]
        | null
      if (addr) return Number(addr[1])
    } catch {
      // Try the next sentinel.
    }
  }
  return undefined
}

describe('Redis Sentinel', () => {
  it('master SIGKILLed under load: policy until the replica is promoted, then exact on the new master', async () => {
    const s = setup as SentinelSetup
    const replica = s.replicas[0]
    if (replica === undefined) throw new Error('no replica')
    expect(await masterPort(s)).toBe(s.master.port)
    limiters = makeLimiters(s.url, TIMEOUT_MS)
    let promotedAfterMs = 0
    await runFault({
      fault: 'sentinel: master SIGKILL, replica promoted',
      limiters,
      recorder,
      timeoutMs: TIMEOUT_MS,
      marginMs: MARGIN_MS,
      ratePerSec: 100,
      beforeMs: 2000,
      injure: async () => {
        killProcess(s.master)
        await waitRefused(s.master.port)
      },
      outageMs: 500,
      outageUntil: async () => {
        promotedAfterMs = await waitUntil(
          'the sentinels to promote the replica',
          async () => (await masterPort(s)) === replica.port,
          30_000,
          50,
        )
      },
      outageGraceMs: 1000,
      heal: async () => {
        // Nothing to do: the failover is the repair. The replica must now be a master.
        const info = String(await command(replica.port, 'INFO', 'replication'))
        expect(info).toMatch(/^role:master/m)
      },
      afterMs: 2000,
    })
    // The decisions after healing were written on the promoted replica.
    for (const l of limiters) {
      const key = `fastlimit::${l.policy}:{sentinel: master SIGKILL, replica promoted-exact-${l.policy}}`
      expect(await command(replica.port, 'EXISTS', key), `${key} on the new master`).toBe(1)
    }
    recorder.details.promotedAfterMs = Math.round(promotedAfterMs)
    await closeLimiters(limiters)
    limiters = []
  })
})
