// The replay's report as a terminal table, as JSON keyed by algorithm, and as an SVG chart.
import type { Algorithm } from '@fastlimit/core'
import type { ReplayReport } from './replay'
import type { AlgorithmResult } from './simulate'

const SPARKS = '▁▂▃▄▅▆▇█'

function n(x: number): string {
  return Math.round(x).toLocaleString('en-US')
}

function pct(part: number, whole: number): string {
  return whole === 0 ? '0.0%' : `${((part / whole) * 100).toFixed(1)}%`
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace('.000Z', 'Z')
}

function span(ms: number): string {
  if (ms < 1000) return `${ms} ms`
  if (ms < 120_000) return `${(ms / 1000).toFixed(0)} s`
  if (ms < 7_200_000) return `${(ms / 60_000).toFixed(0)} min`
  if (ms < 172_800_000) return `${(ms / 3_600_000).toFixed(1)} h`
  return `${(ms / 86_400_000).toFixed(1)} d`
}

/** `values` squeezed into `width` columns (sums), for a sparkline or a chart. */
export function rebin(values: readonly number[], width: number): number[] {
  if (values.length <= width) return [...values]
  const per = Math.ceil(values.length / width)
  const out: number[] = []
  for (let i = 0; i < values.length; i += per) {
    let s = 0
    for (let j = i; j < Math.min(i + per, values.length); j++) s += values[j] as number
    out.push(s)
  }
  return out
}

function sparkline(values: readonly number[], width: number): string {
  const v = rebin(values, width)
  const max = Math.max(0, ...v)
  if (max === 0) return ' '.repeat(v.length)
  return v.map((x) => (x === 0 ? ' ' : SPARKS[Math.min(7, Math.floor((x / max) * 7.999))])).join('')
}

function pad(cells: string[][], right: ReadonlySet<number>): string[] {
  const widths = cells[0]?.map((_, i) => Math.max(...cells.map((r) => [...(r[i] ?? '')].length))) ?? []
  return cells.map((r) =>
    r
      .map((c, i) => {
        const gap = ' '.repeat((widths[i] ?? 0) - [...c].length)
        return right.has(i) ? gap + c : c + gap
      })
      .join('  ')
      .trimEnd(),
  )
}

function entries(report: ReplayReport): Array<[Algorithm, AlgorithmResult]> {
  return Object.entries(report.algorithms) as Array<[Algorithm, AlgorithmResult]>
}

/** The report as text for a terminal: a summary, a table per algorithm, the most denied clients. */
export function renderText(report: ReplayReport, options: { chart?: string } = {}): string {
  const out: string[] = []
  const format = report.format === 'json' ? 'JSON lines' : 'common/combined log format'
  out.push(`replay ${report.log} (${format}), key ${report.key}, rules ${report.rules.join(' + ')}`)
  let read = `${n(report.lines)} lines: ${n(report.requests)} requests from ${n(report.clients)} clients`
  if (report.malformed > 0) read += `, ${n(report.malformed)} malformed`
  out.push(read)
  for (const s of report.malformedSamples) out.push(`  malformed line ${n(s.line)}: ${s.reason}: ${s.text}`)
  if (report.requests > 0) {
    out.push(
      `${iso(report.from)} .. ${iso(report.to)} (${span(report.to - report.from)}), timeline by ${span(report.binMs)}` +
        (report.outOfOrder > 0 ? `, ${n(report.outOfOrder)} requests earlier than one before them` : ''),
    )
  }
  out.push('')
  const rows: string[][] = [
    ['algorithm', 'admitted', 'denied', 'denied %', 'clients denied', 'denials over time'],
  ]
  for (const [algorithm, r] of entries(report)) {
    if (r.skipped !== undefined) {
      rows.push([
        algorithm,
        '-',
        '-',
        '-',
        '-',
        `skipped: ${r.skipped.replace(/^\[fastlimit\] \[\w+\] /, '')}`,
      ])
      continue
    }
    rows.push([
      algorithm,
      n(r.admitted),
      n(r.denied),
      pct(r.denied, r.admitted + r.denied),
      n(r.clientsDenied),
      sparkline(
        r.timeline.map((p) => p.denied),
        40,
      ),
    ])
  }
  out.push(...pad(rows, new Set([1, 2, 3, 4])))
  const denying = entries(report).filter(([, r]) => r.topDenied.length > 0)
  if (denying.length > 0) {
    out.push('', 'most denied clients (denied of requests):')
    for (const [algorithm, r] of denying) {
      const top = r.topDenied
        .slice(0, 5)
        .map((c) => `${c.key} ${n(c.denied)}/${n(c.requests)}`)
        .join(', ')
      out.push(`  ${algorithm.padEnd(14)} ${top}`)
    }
  }
  out.push(
    '',
    `${n(report.lines)} lines in ${report.seconds.toFixed(2)} s (${n(report.linesPerSecond)} lines/s)`,
  )
  if (options.chart !== undefined) out.push(`chart: ${options.chart}`)
  return `${out.join('\n')}\n`
}

