// Measures decisions per second of N processes deciding on a few shared keys of one file (not a test):
//   npx tsx test/contention.ts [processes=4] [ms=3000] [keys=4]
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { SQLiteBackend } from '../src/index'
import { killWorkers, startWorker } from './helpers'

const [processes = 4, ms = 3000, keys = 4] = process.argv.slice(2).map(Number)
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-sqlite-contention-'))
try {
  const file = path.join(dir, 'contention.db')
  await new SQLiteBackend(file, { cleanupIntervalMs: 0 }).close()
  const workers = Array.from({ length: processes }, () =>
    startWorker('contend', { file, ms, keys, timeoutMs: 1000 }),
  )
  await Promise.all(workers.map((w) => w.next('ready')))
  for (const w of workers) w.child.send('go')
  const results = await Promise.all(
    workers.map((w) =>
      w.next<{
        decisions: number
        deferred: number
        failures: number
        worstSyncMs: number
        worstDecisionMs: number
      }>('result'),
    ),
  )
  await Promise.all(workers.map((w) => w.exited))
  const total = results.reduce((sum, r) => sum + r.decisions, 0)
  const r1 = (x: number) => Math.round(x * 10) / 10
  console.log(
    JSON.stringify({
      processes,
      ms,
      keys,
      decisionsPerSec: Math.round(total / (ms / 1000)),
      failures: results.reduce((sum, r) => sum + r.failures, 0),
      deferredToAsync: results.reduce((sum, r) => sum + r.deferred, 0),
      worstSyncCallMs: r1(Math.max(...results.map((r) => r.worstSyncMs))),
      worstDecisionMs: r1(Math.max(...results.map((r) => r.worstDecisionMs))),
    }),
  )
} finally {
  killWorkers()
  fs.rmSync(dir, { recursive: true, force: true })
}
