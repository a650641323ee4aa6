// Runs src/worker.ts (the @fastlimit/hono README's usage: rateLimit() at module scope on the default
// in-memory backend) in workerd through `wrangler dev`, bundled by wrangler's esbuild with workerd's
// export conditions and no nodejs_compat, and drives it over HTTP on 127.0.0.1. workerd forbids
// timers, I/O and random values at module scope: anything rateLimit() builds there must start lazily.
// The workspace packages are bundled from source (the `@fastlimit/source` condition, ahead of wrangler's
// own `workerd,worker,browser`), so no build is needed; scripts/check-packages.mjs checks the dist.
import { type ChildProcess, spawn } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const wrangler = path.join(
  path.dirname(createRequire(import.meta.url).resolve('wrangler/package.json')),
  'bin',
  'wrangler.js',
)
/** Time allowed for wrangler to bundle and workerd to start (seconds on an idle machine). */
const START_TIMEOUT_MS = 90_000

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

let child: ChildProcess | undefined
let scratch = ''
let base = ''
let output = ''
let startError: Error | undefined

/** Throws why the worker did not start, so each test fails with it rather than being skipped. */
function started(): void {
  if (startError) throw startError
}

/** Starts `wrangler dev` and resolves once it serves, or rejects with what it printed. */
async function start(): Promise<void> {
  const [port, inspectorPort] = [await freePort(), await freePort()]
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'fastlimit-workerd-'))
  const args = ['dev', '--ip', '127.0.0.1', '--port', String(port), '--inspector-port', String(inspectorPort)]
  args.push('--persist-to', path.join(scratch, 'state'), '--log-level', 'info')
  const proc = spawn(process.execPath, [wrangler, ...args], {
    cwd: root,
    detached: true, // its own process group: afterAll stops wrangler and its workerd together
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      WRANGLER_BUILD_CONDITIONS: '@fastlimit/source,workerd,worker,browser',
      WRANGLER_SEND_METRICS: 'false',
      WRANGLER_SEND_ERROR_REPORTS: 'false',
      WRANGLER_LOG_PATH: path.join(scratch, 'logs'),
      XDG_CONFIG_HOME: path.join(scratch, 'config'),
      CLOUDFLARE_CF_FETCH_ENABLED: 'false', // no request for the `Request.cf` placeholder
      CI: 'true',
      NO_COLOR: '1',
    },
  })
  child = proc
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => fail(`not ready after ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS)
    function fail(why: string) {
      clearTimeout(timer)
      const errors = output
        .split('\n')
        .filter((l) => /ERROR|Error:|Disallowed/.test(l))
        .join('\n')
      reject(new Error(`wrangler dev ${why}:\n${errors || output.slice(-3000)}`))
    }
    const read = (chunk: Buffer) => {
      output += chunk.toString()
      const ready = /Ready on (http:\/\/127\.0\.0\.1:\d+)/.exec(output)
      if (ready?.[1]) {
        clearTimeout(timer)
        base = ready[1]
        resolve()
      } else if (/The Workers runtime failed to start/.test(output)) fail('failed to start')
    }
    proc.stdout?.on('data', read)
    proc.stderr?.on('data', read)
    proc.once('exit', (code) => fail(`exited with ${code}`))
  })
}

async function stop(): Promise<void> {
  const proc = child
  if (proc?.pid !== undefined && proc.exitCode === null && proc.signalCode === null) {
    const exited = new Promise((resolve) => proc.once('exit', resolve))
    process.kill(-proc.pid, 'SIGTERM')
    const late = setTimeout(() => {
      if (proc.pid !== undefined) process.kill(-proc.pid, 'SIGKILL')
    }, 10_000)
    await exited
    clearTimeout(late)
  }
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true })
}

/** One request from a client; Cloudflare's edge sets `cf-connecting-ip`, the test does it here. */
const get = (ip: string, path = '/') => fetch(`${base}${path}`, { headers: { 'cf-connecting-ip': ip } })

describe('@fastlimit/hono in workerd (wrangler dev, no nodejs_compat)', () => {
  beforeAll(async () => {
    startError = await start().then(
      () => undefined,
      (err: Error) => err,
    )
  }, START_TIMEOUT_MS + 15_000)
  afterAll(stop, 20_000)

  it('starts with rateLimit() at module scope (no timer or I/O in the global scope)', () => {
    started()
    expect(output).not.toMatch(/Disallowed operation/)
    expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
  })

  it('admits 3 requests a minute per client, then answers 429 with RateLimit headers and Retry-After', async () => {
    started()
    const ip = '198.51.100.7'
    for (const remaining of [2, 1, 0]) {
      const res = await get(ip)
      expect(res.status).toBe(200)
      expect(await res.text()).toBe('hello from workerd')
      expect(res.headers.get('ratelimit')).toMatch(
        new RegExp(`^limit=3, remaining=${remaining}, reset=\\d+$`),
      )
      expect(res.headers.get('ratelimit-policy')).toBe('3;w=60')
    }
    const refused = await get(ip)
    expect(refused.status).toBe(429)
    expect(refused.headers.get('ratelimit')).toMatch(/^limit=3, remaining=0, reset=\d+$/)
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(await refused.json()).toMatchObject({ title: 'Too Many Requests', status: 429 })
  })

  it('keys each client by cf-connecting-ip (through getConnInfo from hono/cloudflare-workers)', async () => {
    started()
    const other = await get('203.0.113.9')
    expect(other.status).toBe(200)
    expect(other.headers.get('ratelimit')).toMatch(/^limit=3, remaining=2, /)
    expect((await get('198.51.100.7')).status).toBe(429)
  })

  it('runs the lite entry (@fastlimit/hono/lite) built at module scope: 3 a minute per client, then 429', async () => {
    started()
    const ip = '198.51.100.77'
    for (const remaining of [2, 1, 0]) {
      const res = await get(ip, '/lite')
      expect(res.status).toBe(200)
      expect(await res.text()).toBe('hello from the lite entry')
      expect(res.headers.get('ratelimit')).toMatch(
        new RegExp(`^limit=3, remaining=${remaining}, reset=\\d+$`),
      )
      expect(res.headers.get('ratelimit-policy')).toBe('3;w=60')
    }
    const refused = await get(ip, '/lite')
    expect(refused.status).toBe(429)
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(await refused.json()).toMatchObject({ title: 'Too Many Requests', status: 429 })
    // Its own store: the full entry's app still admits this client, and another client is apart.
    expect((await get(ip)).status).toBe(200)
    expect((await get('203.0.113.99', '/lite')).status).toBe(200)
  })
})
