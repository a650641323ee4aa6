// One process of the outbound workload: `jobs` no-op jobs submitted at once at an agreed instant to a
// throttle (fastlimit's throttle() on Redis or memory, bottleneck with or without its Redis clustering,
// p-throttle), each recording when it starts. Prints one JSON line: the start times (epoch ms, sub-ms)
// and the CPU this process spent from the submission to the last start.
import { FastLimit, type RuleObject, throttle } from '@fastlimit/core'
import { RedisBackend } from '@fastlimit/redis'
import Bottleneck from 'bottleneck'
import { Redis } from 'ioredis'
import pThrottle from 'p-throttle'

export type OutboundLib =
  | 'fastlimit-redis'
  | 'fastlimit-memory'
  | 'bottleneck-redis'
  | 'bottleneck-memory'
  | 'p-throttle'
  | 'p-throttle-strict'

export interface OutboundConfig {
  readonly lib: OutboundLib
  /** Jobs per second, the limit every library is given. */
  readonly rate: number
  readonly jobs: number
  readonly port?: number
  /** A name shared by the processes of one run (their limit's key). */
  readonly id: string
  readonly startAt: number
  /** fastlimit's rule. @default { limit: rate, window: '1s', burst: 1 } */
  readonly rule?: RuleObject
}

export interface OutboundResult {
  readonly starts: number[]
  readonly cpuUs: number
}

const config = JSON.parse(process.argv[2] as string) as OutboundConfig
const now = () => performance.timeOrigin + performance.now()
const starts: number[] = []
const job = async (): Promise<void> => {
  starts.push(now())
}

let submit: () => Promise<unknown>
let close: () => Promise<void> = async () => undefined
const interval = 1000 / config.rate
switch (config.lib) {
  case 'fastlimit-redis':
  case 'fastlimit-memory': {
    // By default evenly spaced, as bottleneck's minTime: `rate` per second with a burst of 1.
    const rules: RuleObject = config.rule ?? { limit: config.rate, window: '1s', burst: 1 }
    const backend =
      config.lib === 'fastlimit-redis' ? RedisBackend.fromUrl(`redis://127.0.0.1:${config.port}`) : undefined
    const limiter = new FastLimit(backend === undefined ? {} : { backend })
    submit = throttle(job, { limiter, rules, key: config.id, maxQueue: config.jobs })
    close = async () => {
      await limiter.close()
      await backend?.close()
    }
    break
  }
  case 'bottleneck-redis':
  case 'bottleneck-memory': {
    const limiter = new Bottleneck({
      minTime: interval,
      ...(config.lib === 'bottleneck-redis'
        ? {
            id: config.id,
            datastore: 'ioredis',
            clearDatastore: false,
            clientOptions: { host: '127.0.0.1', port: config.port },
            Redis,
          }
        : {}),
    } as Bottleneck.ConstructorOptions)
    if (config.lib === 'bottleneck-redis') await limiter.ready()
    submit = limiter.wrap(job)
    close = () => limiter.disconnect() as Promise<void>
    break
  }
  case 'p-throttle':
  case 'p-throttle-strict':
    submit = pThrottle({ limit: config.rate, interval: 1000, strict: config.lib === 'p-throttle-strict' })(
      job,
    )
    break
}

await new Promise((resolve) => setTimeout(resolve, Math.max(0, config.startAt - Date.now())))
const cpu0 = process.cpuUsage()
await Promise.all(Array.from({ length: config.jobs }, () => submit()))
const cpu = process.cpuUsage(cpu0)
await close()
const result: OutboundResult = { starts, cpuUs: cpu.user + cpu.system }
console.log(JSON.stringify(result))
