// End to end: instrument() -> MeterProvider -> the Prometheus exporter's own HTTP server on 127.0.0.1,
// scraped by this test over HTTP, with the decisions an HTTP-less limiter made.
import net from 'node:net'
import { FastLimit } from '@fastlimit/core'
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import { afterEach, expect, it } from 'vitest'
import { instrument } from './index'

/** A free port on 127.0.0.1 (the exporter then listens on it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/** `name{labels} value` lines of a Prometheus text page, as [name, labels, value]. */
function samples(page: string): Array<{ name: string; labels: Record<string, string>; value: number }> {
  const out: Array<{ name: string; labels: Record<string, string>; value: number }> = []
  for (const line of page.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/.exec(line)
    if (!m) continue
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1] as string] = l[2] as string
    }
    out.push({ name: m[1] as string, labels, value: Number(m[3]) })
  }
  return out
}

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c()
})

it('exposes decisions, call durations and the breaker on a Prometheus endpoint that a scrape reads', async () => {
  const port = await freePort()
  const exporter = new PrometheusExporter({ host: '127.0.0.1', port, preventServerStart: true })
  await exporter.startServer()
  const meterProvider = new MeterProvider({ readers: [exporter] })
  cleanups.push(() => meterProvider.shutdown())
  const limiter = new FastLimit({ algorithm: 'sliding-window' })
  instrument(limiter, { meterProvider, syncCalls: true, attributes: { 'fastlimit.limiter': 'api' } })
  const rule = { limit: 4, window: '1m', name: 'api' }
  for (let i = 0; i < 10; i++) await limiter.check('203.0.113.7', rule)
  for (let i = 0; i < 3; i++) await limiter.check('203.0.113.8', rule, { mode: 'shadow' })

  const res = await fetch(`http://127.0.0.1:${port}/metrics`)
  expect(res.status).toBe(200)
  const page = await res.text()
  const all = samples(page)
  const decisions = all.filter((s) => s.name === 'fastlimit_decisions_total')
  const get = (outcome: string) =>
    decisions.filter((s) => s.labels.fastlimit_outcome === outcome).reduce((sum, s) => sum + s.value, 0)
  expect(get('allowed')).toBe(7)
  expect(get('denied')).toBe(6)
  expect(get('would-deny')).toBe(0)
  for (const s of decisions) {
    expect(s.labels).toMatchObject({
      fastlimit_rule: 'api',
      fastlimit_backend: 'memory',
      fastlimit_source: 'backend',
      fastlimit_operation: 'check',
      fastlimit_limiter: 'api',
    })
  }
  expect(page).not.toContain('203.0.113')
  expect(page).toContain('# TYPE fastlimit_decisions_total counter')
  // Exporters of the 0.2xx line name it without the unit; newer ones append `_seconds`.
  expect(page).toMatch(/# TYPE fastlimit_backend_call_duration(_seconds)? histogram/)
  const count = all.find(
    (s) =>
      /^fastlimit_backend_call_duration(_seconds)?_count$/.test(s.name) &&
      s.labels.fastlimit_sync === 'true' &&
      s.labels.fastlimit_call_outcome === 'ok',
  )
  expect(count?.value).toBe(13)
  const closed = all.find(
    (s) => s.name === 'fastlimit_breaker_state' && s.labels.fastlimit_breaker_state === 'closed',
  )
  expect(closed?.value).toBe(1)

  // A second scrape sees the decisions made since, on the same cumulative series.
  await limiter.check('203.0.113.9', rule)
  const again = samples(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text())
  const allowed = again
    .filter((s) => s.name === 'fastlimit_decisions_total' && s.labels.fastlimit_outcome === 'allowed')
    .reduce((sum, s) => sum + s.value, 0)
  expect(allowed).toBe(8)
})
