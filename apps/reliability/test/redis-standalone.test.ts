// Redis faults on a standalone server: SIGKILL in the middle of a load, down for seconds, restarted on the
// same port; and a server that answers only after 5 s (DEBUG SLEEP, CLIENT PAUSE). Three error policies each.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  command,
  killProcess,
  type StandaloneSetup,
  startStandalone,
  stopAll,
} from '../../../packages/redis/test/servers'
import { closeLimiters, makeLimiters, type PolicyLimiter, runFault } from './fault-scenario'
import { Recorder, sleep, waitUntil } from './helpers'

const TIMEOUT_MS = 200
// A loaded 2-core machine may run a timer late; a hang would be seconds (5 s sleep) or forever.
const MARGIN_MS = 800
const recorder = new Recorder('redis-standalone', 'fault')

let redis: StandaloneSetup | undefined
let limiters: PolicyLimiter[] = []

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

beforeAll(async () => {
  redis = await startStandalone({ config: ['enable-debug-command yes'] })
})

afterAll(async () => {
  await closeLimiters(limiters)
  limiters = []
  await stopAll()
  recorder.save()
})

describe('Redis standalone', () => {
  it('SIGKILL mid-load, 3 s down, restart on the same port: policy within timeoutMs, then exact again', async () => {
    const setup = redis as StandaloneSetup
    const port = setup.port
    limiters = makeLimiters(setup.url, TIMEOUT_MS)
    await runFault({
      fault: 'standalone: SIGKILL, 3 s down, restart',
      limiters,
      recorder,
      timeoutMs: TIMEOUT_MS,
      marginMs: MARGIN_MS,
      ratePerSec: 100,
      beforeMs: 2000,
      injure: async () => {
        killProcess(setup.server)
        await waitUntil('the killed redis-server to exit', () => !alive(setup.server.pid), 5000, 10)
      },
      outageMs: 3000,
      heal: async () => {
        redis = await startStandalone({ port, config: ['enable-debug-command yes'] })
      },
      afterMs: 2000,
    })
    await closeLimiters(limiters)
    limiters = []
  })

  it('DEBUG SLEEP 5: every call is decided by the policy within timeoutMs while the server sleeps', async () => {
    const setup = redis as StandaloneSetup
    limiters = makeLimiters(setup.url, TIMEOUT_MS)
    let sleeping: Promise<unknown> = Promise.resolve()
    await runFault({
      fault: 'standalone: DEBUG SLEEP 5',
      limiters,
      recorder,
      timeoutMs: TIMEOUT_MS,
      marginMs: MARGIN_MS,
      ratePerSec: 100,
      beforeMs: 1000,
      injure: async () => {
        sleeping = command(setup.port, 'DEBUG', 'SLEEP', '5')
        // The server took the command once a PING on a new connection no longer answers.
        await sleep(100)
      },
      outageMs: 4000,
      heal: async () => {
        expect(await sleeping).toBe('OK')
      },
      afterMs: 1000,
    })
    await closeLimiters(limiters)
    limiters = []
  })

  it('CLIENT PAUSE 5000: every call is decided by the policy within timeoutMs while the server is paused', async () => {
    const setup = redis as StandaloneSetup
    limiters = makeLimiters(setup.url, TIMEOUT_MS)
    let pausedAt = 0
    await runFault({
      fault: 'standalone: CLIENT PAUSE 5000',
      limiters,
      recorder,
      timeoutMs: TIMEOUT_MS,
      marginMs: MARGIN_MS,
      ratePerSec: 100,
      beforeMs: 1000,
      injure: async () => {
        expect(await command(setup.port, 'CLIENT', 'PAUSE', '5000', 'ALL')).toBe('OK')
        pausedAt = performance.now()
      },
      outageMs: 4000,
      heal: async () => {
        await sleep(Math.max(0, 5000 - (performance.now() - pausedAt)))
      },
      afterMs: 1000,
    })
    await closeLimiters(limiters)
    limiters = []
  })
})
