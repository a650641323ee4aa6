// The local tier section: one hot identity on Redis through FastLimit, with and without localTier, when
// the rule admits (leases) and when it is exhausted (the deny cache): decisions per second and store
// calls per decision. Each case runs in a process of its own per round, round-robin.

import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startStandalone } from '../../../packages/redis/test/servers'
import { fmtOps, fmtStat, rotate, runJsonChild, type Stat, stat } from './harness'
import { type Headline, type Section, table } from './report'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..')
const child = path.join(here, 'local-tier-child.ts')

const CASES = [
  { id: 'redis', name: 'RedisBackend' },
  { id: 'tier', name: 'localTier(RedisBackend)' },
] as const
const RULES = [
  { id: 'open', name: 'hot key, 1e9/min (admitted)' },
  { id: 'saturated', name: 'hot key, 1000/min (exhausted)' },
] as const

interface Sample {
  opsPerSec: number
  storeCallsPerDecision: number
  allowedShare: number
}

export async function localTierSection({ quick }: { quick: boolean }): Promise<Section> {
  const rounds = quick ? 3 : 7
  const warm = quick ? '200' : '400'
  const sliceMs = quick ? '400' : '1000'
  console.log(`[bench] local tier: ${rounds} rounds per case, one process per case and round`)
  const server = await startStandalone()
  const samples = new Map<string, Sample[]>()
  try {
    for (let r = 0; r < rounds; r++) {
      for (const rule of RULES) {
        for (const c of rotate(CASES, r)) {
          const s = runJsonChild<Sample>(
            child,
            [c.id, rule.id, server.url, warm, sliceMs],
            { cwd: root, timeout: 120_000 },
            `local tier case ${c.id}/${rule.id} failed`,
          )
          const k = `${rule.id}/${c.id}`
          samples.set(k, [...(samples.get(k) ?? []), s])
        }
      }
      process.stdout.write(`  round ${r + 1}/${rounds}\r`)
    }
    process.stdout.write('\n')
  } finally {
    await server.stop()
  }
  const rows: string[][] = []
  const headlines: Headline[] = []
  for (const rule of RULES) {
    const ops = (id: string): Stat => stat((samples.get(`${rule.id}/${id}`) ?? []).map((s) => s.opsPerSec))
    const calls = (id: string): number =>
      stat((samples.get(`${rule.id}/${id}`) ?? []).map((s) => s.storeCallsPerDecision)).median
    const base = ops('redis').median
    for (const c of CASES) {
      const s = ops(c.id)
      rows.push([rule.name, c.name, fmtStat(s), `${(s.median / base).toFixed(1)}x`, calls(c.id).toFixed(4)])
    }
    headlines.push({
      label: `local tier: ${rule.name}, decisions/s with / without`,
      ratio: ops('tier').median / base,
      detail: `${fmtOps(ops('tier').median)} vs ${fmtOps(base)} decisions/s; ${calls('tier').toFixed(4)} vs ${calls('redis').toFixed(2)} store calls per decision`,
    })
  }
  return {
    title: 'Local tier: a hot key on Redis with and without localTier',
    body: [
      'One identity checked by FastLimit with 64 checks in flight at a time, `gcra`, on a local',
      '`redis-server`, each case a process of its own per round (round-robin). "admitted": a rule never',
      'reached, so the tier admits from leases (batches of up to 100 units, given back when they end);',
      '"exhausted": 1,000/min used up before the slice, so the tier denies from its deny cache until the',
      "store's retry time. Store calls per decision count every call the process makes to Redis",
      '(checks, leases, refunds).',
      '',
      table(
        ['rule', 'backend', 'decisions/s, median (min–max)', 'vs RedisBackend', 'store calls per decision'],
        rows,
      ),
    ].join('\n'),
    headlines,
  }
}
