// Measures how long clear() or sweep() holds the write lock on a big table (not a test): one process
// clears (or sweeps, every row expired) N rows while another decides on the same file as fast as it can;
// prints the clearing process's worst event-loop stall and the other process's worst decision latency.
//   npx tsx test/clear-lock.ts [rows=1000000] [clear|sweep]
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { SQLiteBackend } from '../src/index'
import { killWorkers, startWorker } from './helpers'

const rows = Number(process.argv[2] ?? 1_000_000)
const what = process.argv[3] === 'sweep' ? 'sweep' : 'clear'
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-sqlite-clear-'))
try {
  const file = path.join(dir, 'clear.db')
  const backend = new SQLiteBackend(file, { cleanupIntervalMs: 0, fileCheckIntervalMs: 0 })
  const far = what === 'sweep' ? 0 : Date.now() + 86_400_000
  backend.database.exec(
    `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${rows - 1})
     INSERT INTO fastlimit (key, bucket, state, expires_at)
     SELECT 'fl:{user-' || i || '}', 'gcra:100:60000:100', '1700000000000', ${far} + (i % 1000) * 1000 FROM n`,
  )
  backend.database.pragma('wal_checkpoint(TRUNCATE)')
  const other = startWorker('contend', { file, ms: 600_000, keys: 4, timeoutMs: 10_000 })
  await other.next('ready')
  other.child.send('go')
  await new Promise((resolve) => setTimeout(resolve, 500))
  const delay = monitorEventLoopDelay({ resolution: 1 })
  delay.enable()
  const started = performance.now()
  if (what === 'sweep') await backend.sweep()
  else await backend.clear()
  const ms = performance.now() - started
  delay.disable()
  other.child.send('stop')
  const r = await other.next<{ decisions: number; worstDecisionMs: number; worstSyncMs: number }>('result')
  const left = backend.database.prepare('SELECT count(*) FROM fastlimit').pluck().get()
  await backend.close()
  console.log(
    JSON.stringify({
      rows,
      what,
      ms: Math.round(ms),
      rowsLeft: left,
      clearingLoopWorstStallMs: Math.round(delay.max / 1e6),
      otherWorstDecisionMs: Math.round(r.worstDecisionMs),
      otherWorstSyncCallMs: Math.round(r.worstSyncMs),
      otherDecisions: r.decisions,
    }),
  )
} finally {
  killWorkers()
  fs.rmSync(dir, { recursive: true, force: true })
}
