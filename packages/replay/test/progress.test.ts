// Progress on a terminal only: the reporter with an injected stream, and the CLI under a real
// pseudo-terminal (util-linux `script`) against the same CLI with pipes.
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Progress } from '../src/index'
import { cli, root, runCli, traffic, tsx, writeClf } from './helpers'

describe('Progress', () => {
  it('writes lines read, rate and time left on a TTY, at most every 100 ms, and clears its line', () => {
    const written: string[] = []
    let now = 0
    const p = new Progress(
      { isTTY: true, write: (s) => written.push(s) },
      { totalBytes: 1000, now: () => now },
    )
    now = 1000
    p.update(50_000, 250)
    now = 1050
    p.update(60_000, 300)
    now = 2000
    p.update(100_000, 500)
    p.done()
    expect(written).toEqual([
      '\r\u001b[Kreplay: 50,000 lines read, 50,000 lines/s, 25%, 3 s left',
      '\r\u001b[Kreplay: 100,000 lines read, 50,000 lines/s, 50%, 2 s left',
      '\r\u001b[K',
    ])
  })

  it('writes nothing when the stream is not a TTY, or when disabled (--json)', () => {
    const written: string[] = []
    const piped = new Progress({ isTTY: false, write: (s) => written.push(s) })
    const json = new Progress({ isTTY: true, write: (s) => written.push(s) }, { enabled: false })
    for (const p of [piped, json]) {
      p.update(1, 1)
      p.done()
      expect(p.active).toBe(false)
    }
    expect(written).toEqual([])
  })
})

describe('the CLI on a terminal and on pipes', () => {
  let dir: string
  let file: string
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-replay-tty-'))
    file = path.join(dir, 'access.log')
    writeClf(file, traffic(200_000, 5))
  })
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

  const hasScript = spawnSync('sh', ['-c', 'command -v script'], { stdio: 'ignore' }).status === 0

  /** Runs the CLI with stdout and stderr on a pseudo-terminal; returns all it showed. */
  function onTerminal(args: string[]): string {
    const command = [process.execPath, '--import', tsx, cli, ...args]
      .map((a) => `'${a.replace(/'/g, "'\\''")}'`)
      .join(' ')
    return execFileSync('script', ['-qfec', command, '/dev/null'], {
      cwd: root,
      encoding: 'utf8',
      timeout: 120_000,
      maxBuffer: 256 << 20,
    })
  }

  it.skipIf(!hasScript)('shows progress on stderr on a terminal, and clears it before the report', () => {
    const shown = onTerminal([file, '--rules', '100/min', '--out', path.join(dir, 'a.svg')])
    expect(shown).toMatch(/replay: [\d,]+ lines read, [\d,]+ lines\/s, \d+%, [\d a-z]+ left/)
    expect(shown).toContain('\r\u001b[K')
    expect(shown).toMatch(/^gcra +[\d,]+/m)
  })

  it.skipIf(!hasScript)('shows no progress with --json, even on a terminal', () => {
    const shown = onTerminal([file, '--rules', '100/min', '--json'])
    expect(shown).not.toContain('lines read')
    expect(shown).not.toContain('\u001b[')
    expect(JSON.parse(shown).requests).toBe(200_000)
  })

  it('writes nothing to stderr when piped', async () => {
    const run = await runCli([file, '--rules', '100/min', '--out', path.join(dir, 'b.svg')])
    expect(run.code).toBe(0)
    expect(run.stderr).toBe('')
    expect(run.stdout).not.toContain('\u001b[')
    expect(run.stdout).toContain('lines/s)')
  })
})
