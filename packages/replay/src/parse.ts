// One log line -> (time, key): the combined/common log format and JSON lines.
import { clfTime, parseTimestamp } from './time'

/** The log formats replay reads. `'auto'` decides on the first line that is not blank. */
export type LogFormat = 'clf' | 'json'

/** The fields of a common/combined log format line that `--key` may name. */
export const CLF_FIELDS = ['ip', 'ident', 'user', 'method', 'path', 'status', 'referer', 'agent'] as const
/** A field of a common/combined log format line. */
export type ClfField = (typeof CLF_FIELDS)[number]

/** The fields tried, in order, for a JSON line's time when `--time` is not given. */
export const TIME_FIELDS = ['time', 'timestamp', '@timestamp', 'ts', 'date', 'datetime'] as const

/** A parsed line, or why it could not be. */
export type Parsed = { ok: true; timeMs: number; key: string } | { ok: false; reason: string }

/**
 * `host ident authuser [time] "request" status bytes` and, in the combined format, `"referer" "agent"`
 * after it (anything further, as nginx adds, is ignored).
 */
const CLF =
  /^(\S+) (\S+) (\S+) \[([^\]]+)\] "((?:[^"\\]|\\.)*)" (\d{3}|-) (\d+|-)(?: "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)")?/

/** Parses lines of the common or combined log format, keyed by one of {@link CLF_FIELDS}. */
export function clfParser(key: ClfField): (line: string) => Parsed {
  let lastTimeText = ''
  let lastTimeMs = 0
  return (line) => {
    const m = CLF.exec(line)
    if (!m) return { ok: false, reason: 'not in the common or combined log format' }
    const timeText = m[4] as string
    let timeMs: number | undefined
    // Lines of one second share their time text: parse it once.
    if (timeText === lastTimeText) timeMs = lastTimeMs
    else {
      timeMs = clfTime(timeText)
      if (timeMs === undefined) return { ok: false, reason: `bad time [${timeText.slice(0, 40)}]` }
      lastTimeText = timeText
      lastTimeMs = timeMs
    }
    let value: string | undefined
    switch (key) {
      case 'ip':
        value = m[1]
        break
      case 'ident':
        value = m[2]
        break
      case 'user':
        value = m[3]
        break
      case 'method':
      case 'path': {
        const request = (m[5] as string).split(' ')
        value = key === 'method' ? request[0] : request[1]
        break
      }
      case 'status':
        value = m[6]
        break
      case 'referer':
        value = m[8]
        break
      case 'agent':
        value = m[9]
        break
    }
    if (value === undefined || value === '' || value === '-') return { ok: false, reason: `no ${key}` }
    return { ok: true, timeMs, key: value }
  }
}

/** Reads a field by a dotted path (`client.ip`): the whole name first, so `"client.ip"` itself works. */
function field(obj: Record<string, unknown>, path: readonly string[], whole: string): unknown {
  if (whole in obj) return obj[whole]
  let v: unknown = obj
  for (const part of path) {
    if (typeof v !== 'object' || v === null) return undefined
    v = (v as Record<string, unknown>)[part]
  }
  return v
}

/**
 * Parses JSON lines (one object per line), keyed by the field `key` (a dotted path for nested
 * objects), timed by the field `time` or, when it is not given, the first of {@link TIME_FIELDS} the
 * first line has.
 */
export function jsonParser(key: string, time?: string): (line: string) => Parsed {
  const keyPath = key.split('.')
  let timeField = time
  let timePath = time?.split('.')
  return (line) => {
    let obj: unknown
    try {
      obj = JSON.parse(line)
    } catch {
      return { ok: false, reason: 'not JSON' }
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
      return { ok: false, reason: 'not a JSON object' }
    }
    const o = obj as Record<string, unknown>
    if (timeField === undefined || timePath === undefined) {
      const found = TIME_FIELDS.find((f) => f in o)
      if (found === undefined)
        return { ok: false, reason: `no time field (${TIME_FIELDS.join(', ')}; or --time)` }
      timeField = found
      timePath = [found]
    }
    const timeMs = parseTimestamp(field(o, timePath, timeField))
    if (timeMs === undefined) return { ok: false, reason: `bad or missing ${timeField}` }
    const k = field(o, keyPath, key)
    if (typeof k === 'string' ? k === '' : typeof k !== 'number') return { ok: false, reason: `no ${key}` }
    return { ok: true, timeMs, key: String(k) }
  }
}

/** The format of a log, from its first line that is not blank. */
export function detectFormat(line: string): LogFormat {
  return line.trimStart().startsWith('{') ? 'json' : 'clf'
}
