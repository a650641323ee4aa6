// Spawns the fixture scripts as separate Node processes (node --import tsx) and talks to them over IPC; killed by PID.
import { type ChildProcess, spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const packageDir = path.resolve(here, '..')

/** A running fixture process. */
export interface Worker {
  readonly child: ChildProcess
  /** Resolves with the next message of `type` the process sends (messages are queued until taken). */
  next<T = Record<string, unknown>>(type: string): Promise<T>
  /** Resolves when the process has exited, with its code and signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

const running = new Set<ChildProcess>()

/** Starts `test/fixtures/<name>.ts` with `config` (JSON) as its argument. */
export function startWorker(
  name: string,
  config: unknown,
  options: { uid?: number; gid?: number } = {},
): Worker {
  const script = path.join(here, 'fixtures', `${name}.ts`)
  const child = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify(config)], {
    cwd: packageDir,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    // No tsx cache directory left behind in the system temp directory.
    env: { ...process.env, TSX_DISABLE_CACHE: '1' },
    ...options,
  })
  running.add(child)
  const queue: Array<Record<string, unknown>> = []
  const waiting: Array<{ type: string; resolve: (m: never) => void; reject: (e: Error) => void }> = []
  let ended: Error | undefined
  const deliver = () => {
    for (let i = 0; i < waiting.length; i++) {
      const w = waiting[i] as (typeof waiting)[number]
      const at = queue.findIndex((m) => m.type === w.type)
      if (at >= 0) {
        const [m] = queue.splice(at, 1)
        waiting.splice(i--, 1)
        w.resolve(m as never)
      } else if (ended) {
        waiting.splice(i--, 1)
        w.reject(ended)
      }
    }
  }
  child.on('message', (m) => {
    queue.push(m as Record<string, unknown>)
    deliver()
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      running.delete(child)
      ended = new Error(`${name} exited (code ${code}, signal ${signal}) before sending the awaited message`)
      deliver()
      resolve({ code, signal })
    })
  })
  return {
    child,
    exited,
    next: <T>(type: string) =>
      new Promise<T>((resolve, reject) => {
        waiting.push({ type, resolve: resolve as (m: never) => void, reject })
        deliver()
      }),
  }
}

/** Kills (by pid) every fixture process this file started that is still running. */
export function killWorkers(): void {
  for (const child of running) child.kill('SIGKILL')
  running.clear()
}
