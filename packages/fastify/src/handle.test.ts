import { FastLimit, MemoryBackend } from '@fastlimit/core'
import { describe, expect, it } from 'vitest'
import { HandleRecorder } from './handle'

describe('HandleRecorder', () => {
  const limiter = () =>
    new FastLimit({ backend: new MemoryBackend({ clock: () => 1_700_000_040_000, cleanupIntervalMs: 0 }) })

  it('hands out the handle of a decision once, with what was checked', async () => {
    const recorder = new HandleRecorder(limiter())
    const decision = await recorder.limiter.check('ann', '5/min', { scope: 'login', cost: 2 })
    const handle = recorder.handleOf(decision)
    expect(handle).toMatchObject({ identity: 'ann', scope: 'login' })
    expect(recorder.handleOf(decision)).toBeUndefined()
    expect((await handle?.peek())?.remaining).toBe(3)
    await handle?.reset()
    expect((await handle?.peek())?.remaining).toBe(5)
  })

  it('forgets decisions never handed out once 10,000 wait, and keeps working', async () => {
    const recorder = new HandleRecorder(limiter())
    const first = await recorder.limiter.check('x0', '1/min')
    for (let i = 1; i <= 10_000; i++) await recorder.limiter.check(`x${i}`, '1/min')
    expect(recorder.handleOf(first)).toBeUndefined()
    const last = await recorder.limiter.check('y', '1/min')
    expect(recorder.handleOf(last)?.identity).toBe('y')
  })

  it('is the real limiter for everything but check', async () => {
    const real = limiter()
    const recorder = new HandleRecorder(real)
    expect(recorder.limiter.rules('5/min')).toBe(real.rules('5/min'))
    expect(recorder.limiter.backend).toBe(real.backend)
  })
})
