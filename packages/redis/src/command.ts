// Sending the script without ioredis's defineCommand layer: one Command per call, EVALSHA, or EVAL with
// the source the first time on each connection (as ioredis does for defined commands). A NOSCRIPT answer
// (the script cache was flushed, or a replica was promoted) means the script did not run: `run` sends
// that call once more, and it goes out as EVAL. Any other error is never retried.
import { type Cluster, Command, type Redis } from 'ioredis'
import type { ScriptDefinition } from './scripts'

const REPLY = { replyEncoding: 'utf8' } as const

/** Sends one script's calls. */
export class ScriptRunner {
  readonly sha: string
  // Connections (sockets) on which the script went out with EVAL: the calls written after it use EVALSHA.
  #loaded = new WeakSet<object>()
  readonly #Command: new (
    args: Array<string | Buffer>,
  ) => Command

  constructor(script: ScriptDefinition) {
    this.sha = script.sha
    const runner = this
    this.#Command = class ScriptCommand extends Command {
      constructor(args: Array<string | Buffer>) {
        super('evalsha', args, REPLY)
      }

      override toWritable(socket: object): string | Buffer {
        const loaded = runner.#loaded
        if (!loaded.has(socket)) {
          loaded.add(socket)
          this.name = 'eval'
          this.args[0] = script.lua
        }
        return super.toWritable(socket)
      }
    }
  }

  /**
   * Sends `[sha, numberOfKeys, ...keys, ...argv]` through `client` (standalone, Sentinel or Cluster,
   * which routes it by the key's slot) and resolves with the reply.
   */
  send(client: Redis | Cluster, args: Array<string | Buffer>): Promise<unknown> {
    const command = new this.#Command(args)
    client.sendCommand(command)
    return command.promise
  }

  /**
   * `send`, and once more on NOSCRIPT (the script did not run; it goes out again, with its source).
   * Any other error is thrown as is.
   */
  async run(client: Redis | Cluster, args: Array<string | Buffer>): Promise<unknown> {
    try {
      return await this.send(client, args)
    } catch (err) {
      if (!this.noScript(err)) throw err
      return await this.send(client, args)
    }
  }

  /**
   * Whether `err` is NOSCRIPT: the script did not run, and may be sent again. Every connection then
   * gets the source again with its next call.
   */
  noScript(err: unknown): boolean {
    if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) return false
    this.#loaded = new WeakSet()
    return true
  }
}

const runners = new Map<string, ScriptRunner>()

/** The runner of a script, shared by every backend that uses the script. */
export function runnerFor(script: ScriptDefinition): ScriptRunner {
  let runner = runners.get(script.sha)
  if (runner === undefined) {
    runner = new ScriptRunner(script)
    runners.set(script.sha, runner)
  }
  return runner
}
