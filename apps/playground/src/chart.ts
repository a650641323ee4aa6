// One algorithm's panel: admitted (green) and denied (red) requests per tick as stacked columns on a
// scale shared by every panel, and the remaining capacity (blue line, its own scale from 0 to capacity).
import type { Series } from './simulate'

const W = 360
const H = 170
const PAD = { left: 34, right: 34, top: 10, bottom: 24 }

const DESCRIPTIONS: Readonly<Record<string, string>> = {
  'fixed-window': 'counts per window; a burst at a window edge can pass twice the limit',
  'sliding-window': 'weights the previous window; smooth, approximate',
  'sliding-log': 'remembers every admission; exact, memory grows with the limit',
  'token-bucket': 'refills continuously; bursts up to the capacity',
  'leaky-bucket': 'drains at a constant rate; queue of the capacity',
  gcra: 'one timestamp per client; bursts up to the capacity',
}

function svg(tag: string, attrs: Record<string, string | number>): SVGElement {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag)
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v))
  return el
}

/** Renders the panel of one series, with its figures in data attributes (read by the browser test). */
export function panel(series: Series, maxPerTick: number, tickMs: number): HTMLElement {
  const fig = document.createElement('figure')
  fig.className = 'panel'
  fig.dataset.algorithm = series.algorithm
  fig.dataset.admitted = String(series.totalAdmitted)
  fig.dataset.denied = String(series.totalDenied)
  fig.dataset.admittedSeries = series.admitted.join(',')
  fig.dataset.deniedSeries = series.denied.join(',')
  fig.dataset.remainingSeries = series.remaining.join(',')

  const cap = document.createElement('figcaption')
  const total = series.totalAdmitted + series.totalDenied
  const pct = total === 0 ? 0 : (series.totalDenied / total) * 100
  cap.innerHTML = `<strong>${series.algorithm}</strong> <span class="ok">${series.totalAdmitted} admitted</span> · <span class="no">${series.totalDenied} denied</span> (${pct.toFixed(1)}%)`
  const note = document.createElement('small')
  note.textContent = DESCRIPTIONS[series.algorithm] ?? ''
  cap.append(document.createElement('br'), note)
  fig.append(cap)

  const root = svg('svg', {
    viewBox: `0 0 ${W} ${H}`,
    role: 'img',
    'aria-label': `${series.algorithm} over time`,
  })
  const plotW = W - PAD.left - PAD.right
  const plotH = H - PAD.top - PAD.bottom
  const n = series.admitted.length
  const bw = plotW / Math.max(1, n)
  const y = (v: number) => PAD.top + plotH - (v / Math.max(1, maxPerTick)) * plotH
  root.append(svg('rect', { x: PAD.left, y: PAD.top, width: plotW, height: plotH, class: 'plot' }))
  for (let i = 0; i < n; i++) {
    const a = series.admitted[i] as number
    const d = series.denied[i] as number
    const x = PAD.left + i * bw
    if (a > 0)
      root.append(
        svg('rect', { x, y: y(a), width: Math.max(bw - 0.4, 0.4), height: y(0) - y(a), class: 'admitted' }),
      )
    if (d > 0)
      root.append(
        svg('rect', {
          x,
          y: y(a + d),
          width: Math.max(bw - 0.4, 0.4),
          height: y(a) - y(a + d),
          class: 'denied',
        }),
      )
  }
  // Remaining capacity, on its own scale (0 .. the rule's capacity) along the right edge.
  const capacity = series.rule.burst ?? series.rule.limit
  const ry = (v: number) => PAD.top + plotH - (v / Math.max(1, capacity)) * plotH
  const points = series.remaining.map((r, i) => `${(PAD.left + (i + 1) * bw).toFixed(1)},${ry(r).toFixed(1)}`)
  if (points.length > 0) {
    root.append(
      svg('polyline', {
        points: `${PAD.left},${ry(capacity).toFixed(1)} ${points.join(' ')}`,
        class: 'remaining',
      }),
    )
  }
  const label = (x: number, yy: number, text: string, anchor: string, cls = 'axis') => {
    const t = svg('text', { x, y: yy, 'text-anchor': anchor, class: cls })
    t.textContent = text
    root.append(t)
  }
  label(PAD.left - 4, PAD.top + 8, String(maxPerTick), 'end')
  label(PAD.left - 4, PAD.top + plotH, '0', 'end')
  label(W - PAD.right + 4, PAD.top + 8, String(capacity), 'start', 'axis cap')
  label(PAD.left, H - 6, '0 s', 'start')
  label(W - PAD.right, H - 6, `${((n * tickMs) / 1000).toFixed(0)} s`, 'end')
  label(
    PAD.left + plotW / 2,
    H - 6,
    `per ${tickMs >= 1000 ? `${tickMs / 1000} s` : `${tickMs} ms`}`,
    'middle',
  )
  fig.append(root)
  return fig
}
