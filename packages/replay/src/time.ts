// Timestamps of log lines -> integer epoch milliseconds: the formats replay accepts.

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

/** `10/Oct/2000:13:55:36 -0700` (fractional seconds allowed): the common/combined log format's time. */
const CLF_TIME =
  /^(\d{2})\/([A-Z][a-z]{2})\/(\d{4}):(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?\s+([+-])(\d{2}):?(\d{2})$/

/** ISO 8601 / RFC 3339 with a date and a time: `2026-11-23T10:00:00Z`, `2026-11-23 10:00:00.123+01:00`. */
const ISO_TIME = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?$/i

/** A plain number, as text. */
const NUMBER = /^\d+(?:\.\d+)?$/

/**
 * Epoch milliseconds from a number whose magnitude tells its unit: seconds below 1e11 (until year
 * 5138), milliseconds below 1e14, microseconds below 1e17, nanoseconds above.
 */
export function epochMs(n: number): number | undefined {
  if (!Number.isFinite(n) || n < 0) return undefined
  if (n < 1e11) return Math.floor(n * 1000)
  if (n < 1e14) return Math.floor(n)
  if (n < 1e17) return Math.floor(n / 1000)
  return Math.floor(n / 1e6)
}

/** The common log format's `dd/Mon/yyyy:HH:MM:SS ±hhmm`, or undefined. */
export function clfTime(text: string): number | undefined {
  const m = CLF_TIME.exec(text)
  if (!m) return undefined
  const month = MONTHS[m[2] as string]
  if (month === undefined) return undefined
  const day = Number(m[1])
  const hour = Number(m[4])
  const minute = Number(m[5])
  const second = Number(m[6])
  if (day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) return undefined
  const fraction = m[7] === undefined ? 0 : Math.floor(Number(`0.${m[7]}`) * 1000)
  const offset = (m[8] === '-' ? -1 : 1) * (Number(m[9]) * 60 + Number(m[10])) * 60_000
  return Date.UTC(Number(m[3]), month, day, hour, minute, second, fraction) - offset
}

/**
 * Parses a timestamp in any of the accepted forms, or returns undefined:
 * - a number (or a string of digits): epoch seconds, milliseconds, microseconds or nanoseconds, told
 *   apart by magnitude ({@link epochMs}); fractions allowed;
 * - ISO 8601 / RFC 3339 with a time: `2026-11-23T10:00:00Z`, `2026-11-23T10:00:00.123+01:00`,
 *   `2026-11-23 10:00:00` (no zone: UTC);
 * - the common log format's `10/Oct/2000:13:55:36 -0700`.
 */
export function parseTimestamp(value: unknown): number | undefined {
  if (typeof value === 'number') return epochMs(value)
  if (typeof value !== 'string') return undefined
  const text = value.trim()
  if (NUMBER.test(text)) return epochMs(Number(text))
  if (ISO_TIME.test(text)) {
    // A time without a zone is UTC here (Date.parse would take the machine's zone).
    const zoned = /(?:Z|[+-]\d{2}(?::?\d{2})?)$/i.test(text.slice(10)) ? text : `${text}Z`
    const ms = Date.parse(zoned.replace(' ', 'T').replace(',', '.'))
    return Number.isFinite(ms) ? Math.floor(ms) : undefined
  }
  return clfTime(text)
}
