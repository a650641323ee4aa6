import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { connect } from 'node:net'
import { describe, expect, it, vi } from 'vitest'
import type { Backend } from '../backend'
import { FastLimit } from '../limiter'
import { MemoryBackend } from '../memory'
import { fakeClock } from '../testing'
import { createHttpLimiter, type HttpAdapter } from './http-limiter'
import type { RateLimitCommonOptions } from './options'
import { onResponseClose } from './outcome'

interface Req {
  key: string
}
interface Res {
  status: number
  headers: Record<string, string>
  ended?: () => void
}

const T0 = 1_700_000_040_000

function make(options: RateLimitCommonOptions<Req, Res>, hook = true) {
  const clock = fakeClock(T0)
  const limiter = new FastLimit({ backend: new MemoryBackend({ clock: clock.now, cleanupIntervalMs: 0 }) })
  const responseEnd = vi.fn((_req: Req, res: Res, end: () => void) => {
    res.ended = end
  })
  const adapter: HttpAdapter<Req, Res> = {
    name: 'test',
    remoteAddress: () => '203.0.113.7',
    header: () => undefined,
    method: () => 'GET',
    setHeader: (res, name, value) => {
      res.headers[name] = value
    },
    ...(hook ? { responseEnd } : {}),
  }
  const http = createHttpLimiter<Req, Res>(
    { limiter, clock: clock.now, key: (req) => req.key, rules: '3/min', ...options },
    adapter,
  )
  const rules = (options.rules ?? '3/min') as string
  const remaining = async (key = 'a') => (await limiter.peek(key, rules)).remaining
  return { limiter, http, responseEnd, remaining }
}

/** Runs one request; `respond` plays the handler (sets the status), then the response ends. */
async function send(
  http: ReturnType<typeof make>['http'],
  status: number,
  extra: Partial<Res> = {},
): Promise<{ res: Res; ran: boolean }> {
  const res: Res = { status: 0, headers: {}, ...extra }
  let ran = false
  await http.run(
    { key: 'a' },
    res,
    () => {
      ran = true
      res.status = status
    },
    () => undefined,
  )
  res.ended?.()
  // What was decided reaches the memory store within a few turns.
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r))
  return { res, ran }
}

