// Traffic patterns: the arrival times (integer epoch ms) of one client's requests. Deterministic, so
// the browser and a Node test compute the same arrivals.

/** The patterns the page offers. */
export type Pattern = 'steady' | 'bursts' | 'ramp' | 'sawtooth' | 'log'

/** What shapes the traffic. */
export interface TrafficSpec {
  pattern: Pattern
  /** Requests per second: steady's rate, ramp's and sawtooth's average (they peak at twice it). */
  rate: number
  /** How long, in seconds. */
  durationS: number
  /** For `'log'`: the pasted lines, one request each. */
  log?: string
}

/** The time every simulation starts at (a fixed instant, so results never depend on the day). */
export const T0 = Date.UTC(2026, 0, 1, 12, 0, 0)

/** Seconds between bursts, and a burst's length (`'bursts'`). */
const BURST_EVERY_S = 10
const BURST_LENGTH_MS = 1000
/** Seconds of one tooth (`'sawtooth'`). */
const TOOTH_S = 15

/** Arrivals spread evenly: `n` requests in `[start, start + length)`. */
function even(out: number[], start: number, length: number, n: number): void {
  for (let i = 0; i < n; i++) out.push(Math.floor(start + (i * length) / n))
}

/**
 * The arrival times of a pattern, sorted, as integer epoch milliseconds from {@link T0}:
 * - `steady`: `rate` per second, evenly spaced;
 * - `bursts`: a quiet quarter of `rate`, and every 10 s a burst of `3 × rate` requests within one second;
 * - `ramp`: from 0 up to `2 × rate` per second over the whole duration;
 * - `sawtooth`: from 0 up to `2 × rate` per second over 15 s, then back to 0, again and again;
 * - `log`: one request per pasted line, at the line's own time (see {@link parseLogTimes}).
 */
export function arrivals(spec: TrafficSpec): number[] {
  const durationMs = Math.round(spec.durationS * 1000)
  const rate = spec.rate
  const out: number[] = []
  switch (spec.pattern) {
    case 'steady':
      even(out, T0, durationMs, Math.round((rate * durationMs) / 1000))
      break
    case 'bursts': {
      even(out, T0, durationMs, Math.round((rate * durationMs) / 4000))
      for (let s = 0; s * 1000 < durationMs; s += BURST_EVERY_S) {
        even(out, T0 + s * 1000, Math.min(BURST_LENGTH_MS, durationMs - s * 1000), Math.round(rate * 3))
      }
      break
    }
    case 'ramp': {
      // Rate 2r·t/D: the i-th request comes when r·t²/D reaches i.
      const n = Math.round((rate * durationMs) / 1000)
      const d = durationMs / 1000
      for (let i = 0; i < n; i++) out.push(T0 + Math.floor(Math.sqrt((i * d) / rate) * 1000))
      break
    }
    case 'sawtooth': {
      const perTooth = Math.round(rate * TOOTH_S)
      for (let start = 0; start < durationMs; start += TOOTH_S * 1000) {
        for (let i = 0; i < perTooth; i++) {
          const t = start + Math.floor(Math.sqrt((i * TOOTH_S) / rate) * 1000)
          if (t < durationMs) out.push(T0 + t)
        }
      }
      break
    }
    case 'log': {
      const times = parseLogTimes(spec.log ?? '')
      const first = times[0]
      if (first !== undefined) for (const t of times) out.push(T0 + (t - first))
      break
    }
  }
  return out.sort((a, b) => a - b)
}

const MONTHS: Readonly<Record<string, number>> = {
  Jan: 0,
  Feb: 1,
  Mar: 2,
  Apr: 3,
  May: 4,
  Jun: 5,
  Jul: 6,
  Aug: 7,
  Sep: 8,
  Oct: 9,
  Nov: 10,
  Dec: 11,
}

/**
 * The time of each pasted line, in epoch ms, sorted; lines without one are skipped. A line may be a
 * combined/common log line (`[10/Oct/2000:13:55:36 -0700]`), a JSON object with `time`, `timestamp`
 * or `ts`, or start with an ISO 8601 time or a number (epoch seconds below 1e11, else milliseconds).
 */
export function parseLogTimes(text: string): number[] {
  const out: number[] = []
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '') continue
    const t = lineTime(line)
    if (t !== undefined) out.push(t)
  }
  return out.sort((a, b) => a - b)
}

function lineTime(line: string): number | undefined {
  const clf =
    /\[(\d{2})\/([A-Z][a-z]{2})\/(\d{4}):(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))? ([+-])(\d{2})(\d{2})\]/.exec(
      line,
    )
  if (clf) {
    const month = MONTHS[clf[2] as string]
    if (month === undefined) return undefined
    const offset = (clf[8] === '-' ? -1 : 1) * (Number(clf[9]) * 60 + Number(clf[10])) * 60_000
    const ms = clf[7] === undefined ? 0 : Number(clf[7].padEnd(3, '0'))
    return (
      Date.UTC(Number(clf[3]), month, Number(clf[1]), Number(clf[4]), Number(clf[5]), Number(clf[6]), ms) -
      offset
    )
  }
  if (line.startsWith('{')) {
    try {
      const o = JSON.parse(line) as Record<string, unknown>
      const v = o.time ?? o.timestamp ?? o.ts
      return typeof v === 'number' || typeof v === 'string' ? lineTime(String(v)) : undefined
    } catch {
      return undefined
    }
  }
  const iso = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?/.exec(line)
  if (iso) {
    const text = iso[0].replace(' ', 'T')
    const ms = Date.parse(/(?:Z|[+-]\d{2}:?\d{2})$/.test(text.slice(10)) ? text : `${text}Z`)
    return Number.isFinite(ms) ? Math.floor(ms) : undefined
  }
  const num = /^\d+(?:\.\d+)?/.exec(line)
  if (num) {
    const n = Number(num[0])
    return Math.floor(n < 1e11 ? n * 1000 : n)
  }
  return undefined
}
