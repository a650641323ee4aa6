#!/usr/bin/env node
// Runs every package's tests through turbo (never from cache), then prints one summary line,
// `N passed, N failed`, summed from each package's vitest JSON report.
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const dirs = ['packages', 'apps'].flatMap((d) =>
  fs.existsSync(path.join(root, d))
    ? fs.readdirSync(path.join(root, d)).map((p) => path.join(root, d, p))
    : [],
)

function has(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
}

// The Redis tests start their own redis-server processes; install Debian's package when it is missing.
if (!has('redis-server')) {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
  if (isRoot && has('apt-get')) {
    console.log("[test] redis-server is missing: installing Debian's redis-server package")
    execFileSync(
      'sh',
      ['-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server'],
      {
        stdio: 'inherit',
      },
    )
  } else {
    console.error(
      '[test] redis-server is not on PATH: install it (e.g. apt-get install redis-server) and run again.',
    )
    process.exit(1)
  }
}

const REPORTS = ['.vitest-result.json', '.vitest-result.load.json']
for (const dir of dirs) for (const r of REPORTS) fs.rmSync(path.join(dir, r), { force: true })

// --continue: one failing package must not cancel the others' runs (their counts would be missing).
const args = ['turbo', 'run', 'test', '--force', '--continue', '--concurrency=2', ...process.argv.slice(2)]
const run = spawnSync('pnpm', ['exec', ...args], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, FASTLIMIT_TEST_JSON: '1', TURBO_TELEMETRY_DISABLED: '1' },
})

// The sustained-load tests last, alone on the machine: they assert the demo's event-loop delay, which
// other suites running beside them on two cores would inflate. Only when that package is in the run.
const filtered = process.argv.slice(2).some((a) => a.startsWith('--filter'))
let loadStatus = 0
if (!filtered && fs.existsSync(path.join(root, 'apps', 'reliability', 'package.json'))) {
  console.log('\n[test] sustained load on the demos, alone on the machine')
  loadStatus =
    spawnSync('pnpm', ['--filter', '@fastlimit/reliability', 'run', 'test:load'], {
      cwd: root,
      stdio: 'inherit',
      env: { ...process.env, FASTLIMIT_TEST_JSON: '1' },
    }).status ?? 1
}

let passed = 0
let failed = 0
let reports = 0
for (const dir of dirs) {
  for (const r of REPORTS) {
    const file = path.join(dir, r)
    if (!fs.existsSync(file)) continue
    reports++
    const report = JSON.parse(fs.readFileSync(file, 'utf8'))
    passed += report.numPassedTests ?? 0
    // Failed tests, plus files that failed without a failing test (an import error, a failing hook).
    const broken = (report.testResults ?? []).filter(
      (f) => f.status === 'failed' && !(f.assertionResults ?? []).some((a) => a.status === 'failed'),
    ).length
    failed += (report.numFailedTests ?? 0) + broken
  }
}
const turboFailed = run.status !== 0 || loadStatus !== 0
if (turboFailed && failed === 0) failed = 1
const line = `${passed} passed, ${failed} failed`
fs.writeFileSync(path.join(root, '.test-summary'), `${line}\n`)
console.log(
  `\n[test] ${reports} reports${turboFailed ? `; turbo exited with ${run.status}, the load phase with ${loadStatus}` : ''}`,
)
console.log(line)
process.exit(turboFailed || failed > 0 ? 1 : 0)
