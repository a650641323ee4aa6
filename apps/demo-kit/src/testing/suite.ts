// The test every demo app runs: starts it as a child process (memory, SQLite, Redis) and drives it past its limits.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { hasRedis, type Running, startDemo, startRedis } from './spawn'

/**
 * Registers the demo tests for the demo app in `root` (a folder with `src/server.ts`), under `name`:
 * it starts with one command, refuses the sixth login with the right headers, charges searches by
 * their size, limits everything else at 100 a minute, stops on SIGTERM, keeps counts in SQLite across
 * a restart, limits through a throwaway redis-server, and rejects an unknown `FASTLIMIT_BACKEND`.
 */
export function demoSuite(name: string, root: string): void {
  const started: Running[] = []
  afterAll(async () => {
    for (const r of started.reverse()) await r.stop()
  })

  async function start(env?: Record<string, string>): Promise<Running> {
    const r = await startDemo(root, env)
    started.push(r)
    return r
  }

  const login = (base: string) =>
    fetch(`${base}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: 'demo', password: 'wrong' }),
    })

  /** Five logins pass (401: wrong password), the sixth is refused with the login rule's headers. */
  async function expectLoginLimit(base: string, already = 0): Promise<void> {
    for (let i = already; i < 5; i++) {
      const r = await login(base)
      expect(r.status).toBe(401)
      expect(r.headers.get('ratelimit-policy')).toBe('100;w=60, 5;w=900')
      expect(r.headers.get('ratelimit')).toMatch(new RegExp(`^limit=5, remaining=${4 - i}, reset=\\d+$`))
    }
    const refused = await login(base)
    expect(refused.status).toBe(429)
    expect(refused.headers.get('ratelimit-policy')).toBe('100;w=60, 5;w=900')
    expect(refused.headers.get('ratelimit')).toMatch(/^limit=5, remaining=0, reset=(\d+)$/)
    const retry = Number(refused.headers.get('retry-after'))
    expect(retry).toBeGreaterThan(0)
    expect(retry).toBeLessThanOrEqual(180) // 15 minutes / 5: one attempt comes back every 3 minutes
    expect(refused.headers.get('ratelimit')).toBe(`limit=5, remaining=0, reset=${retry}`)
    expect(refused.headers.get('content-type')).toBe('application/problem+json')
    expect(await refused.json()).toMatchObject({ status: 429, title: 'Too Many Requests' })
  }

  describe(`${name} (memory)`, () => {
    let demo: Running
    it('starts with one command on the port given', async () => {
      demo = await start()
      const r = await fetch(`${demo.base}/`)
      expect(r.status).toBe(200)
      expect(((await r.json()) as { backend: string }).backend).toBe('memory')
      expect(demo.output()).toContain('backend: memory')
    })

    it('refuses the sixth login in 15 minutes with 429, RateLimit and Retry-After', async () => {
      await expectLoginLimit(demo.base)
      const ok = await fetch(`${demo.base}/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: 'demo', password: 'demo' }),
      })
      expect(ok.status).toBe(429) // right password or not: the attempts are spent
    })

    it('charges searches by the results asked for', async () => {
      for (let i = 0; i < 3; i++) {
        const r = await fetch(`${demo.base}/search?q=fast&limit=100`)
        expect(r.status).toBe(200)
        expect(((await r.json()) as { cost: number }).cost).toBe(10)
        expect(r.headers.get('ratelimit-policy')).toBe('100;w=60, 30;w=60')
      }
      const refused = await fetch(`${demo.base}/search?q=fast&limit=100`)
      expect(refused.status).toBe(429)
      expect(refused.headers.get('ratelimit')).toMatch(/^limit=30, remaining=\d, reset=\d+$/)
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
    })

    it('never limits /health, and limits everything else at 100 a minute', async () => {
      for (let i = 0; i < 120; i++) {
        const r = await fetch(`${demo.base}/health`)
        expect(r.status).toBe(200)
        expect(r.headers.get('ratelimit')).toBeNull()
      }
      let refused: Response | undefined
      for (let i = 0; i < 300 && refused === undefined; i++) {
        const r = await fetch(`${demo.base}/`)
        if (r.status === 429) refused = r
        else expect(r.headers.get('ratelimit-policy')).toBe('100;w=60')
      }
      expect(refused?.headers.get('ratelimit')).toMatch(/^limit=100, remaining=0, reset=1$/)
      expect(refused?.headers.get('retry-after')).toBe('1')
    })

    it('stops on SIGTERM', async () => {
      await demo.stop()
      expect(demo.child.exitCode ?? demo.child.signalCode).not.toBeNull()
    })
  })

  describe(`${name} (FASTLIMIT_BACKEND=sqlite:...)`, () => {
    it('keeps counts in the SQLite file, across a restart', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'fastlimit-demo-'))
      try {
        const env = { FASTLIMIT_BACKEND: `sqlite:${join(dir, 'data', 'limits.db')}` }
        const first = await start(env)
        expect(first.output()).toContain('backend: SQLite at')
        for (let i = 0; i < 3; i++) expect((await login(first.base)).status).toBe(401)
        await first.stop()
        const second = await start(env)
        await expectLoginLimit(second.base, 3)
        await second.stop()
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    })
  })

  describe.skipIf(!hasRedis)(`${name} (FASTLIMIT_BACKEND=redis://...)`, () => {
    it('limits through Redis', async () => {
      const redis = await startRedis()
      started.push(redis)
      const demo = await start({ FASTLIMIT_BACKEND: redis.base })
      expect(demo.output()).toContain('backend: Redis at redis://127.0.0.1:')
      await expectLoginLimit(demo.base)
      await demo.stop()
    })
  })

  describe('FASTLIMIT_BACKEND', () => {
    it('rejects anything else with a clear message', async () => {
      await expect(startDemo(root, { FASTLIMIT_BACKEND: 'mongodb://x' })).rejects.toThrow(
        /is not a backend: use memory/,
      )
    })
  })
}
