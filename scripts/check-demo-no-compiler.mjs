#!/usr/bin/env node
// Proves the README's first line (install + memory demo) works on a machine without a C toolchain.
// Copies the repository (tracked and unignored files, as a clone of this tree would have them) to a
// temporary folder, hides the compilers (cc, gcc, g++, make, python3, ... answer "not found" first on
// the PATH; CC=false CXX=false), installs pnpm into a private npm prefix, runs that very line there
// with PORT on a free port, waits for the demo to listen and checks that it answers HTTP on the memory
// backend, 429 included. Builds cached in the pnpm store are not used (pnpm's side-effects cache is
// off), and no better-sqlite3 may be installed at all. Stops the demo's process group by its id.
//
//   node scripts/check-demo-no-compiler.mjs [--keep]
import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/** The README's first command: pnpm, an install, and `pnpm demo` (scripts/.ci read it from README.md). */
export const DEMO_LINE = /^npm install -g pnpm@[0-9.]+ && pnpm install( [^&]+)? && pnpm demo$/m
const COMPILERS = ['cc', 'gcc', 'g++', 'c++', 'clang', 'clang++', 'make', 'gmake', 'python', 'python3']
const INSTALL_AND_START_MS = 300_000

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const started = Date.now()
const seconds = () => `${((Date.now() - started) / 1000).toFixed(1)} s`
const say = (line) => console.log(`[demo-no-compiler] ${line}`)

const demoLine = DEMO_LINE.exec(fs.readFileSync(path.join(root, 'README.md'), 'utf8'))?.[0]
if (!demoLine) {
  say(
    'FAILED: README.md has no first command of the form `npm install -g pnpm@X && pnpm install ... && pnpm demo`',
  )
  process.exit(1)
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-nocc-'))
const repo = path.join(work, 'repo')
const shims = path.join(work, 'no-compiler-bin')
const prefix = path.join(work, 'npm-prefix')

// A copy of the tree as a clone would have it: no node_modules, no dist, nothing ignored.
const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
  cwd: root,
  encoding: 'utf8',
})
  .split('\0')
  .filter((f) => f && fs.existsSync(path.join(root, f)))
for (const f of files) {
  fs.mkdirSync(path.dirname(path.join(repo, f)), { recursive: true })
  fs.copyFileSync(path.join(root, f), path.join(repo, f))
}

fs.mkdirSync(shims)
for (const name of COMPILERS) {
  fs.writeFileSync(path.join(shims, name), `#!/bin/sh\necho "${name}: not on this machine" >&2\nexit 127\n`, {
    mode: 0o755,
  })
}
const env = {
  ...process.env,
  PATH: [path.join(prefix, 'bin'), shims, process.env.PATH].join(path.delimiter),
  CC: 'false',
  CXX: 'false',
  npm_config_prefix: prefix,
  // As on a machine that never built it: no native build reused from the pnpm store.
  npm_config_side_effects_cache: 'false',
  npm_config_update_notifier: 'false',
  TURBO_TELEMETRY_DISABLED: '1',
  HOST: '127.0.0.1',
}
delete env.NODE_OPTIONS // nothing of the caller's (a test runner's conditions) leaks into the demo

// The shims must really hide the toolchain, or this proves nothing.
for (const probe of ['cc --version', 'g++ --version', 'make --version', 'python3 --version']) {
  try {
    execFileSync('sh', ['-c', probe], { env, stdio: 'ignore' })
    say(`FAILED: \`${probe}\` still works with the compilers hidden`)
    process.exit(1)
  } catch {}
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

const port = await freePort()
say(`running the README's first line in a copy of the repository, no compiler on the PATH:\n  ${demoLine}`)
const child = spawn('bash', ['-c', demoLine], {
  cwd: repo,
  env: { ...env, PORT: String(port) },
  detached: true, // its own process group (bash, pnpm, tsx, the server), stopped together by its id
  stdio: ['ignore', 'pipe', 'pipe'],
})
let output = ''
child.stdout.on('data', (d) => {
  output += d
})
child.stderr.on('data', (d) => {
  output += d
})

const problems = []
try {
  await new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`not listening within ${INSTALL_AND_START_MS / 1000} s`)),
      INSTALL_AND_START_MS,
    )
    const poll = setInterval(() => {
      if (/listening on http:\/\/127\.0\.0\.1:\d+/.test(output)) {
        clearTimeout(timer)
        clearInterval(poll)
        resolve()
      }
    }, 200)
    child.once('exit', (code) => {
      clearTimeout(timer)
      clearInterval(poll)
      reject(new Error(`the command exited with ${code} before the demo listened`))
    })
  })
  say(`the demo listens after ${seconds()}`)
  const base = `http://127.0.0.1:${port}`
  const home = await fetch(`${base}/`)
  const body = await home.json()
  if (home.status !== 200 || body.backend !== 'memory') {
    problems.push(`GET / answered ${home.status} ${JSON.stringify(body)}, not 200 on the memory backend`)
  }
  const logins = []
  for (let i = 0; i < 6; i++) logins.push((await fetch(`${base}/login`, { method: 'POST' })).status)
  if (logins.slice(0, 5).some((s) => s === 429) || logins[5] !== 429) {
    problems.push(`POST /login x6 answered ${logins.join(', ')}, not five answers then 429`)
  } else say(`GET / -> 200 (backend: memory); POST /login x6 -> ${logins.join(', ')}`)
} catch (err) {
  problems.push(`${err.message}; output:\n${output.slice(-4000)}`)
} finally {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve))
    process.kill(-child.pid, 'SIGTERM')
    const late = setTimeout(() => process.kill(-child.pid, 'SIGKILL'), 10_000)
    await exited
    clearTimeout(late)
  }
}

const pnpmDir = path.join(repo, 'node_modules', '.pnpm')
const native = fs.existsSync(pnpmDir)
  ? fs.readdirSync(pnpmDir).filter((d) => d.startsWith('better-sqlite3@'))
  : []
if (native.length > 0) problems.push(`the demo's install brought ${native.join(', ')} (a native build)`)

if (process.argv.includes('--keep')) say(`kept ${work}`)
else fs.rmSync(work, { recursive: true, force: true })
if (problems.length > 0) {
  for (const p of problems) say(`FAILED: ${p}`)
  process.exit(1)
}
say(`the README's first line installs and serves the memory demo with no compiler (${seconds()})`)
