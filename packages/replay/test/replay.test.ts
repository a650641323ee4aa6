// The replay CLI as a user runs it: a generated million-line log checked against a direct count with
// core's steps, both log formats, malformed lines, JSON output, the SVG, and errors.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ALGORITHMS } from '@fastlimit/core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ReplayReport } from '../src/index'
import { clfDate, cli, directCount, root, runCli, traffic, tsx, writeClf } from './helpers'

let dir: string
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-replay-'))
})
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true })
})

describe('replay of a generated log of 1,000,000 lines', () => {
  it('admits and denies exactly what core steps admit and deny, on all six algorithms', async () => {
    const tr = traffic(1_000_000, 7)
    const file = path.join(dir, 'access.log')
    const bad = writeClf(file, tr, 250_000)
    expect(bad).toHaveLength(3)
    const svg = path.join(dir, 'chart.svg')
    const run = await runCli([file, '--rules', '60/min', '--key', 'ip', '--json', '--out', svg], {
      timeoutMs: 240_000,
    })
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    const report = JSON.parse(run.stdout) as ReplayReport
    expect(report.lines).toBe(1_000_003)
    expect(report.requests).toBe(1_000_000)
    expect(report.malformed).toBe(3)
    expect(report.malformedSamples.map((s) => s.line)).toEqual(bad)
    expect(report.clients).toBe(new Set(tr.keys).size)
    expect(report.from).toBe(tr.times[0])
    expect(report.to).toBe(tr.times[tr.times.length - 1])
    expect(Object.keys(report.algorithms).sort()).toEqual([...ALGORITHMS].sort())
    let someDenied = false
    for (const algorithm of ALGORITHMS) {
      const direct = directCount(tr, '60/min', algorithm)
      const r = report.algorithms[algorithm]
      expect({ algorithm, admitted: r?.admitted, denied: r?.denied }).toEqual({
        algorithm,
        admitted: direct.admitted,
        denied: direct.denied,
      })
      if (direct.denied > 0) someDenied = true
      expect(r?.clientsDenied).toBe(direct.deniedByClient.size)
      const worst = [...direct.deniedByClient.values()].sort((a, b) => b - a)
      expect(r?.topDenied.map((c) => c.denied)).toEqual(worst.slice(0, 10))
      const top = r?.topDenied[0]
      expect(top && direct.deniedByClient.get(tr.clients.indexOf(top.key))).toBe(top?.denied)
      // The timeline adds up to the totals.
      expect(r?.timeline.reduce((s, p) => s + p.admitted, 0)).toBe(direct.admitted)
      expect(r?.timeline.reduce((s, p) => s + p.denied, 0)).toBe(direct.denied)
    }
    expect(someDenied).toBe(true)
    expect(report.linesPerSecond).toBeGreaterThan(0)
    console.log(
      `[replay] 1,000,003 lines in ${report.seconds.toFixed(2)} s: ${Math.round(report.linesPerSecond).toLocaleString('en-US')} lines/s`,
    )
    const chart = fs.readFileSync(svg, 'utf8')
    expect(chart.startsWith('<svg')).toBe(true)
    for (const algorithm of ALGORITHMS) {
      expect(chart).toContain(
        `data-algorithm="${algorithm}" data-admitted="${report.algorithms[algorithm]?.admitted}"`,
      )
    }
  }, 300_000)
})

