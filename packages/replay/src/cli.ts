#!/usr/bin/env node
// The `replay` command: replay <log> --rules 100/min --key <field> [--json] [--out chart.svg]
import fs from 'node:fs'
import { parseArgs } from 'node:util'
import { ALGORITHMS, type Algorithm, FastlimitError } from '@fastlimit/core'
import { Progress } from './progress'
import { renderJson, renderSvg, renderText } from './render'
import { replayLog } from './replay'

const USAGE = `Usage: replay <log> --rules <rule> [options]

Replays an access log through rate-limit rules on all six fastlimit algorithms, at the log's own
timestamps, and reports what each would have admitted and denied.

  <log>                 a common/combined log format file or JSON lines (.gz is read too; - is stdin)
  --rules, -r <rule>    a rule such as 100/min, 10/s, 1000/day; repeat it, or separate rules by commas,
                        for several at once (all-or-nothing)
  --key, -k <field>     who is limited: for CLF one of ip, ident, user, method, path, status, referer,
                        agent; for JSON a field name or dotted path (client.ip)          [default: ip]
  --time <field>        the time field of JSON lines [default: time, timestamp, @timestamp, ts, date,
                        datetime, whichever the first line has]
  --format <f>          auto, clf or json                                             [default: auto]
  --algorithms <list>   some of ${ALGORITHMS.join(', ')}     [default: all]
  --top <n>             the most denied clients to list per algorithm                    [default: 10]
  --out, -o <file>      the SVG chart's path                     [default: replay.svg; none with --json]
  --json                print the report as JSON (keyed by algorithm) on stdout, nothing else
  --help, -h            this text

Timestamps: CLF [10/Oct/2000:13:55:36 -0700]; in JSON a number (epoch s, ms, µs or ns by magnitude),
digits in a string, ISO 8601 / RFC 3339 (no zone = UTC), or the CLF form.
Progress (lines read, rate, time left) goes to stderr on a terminal only.`

async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>
  try {
    parsed = parse(argv)
  } catch (err) {
    process.stderr.write(`replay: ${(err as Error).message}\n\n${USAGE}\n`)
    return 2
  }
  const { values, positionals } = parsed
  if (values.help) {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  const log = positionals[0]
  if (
    log === undefined ||
    positionals.length > 1 ||
    values.rules === undefined ||
    values.rules.length === 0
  ) {
    process.stderr.write(
      `replay: ${log === undefined ? 'give the log file' : positionals.length > 1 ? `one log at a time (got ${positionals.length})` : 'give the rules, e.g. --rules 100/min'}.\n\n${USAGE}\n`,
    )
    return 2
  }
  const rules = values.rules
    .flatMap((r) => r.split(','))
    .map((r) => r.trim())
    .filter((r) => r !== '')
  const top = values.top === undefined ? 10 : Number(values.top)
  if (!Number.isSafeInteger(top) || top < 0) {
    process.stderr.write(`replay: --top must be a whole number, got ${JSON.stringify(values.top)}.\n`)
    return 2
  }
  const json = values.json === true
  const out = values.out ?? (json ? undefined : 'replay.svg')
  const progress = new Progress(process.stderr, {
    enabled: !json,
    totalBytes: log === '-' || log.endsWith('.gz') ? undefined : safeSize(log),
  })
  try {
    const report = await replayLog(log, {
      rules,
      key: values.key ?? 'ip',
      ...(values.time !== undefined ? { time: values.time } : {}),
      format: (values.format ?? 'auto') as 'auto',
      ...(values.algorithms !== undefined
        ? { algorithms: values.algorithms.split(',').map((a) => a.trim()) as Algorithm[] }
        : {}),
      top,
      progress,
    })
    if (out !== undefined) fs.writeFileSync(out, renderSvg(report))
    process.stdout.write(
      json ? renderJson(report) : renderText(report, out !== undefined ? { chart: out } : {}),
    )
    return 0
  } catch (err) {
    if (err instanceof FastlimitError) {
      process.stderr.write(`${err.message}\n`)
      return 2
    }
    throw err
  }
}

function safeSize(file: string): number | undefined {
  try {
    return fs.statSync(file).size
  } catch {
    return undefined
  }
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      rules: { type: 'string', short: 'r', multiple: true },
      key: { type: 'string', short: 'k' },
      time: { type: 'string' },
      format: { type: 'string' },
      algorithms: { type: 'string' },
      top: { type: 'string' },
      out: { type: 'string', short: 'o' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (err) => {
    process.stderr.write(`replay: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exitCode = 1
  },
)
