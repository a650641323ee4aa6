// Fixture scripts as separate Node processes (node --import tsx), talking over IPC; killed by PID.
import { type ChildProcess, spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const packageDir = path.resolve(here, '..')

/** A running fixture process. */
export interface Worker {
  readonly child: ChildProcess
  /** Resolves with the next message of `type` (messages are queued until taken). */
  next<T = Record<string, unknown>>(type: string): Promise<T>
  /** Every message received so far, in order. */
  readonly messages: ReadonlyArray<Record<string, unknown>>
  /** Resolves when the process has exited and its IPC channel is drained. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

const running = new Set<ChildProcess>()

/** Starts `test/fixtures/<name>.ts` with `config` as JSON in argv[2]. */
export function startWorker(name: string, config: unknown, nodeArgs: string[] = []): Worker {
  const script = path.join(here, 'fixtures', `${name}.ts`)
  const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', script, JSON.stringify(config)], {
    cwd: packageDir,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    // No tsx cache directory left behind in the system temp directory.
    env: { ...process.env, TSX_DISABLE_CACHE: '1' },
  })
  running.add(child)
  const all: Array<Record<string, unknown>> = []
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
    all.push(m as Record<string, unknown>)
    queue.push(m as Record<string, unknown>)
    deliver()
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (code, signal) => {
      running.delete(child)
      ended = new Error(`${name} exited (code ${code}, signal ${signal}) before sending the awaited message`)
      deliver()
      resolve({ code, signal })
    })
  })
  return {
    child,
    exited,
    messages: all,
    next: <T>(type: string) =>
      new Promise<T>((resolve, reject) => {
        waiting.push({ type, resolve: resolve as (m: never) => void, reject })
        deliver()
      }),
  }
}

/** SIGKILLs (by PID) every fixture process started by this file that still runs. */
export function killWorkers(): void {
  for (const child of running) child.kill('SIGKILL')
  running.clear()
}