/** The report as JSON: what was read, and the results keyed by algorithm. */
export function renderJson(report: ReplayReport): string {
  return `${JSON.stringify(report, null, 2)}\n`
}

function esc(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

/**
 * The report as an SVG chart: one panel per algorithm, admitted (grey) and denied (red) requests over
 * time as stacked columns on one shared scale.
 */
export function renderSvg(report: ReplayReport): string {
  const list = entries(report).filter(([, r]) => r.skipped === undefined)
  const width = 960
  const left = 130
  const right = 20
  const panel = 84
  const gap = 18
  const top = 58
  const plotW = width - left - right
  const columns = Math.max(1, Math.floor(Math.min(plotW / 3, list[0]?.[1].timeline.length ?? 1)))
  const binned = list.map(([a, r]) => ({
    algorithm: a,
    r,
    admitted: rebin(
      r.timeline.map((p) => p.admitted),
      columns,
    ),
    denied: rebin(
      r.timeline.map((p) => p.denied),
      columns,
    ),
  }))
  const max = Math.max(1, ...binned.flatMap((b) => b.admitted.map((x, i) => x + (b.denied[i] ?? 0))))
  const height = top + list.length * (panel + gap) + 30
  const out: string[] = []
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${left}" y="22" font-size="15" font-weight="600">${esc(`fastlimit replay: ${report.rules.join(' + ')} on ${report.log}`)}</text>`,
    `<text x="${left}" y="40" fill="#555">${esc(
      `${n(report.requests)} requests from ${n(report.clients)} clients, by ${report.key}` +
        (report.requests > 0 ? `, ${iso(report.from)} .. ${iso(report.to)}` : ''),
    )}</text>`,
    `<g font-size="11"><rect x="${width - 190}" y="12" width="10" height="10" fill="#9aa5b1"/><text x="${width - 175}" y="21">admitted</text>` +
      `<rect x="${width - 110}" y="12" width="10" height="10" fill="#d64545"/><text x="${width - 95}" y="21">denied</text></g>`,
  )
  binned.forEach((b, i) => {
    const y0 = top + i * (panel + gap)
    const bw = plotW / Math.max(1, b.admitted.length)
    out.push(
      `<g data-algorithm="${b.algorithm}" data-admitted="${b.r.admitted}" data-denied="${b.r.denied}">`,
    )
    out.push(
      `<text x="${left - 10}" y="${y0 + 16}" text-anchor="end" font-weight="600">${b.algorithm}</text>`,
    )
    out.push(
      `<text x="${left - 10}" y="${y0 + 32}" text-anchor="end" fill="#555">${n(b.r.admitted)} ok</text>`,
      `<text x="${left - 10}" y="${y0 + 47}" text-anchor="end" fill="#d64545">${n(b.r.denied)} denied</text>`,
    )
    out.push(`<rect x="${left}" y="${y0}" width="${plotW}" height="${panel}" fill="#f7f8fa"/>`)
    b.admitted.forEach((a, j) => {
      const d = b.denied[j] ?? 0
      const x = (left + j * bw).toFixed(2)
      const ha = (a / max) * panel
      const hd = (d / max) * panel
      const w = Math.max(bw - 0.5, 0.5).toFixed(2)
      if (a > 0)
        out.push(
          `<rect x="${x}" y="${(y0 + panel - ha).toFixed(2)}" width="${w}" height="${ha.toFixed(2)}" fill="#9aa5b1"/>`,
        )
      if (d > 0)
        out.push(
          `<rect x="${x}" y="${(y0 + panel - ha - hd).toFixed(2)}" width="${w}" height="${hd.toFixed(2)}" fill="#d64545"/>`,
        )
    })
    out.push('</g>')
  })
  const yAxis = top + list.length * (panel + gap) + 4
  if (report.requests > 0) {
    out.push(`<text x="${left}" y="${yAxis}" fill="#555">${esc(iso(report.from))}</text>`)
    out.push(
      `<text x="${width - right}" y="${yAxis}" text-anchor="end" fill="#555">${esc(iso(report.to))}</text>`,
    )
  }
  out.push(
    `<text x="${left + plotW / 2}" y="${yAxis}" text-anchor="middle" fill="#555">${esc(
      `scale: ${n(max)} requests per column (${n((report.binMs * Math.ceil((list[0]?.[1].timeline.length ?? 1) / columns)) / 1000)} s)`,
    )}</text>`,
  )
  out.push('</svg>')
  return `${out.join('\n')}\n`
}
