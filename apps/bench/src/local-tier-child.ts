// One case of the local tier section, in a process of its own:
//   node --import tsx src/local-tier-child.ts <case> <rule> <redis url> <warmup ms> <slice ms>  -> {"opsPerSec", "storeCallsPerDecision", "allowedShare"}
// Cases: 'redis' (RedisBackend as it is) and 'tier' (localTier(RedisBackend), its defaults), both through
// FastLimit, on ONE hot identity, with 64 checks in flight at a time. Rules: 'open' (1e9/min, never
// reached: leases admit) and 'saturated' (1000/min, long exhausted: the deny cache denies).
import { FastLimit, localTier } from '@fastlimit/core'
import { RedisBackend } from '@fastlimit/redis'

const [name = 'redis', ruleName = 'open', url = '', a = '300', b = '1000'] = process.argv.slice(2)
const redis = new RedisBackend({ url, keyPrefix: `bench-tier-${process.pid}:` })
const tier = name === 'tier' ? localTier(redis) : undefined
const limiter = new FastLimit({ backend: tier ?? redis, algorithm: 'gcra', timeoutMs: 5000 })
const rule = limiter.rules(
  ruleName === 'open' ? { limit: 1_000_000_000, window: '1m' } : { limit: 1000, window: '1m' },
)
const IN_FLIGHT = 64
let scriptCalls = 0
const counting = tier === undefined
if (counting) {
  const check = redis.checkAndIncrement.bind(redis)
  redis.checkAndIncrement = (...args) => {
    scriptCalls++
    return check(...args)
  }
}

async function slice(ms: number): Promise<{ n: number; allowed: number }> {
  let n = 0
  let allowed = 0
  const end = performance.now() + ms
  while (performance.now() < end) {
    const batch = new Array(IN_FLIGHT)
    for (let i = 0; i < IN_FLIGHT; i++) batch[i] = limiter.check('hot', rule)
    for (const d of await Promise.all(batch)) if (d.allowed) allowed++
    n += IN_FLIGHT
  }
  return { n, allowed }
}

if (ruleName === 'saturated') {
  // Exhaust the key first (1,000 admitted), so the slice measures denials.
  for (let i = 0; i < 1100; i++) await limiter.check('hot', rule)
}
await slice(Number(a))
const before = tier?.stats().storeCalls ?? scriptCalls
const start = performance.now()
const { n, allowed } = await slice(Number(b))
const seconds = (performance.now() - start) / 1000
const calls = (tier?.stats().storeCalls ?? scriptCalls) - before
await limiter.close()
if (tier) await tier.close()
else await redis.close()
console.log(
  JSON.stringify({ opsPerSec: n / seconds, storeCallsPerDecision: calls / n, allowedShare: allowed / n }),
)
