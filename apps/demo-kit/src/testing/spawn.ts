// Test helpers: start a demo (and a throwaway redis-server) as child processes on free ports; stop them by PID.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { createServer } from 'node:net'

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })
}

export interface Running {
  base: string
  child: ChildProcess
  output: () => string
  stop: () => Promise<void>
}

/** Waits for `pattern` on the child's output; rejects if it exits first or `timeoutMs` passes. */
function waitFor(
  child: ChildProcess,
  pattern: RegExp,
  output: () => string,
  timeoutMs: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup()
      reject(new Error(`not ready within ${timeoutMs} ms; output:\n${output()}`))
    }, timeoutMs)
    const check = () => {
      if (pattern.test(output())) {
        cleanup()
        resolve()
      }
    }
    const exited = (code: number | null) => {
      cleanup()
      reject(new Error(`exited with ${code} before it was ready; output:\n${output()}`))
    }
    const cleanup = () => {
      clearTimeout(timer)
      child.stdout?.off('data', check)
      child.stderr?.off('data', check)
      child.off('exit', exited)
    }
    child.stdout?.on('data', check)
    child.stderr?.on('data', check)
    child.once('exit', exited)
    check()
  })
}

function stopper(child: ChildProcess): () => Promise<void> {
  return () =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve()
      child.once('exit', () => resolve())
      process.kill(child.pid as number, 'SIGTERM')
    })
}

function spawnLogged(command: string, args: string[], env: NodeJS.ProcessEnv, cwd?: string) {
  const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let text = ''
  child.stdout.on('data', (d) => {
    text += d
  })
  child.stderr.on('data', (d) => {
    text += d
  })
  return { child, output: () => text }
}

/** Starts `node --conditions=@fastlimit/source --import tsx src/server.ts` (the workspace packages from source) in the demo's folder `root`, with PORT on a free port and the given environment. */
export async function startDemo(root: string, env: Record<string, string> = {}): Promise<Running> {
  const port = await freePort()
  const { child, output } = spawnLogged(
    process.execPath,
    ['--conditions=@fastlimit/source', '--import', 'tsx', 'src/server.ts'],
    { ...process.env, PORT: String(port), FASTLIMIT_BACKEND: 'memory', ...env },
    root,
  )
  await waitFor(child, /listening on http:\/\/127\.0\.0\.1:\d+/, output, 60_000)
  return { base: `http://127.0.0.1:${port}`, child, output, stop: stopper(child) }
}

export const hasRedis = (() => {
  try {
    execFileSync('redis-server', ['--version'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
})()

/** Starts a throwaway redis-server on a free port (no persistence). */
export async function startRedis(): Promise<Running> {
  const port = await freePort()
  const { child, output } = spawnLogged(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    process.env,
  )
  await waitFor(child, /Ready to accept connections/, output, 30_000)
  return { base: `redis://127.0.0.1:${port}`, child, output, stop: stopper(child) }
}
