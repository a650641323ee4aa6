// replayLog: streams a log file (or stdin, or .gz) line by line through the parser and the Simulation.
import fs from 'node:fs'
import type { Readable } from 'node:stream'
import zlib from 'node:zlib'
import { ConfigError } from '@fastlimit/core'
import {
  CLF_FIELDS,
  type ClfField,
  clfParser,
  detectFormat,
  jsonParser,
  type LogFormat,
  type Parsed,
} from './parse'
import type { Progress } from './progress'
import { Simulation, type SimulationOptions, type SimulationResult } from './simulate'

/** Options of {@link replayLog}. */
export interface ReplayOptions extends SimulationOptions {
  /** The rules: `'100/min'`, or several at once (`['10/s', '1000/day']`, all-or-nothing). */
  rules: string | readonly string[]
  /**
   * The field that identifies a client: for the common/combined log format one of `ip`, `ident`,
   * `user`, `method`, `path`, `status`, `referer`, `agent`; for JSON lines a field name or a dotted path
   * (`client.ip`).
   * @default 'ip'
   */
  key?: string
  /**
   * The time field of JSON lines (a name or dotted path).
   * @default the first of time, timestamp, @timestamp, ts, date, datetime that the first line has
   */
  time?: string
  /**
   * The log's format; `'auto'` looks at the first line that is not blank (`{` starts JSON lines).
   * @default 'auto'
   */
  format?: LogFormat | 'auto'
  /** Progress shown while reading (see {@link Progress}). @default none */
  progress?: Progress
}

/** What {@link replayLog} returns: the simulation's result and what was read. */
export interface ReplayReport extends SimulationResult {
  /** The log's path (`'-'` for stdin). */
  log: string
  /** The format it was read as. */
  format: LogFormat
  /** The key field. */
  key: string
  /** Lines read (blank ones included). */
  lines: number
  /** Lines that could not be read as a request (counted, never fatal). */
  malformed: number
  /** The first few malformed lines: their number, why, and their start. */
  malformedSamples: Array<{ line: number; reason: string; text: string }>
  /** Seconds the replay took, and lines per second. */
  seconds: number
  linesPerSecond: number
}

/** A line longer than this is malformed, and skipped without being held whole. */
const MAX_LINE = 1 << 20
const SAMPLES = 5
/** Lines between two progress updates. */
const PROGRESS_EVERY = 16_384

function open(log: string): { stream: Readable; bytes: () => number } {
  if (log === '-') return { stream: process.stdin, bytes: () => 0 }
  try {
    fs.accessSync(log, fs.constants.R_OK)
  } catch (err) {
    throw new ConfigError(
      `[fastlimit] [replay] Cannot read the log ${JSON.stringify(log)}: ${(err as Error).message}. Give the path of an access log, or - for stdin.`,
    )
  }
  const file = fs.createReadStream(log, { highWaterMark: 1 << 20 })
  const stream = log.endsWith('.gz') ? file.pipe(zlib.createGunzip()) : file
  return { stream, bytes: () => file.bytesRead }
}

/**
 * Replays a log through the rules on every algorithm, at the log's own timestamps. Streams the file
 * (memory grows with the number of distinct clients, not with the file), reads `.gz` files, and `-`
 * as stdin. Lines that are not requests are counted as malformed, never fatal.
 *
 * Timestamps accepted: the common log format's `[10/Oct/2000:13:55:36 -0700]`; in JSON lines a
 * number (epoch seconds, milliseconds, microseconds or nanoseconds, by magnitude), a string of digits,
 * ISO 8601 / RFC 3339 (`2026-11-23T10:00:00.123Z`, `+01:00`, no zone = UTC) or the CLF form.
 *
 * @throws ConfigError for a bad rule, key or option, or a file that cannot be read
 */
export async function replayLog(log: string, options: ReplayOptions): Promise<ReplayReport> {
  const { rules, key = 'ip', time, format = 'auto', progress, ...simulation } = options
  if (format !== 'auto' && format !== 'clf' && format !== 'json') {
    throw new ConfigError(
      `[fastlimit] [replay] Unknown format ${JSON.stringify(format)}: use auto, clf or json.`,
    )
  }
  const sim = new Simulation(rules, simulation)
  const started = performance.now()
  const { stream, bytes } = open(log)
  stream.setEncoding('utf8')
  let parse: ((line: string) => Parsed) | undefined
  let chosen: LogFormat | undefined
  const choose = (line: string): ((line: string) => Parsed) => {
    chosen = format === 'auto' ? detectFormat(line) : format
    if (chosen === 'clf') {
      if (!(CLF_FIELDS as readonly string[]).includes(key)) {
        throw new ConfigError(
          `[fastlimit] [replay] --key ${JSON.stringify(key)} is not a field of the common/combined log format: use one of ${CLF_FIELDS.join(', ')}.`,
        )
      }
      return clfParser(key as ClfField)
    }
    return jsonParser(key, time)
  }
  let lines = 0
  let malformed = 0
  const samples: ReplayReport['malformedSamples'] = []
  const bad = (reason: string, text: string) => {
    malformed++
    if (samples.length < SAMPLES) samples.push({ line: lines, reason, text: text.slice(0, 120) })
  }
  const handle = (raw: string): void => {
    lines++
    if (raw.length > MAX_LINE) {
      bad(`longer than ${MAX_LINE} characters`, raw)
      return
    }
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw
    if (line.trim() === '') return
    parse ??= choose(line)
    const p = parse(line)
    if (p.ok) sim.add(p.timeMs, p.key)
    else bad(p.reason, line)
    if (progress !== undefined && lines % PROGRESS_EVERY === 0) progress.update(lines, bytes())
  }

  let rest = ''
  let skipping = false
  try {
    for await (const chunk of stream as AsyncIterable<string>) {
      const text = rest === '' ? chunk : rest + chunk
      let start = 0
      for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
        if (skipping) skipping = false
        else handle(text.slice(start, nl))
        start = nl + 1
      }
      rest = text.slice(start)
      if (rest.length > MAX_LINE) {
        if (!skipping) {
          lines++
          bad(`longer than ${MAX_LINE} characters`, rest)
        }
        skipping = true
        rest = ''
      }
    }
    if (rest !== '' && !skipping) handle(rest)
  } finally {
    progress?.done()
    stream.destroy()
  }
  const seconds = (performance.now() - started) / 1000
  return {
    log,
    format: chosen ?? (format === 'auto' ? 'clf' : format),
    key,
    lines,
    malformed,
    malformedSamples: samples,
    seconds,
    linesPerSecond: seconds > 0 ? lines / seconds : 0,
    ...sim.result(),
  }
}