describe('countWhen and settle in the HTTP layer', () => {
  it('keeps the plain check without them: no reservation, no response hook', async () => {
    const { limiter, http, responseEnd, remaining } = make({})
    const reserve = vi.spyOn(limiter, 'reserve')
    const check = vi.spyOn(limiter, 'check')
    await send(http, 200)
    await send(http, 500)
    expect(reserve).not.toHaveBeenCalled()
    expect(check).toHaveBeenCalledTimes(2)
    expect(responseEnd).not.toHaveBeenCalled()
    expect(await remaining()).toBe(1)
  })

  it('reserves, and refunds when countWhen says the request does not count, once per request', async () => {
    const seen: number[] = []
    const { limiter, http, responseEnd, remaining } = make({
      countWhen: (_req, res) => {
        seen.push(res.status)
        return res.status >= 400
      },
    })
    const reserve = vi.spyOn(limiter, 'reserve')
    for (const status of [200, 401, 200, 200, 500, 200]) await send(http, status)
    expect(seen).toEqual([200, 401, 200, 200, 500, 200])
    expect(reserve).toHaveBeenCalledTimes(6)
    expect(responseEnd).toHaveBeenCalledTimes(6)
    expect(await remaining()).toBe(1)
    // The headers of a response report its reservation.
    const { res } = await send(http, 200)
    expect(res.headers.ratelimit).toMatch(/^limit=3, remaining=0, /)
    // Refused: nothing reserved, no hook, countWhen not called.
    await send(http, 401)
    const refused = await send(http, 401)
    expect(refused.ran).toBe(false)
    expect(seen.length).toBe(8)
  })

  it('settles the cost the response reports; 0 refunds all; an unusable one keeps the reservation, with one warning', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    const registry = (globalThis as Record<symbol, unknown>)[Symbol.for('fastlimit.warnings')] as Set<string>
    registry.delete('settle-not-a-cost')
    try {
      const { http, remaining } = make({
        rules: '10/min',
        cost: () => 5,
        settle: (_req, res) => Number(res.headers['x-used']),
      })
      const { res } = await send(http, 200, { headers: { 'x-used': '1' } })
      expect(res.headers.ratelimit).toMatch(/^limit=10, remaining=5, /)
      expect(await remaining()).toBe(9)
      await send(http, 200, { headers: { 'x-used': '0' } })
      expect(await remaining()).toBe(9)
      await send(http, 200, { headers: { 'x-used': '7' } }) // more than reserved: charged
      expect(await remaining()).toBe(2)
      warn.mockClear()
      const { http: other, remaining: left } = make({ cost: () => 1, settle: () => Number.NaN })
      await send(other, 200)
      await send(other, 200)
      expect(await left()).toBe(1)
      expect(warn).toHaveBeenCalledTimes(1)
      expect(String(warn.mock.calls[0]?.[0])).toMatch(/settle returned NaN, not a whole number/)
    } finally {
      warn.mockRestore()
    }
  })

  it('decides when next() settles for an adapter without a response hook, errors included', async () => {
    const seen: number[] = []
    const { http, remaining } = make(
      {
        countWhen: (_req, res) => {
          seen.push(res.status)
          return false
        },
      },
      false,
    )
    const res: Res = { status: 0, headers: {} }
    await http.run(
      { key: 'a' },
      res,
      async () => {
        res.status = 201
      },
      () => undefined,
    )
    expect(seen).toEqual([201])
    expect(await remaining()).toBe(3)
    const failing = http.run(
      { key: 'a' },
      res,
      async () => {
        res.status = 500
        throw new Error('handler failed')
      },
      () => undefined,
    )
    await expect(failing).rejects.toThrow('handler failed')
    expect(seen).toEqual([201, 500])
    expect(await remaining()).toBe(3)
  })

  it('checks countWhen and settle, and that the backend can refund, when rateLimit() is called', () => {
    expect(() => make({ countWhen: true as never })).toThrow(
      /\[fastlimit\] \[test\] countWhen must be a function/,
    )
    expect(() => make({ settle: 3 as never })).toThrow(/\[fastlimit\] \[test\] settle must be a function/)
    const backend: Backend = { checkAndIncrement: () => Promise.reject(new Error('unused')) }
    expect(() =>
      createHttpLimiter<Req, Res>(
        { limiter: new FastLimit({ backend }), countWhen: () => true },
        {
          name: 'test',
          remoteAddress: () => '203.0.113.7',
          header: () => undefined,
          method: () => 'GET',
          setHeader: () => undefined,
        },
      ),
    ).toThrow(/countWhen and settle refund or charge after the response, which needs a backend with adjust/)
  })
})

describe('onResponseClose on a Node response', () => {
  it('ends once after the response is sent, and with 499 when the client leaves before it began', async () => {
    const ends: { status: number; sent: boolean }[] = []
    let closedEarly: () => void = () => undefined
    const early = new Promise<void>((resolve) => {
      closedEarly = resolve
    })
    const server = createServer((req: IncomingMessage, res: ServerResponse) => {
      onResponseClose(res, () => {
        ends.push({ status: res.statusCode, sent: res.headersSent })
        if (req.url === '/hang') closedEarly()
      })
      if (req.url === '/hang') return // answers nothing: the client gives up
      res.statusCode = 201
      res.end('ok')
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as AddressInfo
    try {
      const r = await fetch(`http://127.0.0.1:${port}/`)
      expect(r.status).toBe(201)
      await r.text()
      const socket = connect(port, '127.0.0.1')
      socket.write('GET /hang HTTP/1.1\r\nHost: x\r\n\r\n', () => setImmediate(() => socket.destroy()))
      await early
      expect(ends).toEqual([
        { status: 201, sent: true },
        { status: 499, sent: false },
      ])
    } finally {
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    }
  })
})
