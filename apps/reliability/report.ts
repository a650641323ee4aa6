// Turns the reliability suite's observations (results/*.json, written by the tests) into markdown tables:
//   npx tsx report.ts            (after `npx vitest run`)
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Cell, Results } from './test/helpers'

const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results')
const files = fs.existsSync(dir)
  ? fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .sort()
  : []
if (files.length === 0) {
  console.error(`No results in ${dir}: run the suite first (npx vitest run).`)
  process.exit(1)
}
const all: Results[] = files.map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as Results)

function cell(value: Cell | undefined): string {
  if (value === undefined || value === null) return '—'
  return String(value).replace(/\|/g, '\\|').replace(/\n/g, ' ')
}

function table(headers: string[], rows: Array<Array<Cell | undefined>>): string {
  const lines = [`| ${headers.join(' | ')} |`, `| ${headers.map(() => '---').join(' | ')} |`]
  for (const row of rows) lines.push(`| ${row.map((c) => cell(c)).join(' | ')} |`)
  return lines.join('\n')
}

const rowsOf = (kind: Results['kind']) => all.filter((r) => r.kind === kind).flatMap((r) => r.rows)
const out: string[] = []

const faults = rowsOf('fault')
if (faults.length > 0) {
  out.push('## Faults', '')
  out.push(
    table(
      [
        'fault',
        'policy',
        'requests',
        'outcomes during the fault',
        'backend errors (onError)',
        'max latency ms (bound)',
        'hung',
        'unhandled',
        'heap MB',
        'recovery ms',
        'admitted over limit',
        'charged late',
        'exact after',
      ],
      faults.map((r) => [
        r.fault,
        r.policy,
        r.requests,
        r.outcomesDuringFault,
        r.backendErrors,
        r.maxLatencyDuringFaultMs === null || r.maxLatencyDuringFaultMs === undefined
          ? '—'
          : `${r.maxLatencyDuringFaultMs} (${r.boundMs})`,
        r.hung,
        r.unhandledRejections,
        r.heapBeforeMb === undefined
          ? '—'
          : r.heapDuringFaultMb === undefined
            ? `${r.heapBeforeMb} → ${r.heapAfterMb}`
            : `${r.heapBeforeMb} → ${r.heapDuringFaultMb} (fault) → ${r.heapAfterMb}`,
        r.recoveryMs ?? '—',
        r.overLimit,
        r.lateCharges,
        r.exactAfter,
      ]),
    ),
    '',
  )
}

const load = rowsOf('load')
if (load.length > 0) {
  out.push('## Load', '')
  out.push(
    table(
      [
        'demo',
        's',
        'requests',
        'req/s',
        'clients',
        'statuses',
        'errors',
        'exact',
        'latency p50/p99/max ms',
        'event-loop delay p50/p99/max ms',
        'heap after GC MB',
        'server priority',
      ],
      load.map((r) => [
        r.demo,
        r.seconds,
        r.requests,
        r.ratePerSec,
        r.clients,
        r.statuses,
        r.errors,
        r.exactPerClient,
        `${r.latencyP50Ms} / ${r.latencyP99Ms} / ${r.latencyMaxMs}`,
        `${r.eventLoopDelayP50Ms} / ${r.eventLoopDelayP99Ms} / ${r.eventLoopDelayMaxMs}`,
        r.heapAfterGcMb,
        r.serverPriority,
      ]),
    ),
    '',
  )
}

for (const [kind, title] of [
  ['hostile', 'Hostile input'],
  ['clock', 'Long running and clocks'],
  ['wait', 'Waiting (wait, throttle)'],
] as const) {
  const rows = rowsOf(kind)
  if (rows.length === 0) continue
  const total = rows.reduce((sum, r) => sum + (typeof r.cases === 'number' ? r.cases : 0), 0)
  out.push(`## ${title} (${total.toLocaleString('en-US')} cases)`, '')
  out.push(
    table(
      ['input class', 'cases', 'result'],
      rows.map((r) => [
        r.class,
        typeof r.cases === 'number' ? r.cases.toLocaleString('en-US') : r.cases,
        r.result,
      ]),
    ),
    '',
  )
}

const details = all.filter((r) => r.details && Object.keys(r.details).length > 0)
if (details.length > 0) {
  out.push('## Details', '')
  for (const r of details) {
    for (const [key, value] of Object.entries(r.details ?? {})) {
      const text = JSON.stringify(value)
      out.push(`- ${r.name} / ${key}: \`${text.length > 300 ? `${text.slice(0, 297)}...` : text}\``)
    }
  }
  out.push('')
}

console.log(out.join('\n'))
