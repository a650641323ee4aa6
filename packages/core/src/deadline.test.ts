import { afterEach, describe, expect, it, vi } from 'vitest'
import { Deadlines } from './deadline'

afterEach(() => {
  vi.useRealTimers()
})

describe('Deadlines', () => {
  it('expires exactly the calls still pending at their deadline, in order, with one timer', async () => {
    vi.useFakeTimers()
    const d = new Deadlines(100)
    const expired: string[] = []
    const a = d.add(() => expired.push('a'))
    await vi.advanceTimersByTimeAsync(30)
    const b = d.add(() => expired.push('b'))
    d.add(() => expired.push('c'))
    expect(vi.getTimerCount()).toBe(1)
    expect(a.settle()).toBe(true) // answered in time
    await vi.advanceTimersByTimeAsync(69)
    expect(expired).toEqual([])
    await vi.advanceTimersByTimeAsync(31) // t = 130: b and c are due
    expect(expired).toEqual(['b', 'c'])
    expect(b.settle()).toBe(false) // a late answer is ignored
    expect(vi.getTimerCount()).toBe(0)
  })

  it('re-arms for the next deadline and keeps the queue short when calls settle in time', async () => {
    vi.useFakeTimers()
    const d = new Deadlines(50)
    let expired = 0
    for (let i = 0; i < 10_000; i++) d.add(() => expired++).settle()
    const late = d.add(() => expired++)
    await vi.advanceTimersByTimeAsync(49)
    expect(expired).toBe(0)
    await vi.advanceTimersByTimeAsync(1)
    expect(expired).toBe(1)
    expect(late.settle()).toBe(false)
    d.add(() => expired++)
    await vi.advanceTimersByTimeAsync(50)
    expect(expired).toBe(2)
  })
})