describe('log formats', () => {
  const tr = traffic(20_000, 3)

  it('reads JSON lines (ISO, epoch seconds and milliseconds, nested key) as it reads the same CLF log', async () => {
    const clf = path.join(dir, 'small.log')
    writeClf(clf, tr)
    const json = path.join(dir, 'small.jsonl')
    const lines: string[] = []
    for (let i = 0; i < tr.times.length; i++) {
      const t = tr.times[i] as number
      const time = i % 3 === 0 ? new Date(t).toISOString() : i % 3 === 1 ? t / 1000 : t
      lines.push(
        JSON.stringify({
          level: 'info',
          ts: time,
          client: { ip: tr.clients[tr.keys[i] as number] },
          path: '/',
        }),
      )
    }
    fs.writeFileSync(json, `${lines.join('\n')}\n`)
    const rules = ['--rules', '20/min,100/hour']
    const a = await runCli([clf, ...rules, '--json'])
    const b = await runCli([json, ...rules, '--json', '--key', 'client.ip'])
    expect(a.code).toBe(0)
    expect(b.code).toBe(0)
    const ra = JSON.parse(a.stdout) as ReplayReport
    const rb = JSON.parse(b.stdout) as ReplayReport
    expect(ra.format).toBe('clf')
    expect(rb.format).toBe('json')
    expect(rb.requests).toBe(20_000)
    expect(rb.malformed).toBe(0)
    expect(rb.rules).toEqual(['20/1m', '100/1h'])
    for (const algorithm of ALGORITHMS) {
      const direct = directCount(tr, ['20/min', '100/hour'], algorithm)
      expect(ra.algorithms[algorithm]?.admitted).toBe(direct.admitted)
      expect(rb.algorithms[algorithm]?.admitted).toBe(direct.admitted)
      expect(rb.algorithms[algorithm]?.denied).toBe(direct.denied)
    }
  })

  it('counts malformed lines of every kind and reports the first ones, without failing', async () => {
    const file = path.join(dir, 'mixed.jsonl')
    const t = Date.UTC(2026, 10, 23, 12, 0, 0)
    const lines = [
      JSON.stringify({ time: new Date(t).toISOString(), user: 'a' }),
      '{"time": "2026-11-23T12:00:01Z", "user": ', // cut short
      JSON.stringify({ time: 'yesterday', user: 'a' }),
      JSON.stringify({ time: new Date(t).toISOString() }),
      '[1, 2]',
      '',
      JSON.stringify({ time: t + 1000, user: 'a' }),
      JSON.stringify({ time: `${t + 2000}`, user: 'b' }),
      `{"time": "${'x'.repeat(2_000_000)}"}`,
      JSON.stringify({ time: '2026-11-23 12:00:03', user: 'a' }),
    ]
    fs.writeFileSync(file, `${lines.join('\r\n')}\r\n`)
    const run = await runCli([file, '--rules', '2/min', '--key', 'user', '--json', '--top', '1'])
    expect(run.code).toBe(0)
    const r = JSON.parse(run.stdout) as ReplayReport
    expect(r.lines).toBe(10)
    expect(r.requests).toBe(4)
    expect(r.malformed).toBe(5)
    expect(r.malformedSamples.map((s) => [s.line, s.reason])).toEqual([
      [2, 'not JSON'],
      [3, 'bad or missing time'],
      [4, 'no user'],
      [5, 'not a JSON object'],
      [9, 'longer than 1048576 characters'],
    ])
    expect(r.algorithms['fixed-window']).toMatchObject({
      admitted: 3,
      denied: 1,
      topDenied: [{ key: 'a', denied: 1, requests: 3 }],
    })

    const clf = path.join(dir, 'mixed.log')
    const d = clfDate(t)
    fs.writeFileSync(
      clf,
      [
        `203.0.113.1 - alice [${d}] "GET / HTTP/1.1" 200 10`,
        `203.0.113.1 - - [${d}] "GET / HTTP/1.1" 200 10 "-" "curl/8"`,
        `203.0.113.2 - bob [99/Foo/2026:12:00:00 +0000] "GET / HTTP/1.1" 200 10`,
        'GET / HTTP/1.1',
      ].join('\n'),
    )
    const byUser = JSON.parse((await runCli([clf, '--rules', '5/s', '--key', 'user', '--json'])).stdout)
    expect(byUser).toMatchObject({ lines: 4, requests: 1, malformed: 3 })
    expect(byUser.malformedSamples.map((s: { reason: string }) => s.reason)).toEqual([
      'no user',
      'bad time [99/Foo/2026:12:00:00 +0000]',
      'not in the common or combined log format',
    ])
  })

  it('prints a table and writes the SVG chart by default; fails early on a bad rule, key or file', async () => {
    const file = path.join(dir, 'table.log')
    writeClf(file, traffic(3000, 9))
    const run = await runCli([file, '--rules', '5/min'], { cwd: dir })
    expect(run.code).toBe(0)
    expect(run.stderr).toBe('')
    expect(run.stdout).toMatch(/^replay .*table\.log \(common\/combined log format\), key ip, rules 5\/1m$/m)
    for (const algorithm of ALGORITHMS)
      expect(run.stdout).toMatch(new RegExp(`^${algorithm} +[\\d,]+ +[\\d,]+ +[\\d.]+%`, 'm'))
    expect(run.stdout).toContain('most denied clients')
    expect(run.stdout).toContain('chart: replay.svg')
    expect(fs.readFileSync(path.join(dir, 'replay.svg'), 'utf8')).toContain('<svg')

    const badRule = await runCli([file, '--rules', '5/fortnight'])
    expect(badRule.code).toBe(2)
    expect(badRule.stderr).toMatch(/\[fastlimit\] \[core\] Rule "5\/fortnight".*unknown unit/)
    const badKey = await runCli([file, '--rules', '5/min', '--key', 'client.ip'])
    expect(badKey.code).toBe(2)
    expect(badKey.stderr).toContain(
      '[fastlimit] [replay] --key "client.ip" is not a field of the common/combined log format',
    )
    const missing = await runCli([path.join(dir, 'nope.log'), '--rules', '5/min'])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain('[fastlimit] [replay] Cannot read the log')
    const noRules = await runCli([file])
    expect(noRules.code).toBe(2)
    expect(noRules.stderr).toContain('give the rules')
  })

  it('reads a gzipped log and stdin', async () => {
    const file = path.join(dir, 'z.log')
    writeClf(file, traffic(5000, 4))
    execFileSync('gzip', ['-k', file])
    const plain = JSON.parse((await runCli([file, '--rules', '10/min', '--json'])).stdout) as ReplayReport
    const gz = JSON.parse(
      (await runCli([`${file}.gz`, '--rules', '10/min', '--json'])).stdout,
    ) as ReplayReport
    const stdin = JSON.parse(
      execFileSync(
        'sh',
        [
          '-c',
          `${JSON.stringify(process.execPath)} --import ${tsx} ${JSON.stringify(cli)} - --rules 10/min --json < ${JSON.stringify(file)}`,
        ],
        {
          cwd: root,
          encoding: 'utf8',
        },
      ),
    ) as ReplayReport
    expect(gz.algorithms).toEqual(plain.algorithms)
    expect(stdin.algorithms).toEqual(plain.algorithms)
    expect(stdin.log).toBe('-')
  })
})
