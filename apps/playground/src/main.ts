// The playground page: reads the controls, computes every algorithm with core's steps, draws the panels.
import { FastlimitError } from '@fastlimit/core'
import { panel } from './chart'
import { type RuleSpec, simulate } from './simulate'
import { arrivals, type Pattern, parseLogTimes, T0 } from './traffic'
import './style.css'

/** Ticks per chart: the duration is cut into about this many columns. */
const TICKS = 120

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T

const SAMPLE_LOG = [
  '203.0.113.7 - - [23/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 512',
  '203.0.113.7 - - [23/Nov/2026:10:00:00 +0000] "GET /a HTTP/1.1" 200 512',
  '203.0.113.7 - - [23/Nov/2026:10:00:01 +0000] "GET /b HTTP/1.1" 200 512',
  '2026-11-23T10:00:01.500Z',
  '{"time": "2026-11-23T10:00:02Z", "ip": "203.0.113.7"}',
  '1795428003',
  '1795428003250',
].join('\n')

let version = 0

function render(): void {
  const pattern = $<HTMLSelectElement>('pattern').value as Pattern
  const rate = Number($<HTMLInputElement>('rate').value)
  const logBox = $<HTMLTextAreaElement>('log')
  $('log-row').hidden = pattern !== 'log'
  $('rate-row').hidden = pattern === 'log'
  let durationS = Number($<HTMLInputElement>('duration').value)
  const burstText = $<HTMLInputElement>('burst').value.trim()
  const spec: RuleSpec = {
    limit: Number($<HTMLInputElement>('limit').value),
    window: $<HTMLSelectElement>('window').value,
    ...(burstText === '' ? {} : { burst: Number(burstText) }),
  }
  const status = $('status')
  const results = $('results')
  try {
    if (pattern === 'log') {
      const times = parseLogTimes(logBox.value)
      const first = times[0]
      const last = times[times.length - 1]
      durationS =
        first === undefined || last === undefined ? 1 : Math.max(1, Math.ceil((last - first + 1) / 1000))
    } else if (!(rate > 0 && rate <= 1000)) {
      throw new Error('The rate must be from 0 to 1000 requests per second.')
    }
    if (!(durationS >= 1 && durationS <= 3600))
      throw new Error('The duration must be from 1 to 3600 seconds.')
    const traffic = arrivals({ pattern, rate, durationS, log: logBox.value })
    // A whole number of milliseconds per tick, so that the ticks cover the duration exactly.
    const tickMs = Math.max(1, Math.ceil((durationS * 1000) / TICKS))
    const ticks = Math.ceil((durationS * 1000) / tickMs)
    const series = simulate(traffic, spec, T0, tickMs, ticks)
    const max = Math.max(1, ...series.flatMap((s) => s.admitted.map((a, i) => a + (s.denied[i] as number))))
    results.replaceChildren(...series.map((s) => panel(s, max, tickMs)))
    const rule = series[0]?.rule
    status.textContent = `${traffic.length} requests over ${durationS} s from one client; rule ${rule?.name ?? ''}${
      spec.burst === undefined ? '' : `, burst ${spec.burst} (token-bucket, leaky-bucket, gcra)`
    }`
    status.className = ''
    results.dataset.requests = String(traffic.length)
    results.dataset.tickMs = String(tickMs)
  } catch (err) {
    status.textContent = err instanceof FastlimitError || err instanceof Error ? err.message : String(err)
    status.className = 'error'
    results.replaceChildren()
  }
  version++
  results.dataset.pattern = pattern
  results.dataset.version = String(version)
}

function init(): void {
  $<HTMLTextAreaElement>('log').value = SAMPLE_LOG
  for (const id of ['pattern', 'rate', 'duration', 'limit', 'window', 'burst', 'log']) {
    $(id).addEventListener('input', render)
    $(id).addEventListener('change', render)
  }
  render()
  document.body.dataset.ready = 'true'
}

init()
