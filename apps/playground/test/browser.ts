// Debian's Chromium for the browser test (installed with apt-get when missing and we are root), the
// flags this machine needs, and the Vite dev server as a real process on a free loopback port.
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const CHROMIUM = '/usr/bin/chromium'
/** From /work/shared/TOOLCHAIN.md: headless, no sandbox (root), nothing that reaches the network. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

export const appDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/** Installs Debian's chromium when it is missing (never a browser download of Playwright's own). */
export function ensureChromium(): void {
  if (fs.existsSync(CHROMIUM)) return
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
  const hasApt = spawnSync('sh', ['-c', 'command -v apt-get'], { stdio: 'ignore' }).status === 0
  if (!isRoot || !hasApt) {
    throw new Error(
      `[playground] ${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) and run again.`,
    )
  }
  console.log("[playground] installing Debian's chromium (apt-get)")
  execFileSync(
    'sh',
    ['-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium'],
    {
      stdio: 'inherit',
      timeout: 280_000,
    },
  )
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

export interface DevServer {
  url: string
  process: ChildProcess
  stop(): Promise<void>
}

/** Starts `vite` (the app's dev server, as `pnpm playground` does) and waits until it serves the page. */
export async function startVite(): Promise<DevServer> {
  const port = await freePort()
  const pkg = createRequire(path.join(appDir, 'package.json')).resolve('vite/package.json')
  const vite = path.join(path.dirname(pkg), 'bin', 'vite.js')
  const child = spawn(
    process.execPath,
    [vite, '--host', '127.0.0.1', '--port', String(port), '--strictPort'],
    {
      cwd: appDir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, BROWSER: 'none', FORCE_COLOR: '0' },
    },
  )
  let output = ''
  child.stdout?.on('data', (d) => {
    output += d
  })
  child.stderr?.on('data', (d) => {
    output += d
  })
  const url = `http://127.0.0.1:${port}/`
  const stop = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve()
      child.once('exit', () => resolve())
      child.kill('SIGTERM')
      setTimeout(() => child.kill('SIGKILL'), 5000).unref()
    })
  const deadline = Date.now() + 60_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`[playground] vite exited: ${output}`)
    try {
      const res = await fetch(url)
      if (res.ok) break
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await stop()
      throw new Error(`[playground] vite did not serve ${url} within 60 s: ${output}`)
    }
    await new Promise((r) => setTimeout(r, 200))
  }
  return { url, process: child, stop }
}
