// Heap bytes per key at N distinct keys, in a child process started with --expose-gc:
//   node --expose-gc --import tsx src/heap.ts <fastlimit-gcra|fastlimit-fixed-window|rate-limiter-flexible> <n> [ip|user] [rules]
// Identities are IPv4 addresses (`10.1.2.3`) or `user-N`; fastlimit checks 1 rule (100/h) or 2 (and 1000/day).
import { FastLimit, MemoryBackend } from '@fastlimit/core'
import { RateLimiterMemory } from 'rate-limiter-flexible'

const [impl = 'fastlimit-gcra', nText = '1000000', shape = 'ip', rulesText = '1'] = process.argv.slice(2)
const n = Number(nText)
const ruleCount = Number(rulesText)
const gc = (globalThis as { gc?: () => void }).gc
if (!gc) throw new Error('run with --expose-gc')

/** JS heap plus ArrayBuffer backing stores (typed arrays live outside the JS heap). */
function settle(): number {
  for (let i = 0; i < 4; i++) gc?.()
  const m = process.memoryUsage()
  return m.heapUsed + m.arrayBuffers
}

let check: (key: string) => Promise<unknown>
let keep: unknown
if (impl.startsWith('fastlimit-')) {
  const algorithm = impl.slice('fastlimit-'.length) as 'gcra'
  const limiter = new FastLimit({
    algorithm,
    backend: new MemoryBackend({ maxKeys: n, cleanupIntervalMs: 0 }),
  })
  const rules = limiter.rules(
    ruleCount === 1
      ? { limit: 100, window: '1h' }
      : [
          { limit: 100, window: '1h' },
          { limit: 1000, window: '1d' },
        ],
  )
  check = (key) => limiter.check(key, rules)
  keep = limiter
} else if (impl === 'rate-limiter-flexible') {
  const rlf = new RateLimiterMemory({ points: 100, duration: 3600 })
  check = (key) => rlf.consume(key)
  keep = rlf
} else throw new Error(`unknown implementation ${impl}`)

// The identities exist before measuring, as they would arrive from requests: only the limiter's cost is counted.
const ids = Array.from({ length: n }, (_, i) =>
  shape === 'user' ? `user-${i}` : `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
)
const before = settle()
for (let i = 0; i < n; i++) await check(ids[i] as string)
const after = settle()
console.log(
  JSON.stringify({
    impl,
    shape,
    rules: ruleCount,
    keys: n,
    bytesPerKey: (after - before) / n,
    heapMB: after / 1e6,
  }),
)
void keep
