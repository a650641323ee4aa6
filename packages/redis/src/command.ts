// Sending the script without ioredis's defineCommand layer: one Command per call, EVALSHA, or EVAL with
// the source the first time on each connection (as ioredis does for defined commands). A NOSCRIPT answer
// (the script cache was flushed, or a replica was promoted) means the script did not run: RedisBackend
// sends that call once more, and it goes out as EVAL. Any other error is never retried.
//
// A call's deadline is turned into the server's clock when the command is written, on the connection it
// is written to (see clock.ts), so the server deadline is as late as it can safely be.
import { type Cluster, Command, type Redis } from 'ioredis'
import { serverDeadline } from './clock'
import type { ScriptDefinition } from './scripts'

const REPLY = { replyEncoding: 'utf8' } as const

/** One script call as ioredis sends it. `socket` is the connection it was last written to. */
export interface ScriptCall {
  readonly promise: Promise<unknown>
  readonly socket: object | undefined
}

type ScriptCommand = new (
  args: Array<string | Buffer>,
  client: object,
  at: number,
  deadline: number,
) => Command & ScriptCall

/**
 * The Command class of a client's library: ioredis's, or iovalkey's (a fork whose `Redis.Command` is its
 * own class). A Cluster's comes from one of its nodes.
 */
function baseOf(client: Redis | Cluster): typeof Command {
  const own = (client.constructor as { Command?: typeof Command }).Command
  if (typeof own === 'function') return own
  const node = client.isCluster ? (client as Cluster).nodes('all')[0] : undefined
  const nodes = (node?.constructor as { Command?: typeof Command } | undefined)?.Command
  return typeof nodes === 'function' ? nodes : Command
}

/** Sends one script's calls. */
export class ScriptRunner {
  readonly sha: string
  // Connections (sockets) on which the script went out with EVAL: the calls written after it use EVALSHA.
  private loaded = new WeakSet<object>()
  private readonly script: ScriptDefinition
  /** The command class of each library's Command (ioredis, iovalkey). */
  private readonly classes = new Map<typeof Command, ScriptCommand>()

  constructor(script: ScriptDefinition) {
    this.sha = script.sha
    this.script = script
  }

  /** The class last used, and its client: one client per backend, so this is the usual answer. */
  private lastClient: object | undefined
  private lastClass: ScriptCommand | undefined

  private classFor(client: Redis | Cluster): ScriptCommand {
    if (client === this.lastClient) return this.lastClass as ScriptCommand
    const Script = this.classOf(baseOf(client))
    // A Cluster's class is known for sure once it has nodes.
    if (!client.isCluster || (client as Cluster).nodes('all').length > 0) {
      this.lastClient = client
      this.lastClass = Script
    }
    return Script
  }

  private classOf(Base: typeof Command): ScriptCommand {
    let Script = this.classes.get(Base)
    if (Script !== undefined) return Script
    const runner = this
    const script = this.script
    Script = class ScriptCommand extends Base implements ScriptCall {
      socket: object | undefined = undefined

      // Names of our own: ioredis's Command has private fields (`slot`, `keys`, ...) of its own.
      private readonly owner: object
      private readonly deadlineAt: number
      private readonly deadline: number

      constructor(args: Array<string | Buffer>, owner: object, at: number, deadline: number) {
        super('evalsha', args, REPLY)
        this.owner = owner
        this.deadlineAt = at
        this.deadline = deadline
      }

      override toWritable(socket: object): string | Buffer {
        this.socket = socket
        const loaded = runner.loaded
        if (!loaded.has(socket)) {
          loaded.add(socket)
          this.name = 'eval'
          this.args[0] = script.lua
        }
        if (this.deadlineAt >= 0) {
          const d = serverDeadline(socket, this.owner, this.deadline)
          this.args[this.deadlineAt] = d === undefined ? '' : String(d)
        }
        return super.toWritable(socket)
      }
    }
    this.classes.set(Base, Script)
    return Script
  }

  /**
   * Sends `[sha, numberOfKeys, ...keys, ...argv]` through `client` (standalone, Sentinel or Cluster,
   * which routes it by the key's slot). With `at >= 0`, `args[at]` gets the server deadline of `deadline`
   * (app epoch ms) when the call is written, converted for the connection it is written to.
   */
  send(client: Redis | Cluster, args: Array<string | Buffer>, at = -1, deadline = 0): ScriptCall {
    const command = new (this.classFor(client))(args, client, at, deadline)
    client.sendCommand(command)
    return command
  }

  /**
   * Whether `err` is NOSCRIPT: the script did not run, and may be sent again. Every connection then
   * gets the source again with its next call.
   */
  noScript(err: unknown): boolean {
    if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) return false
    this.loaded = new WeakSet()
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
