// The playground in headless Chromium: the page loads, a pattern is chosen, and every panel's
// admitted counts equal what core's step functions compute here in Node; then a screenshot.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ALGORITHMS, type Algorithm, parseRule, type State, step } from '@fastlimit/core'
import { type Browser, chromium, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { arrivals, type Pattern, T0 } from '../src/traffic'
import { CHROMIUM, CHROMIUM_ARGS, type DevServer, ensureChromium, startVite } from './browser'

let server: DevServer
let browser: Browser
let page: Page
const errors: string[] = []

beforeAll(async () => {
  ensureChromium()
  server = await startVite()
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true })
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
  page.on('pageerror', (e) => errors.push(String(e)))
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text())
  })
})

afterAll(async () => {
  await browser?.close()
  await server?.stop()
})

interface Panel {
  algorithm: string
  admitted: number
  denied: number
  admittedSeries: number[]
  deniedSeries: number[]
}

async function panels(): Promise<Panel[]> {
  return page.$$eval('figure.panel', (figs) =>
    figs.map((f) => {
      const d = (f as HTMLElement).dataset
      const nums = (s: string | undefined) => (s ? s.split(',').map(Number) : [])
      return {
        algorithm: d.algorithm ?? '',
        admitted: Number(d.admitted),
        denied: Number(d.denied),
        admittedSeries: nums(d.admittedSeries),
        deniedSeries: nums(d.deniedSeries),
      }
    }),
  )
}

/** Admitted and denied per tick, straight from core's step (one client, cost 1), in Node. */
function expected(
  algorithm: Algorithm,
  times: number[],
  rule: { limit: number; window: string; burst?: number },
  tickMs: number,
  ticks: number,
) {
  const r = parseRule({ ...rule, algorithm })
  const admitted = new Array<number>(ticks).fill(0)
  const denied = new Array<number>(ticks).fill(0)
  let state: State | undefined
  for (const t of times) {
    const k = Math.floor((t - T0) / tickMs)
    if (k >= ticks) continue
    const out = step(state, t, r, 1)
    if (out.result.allowed) admitted[k] = (admitted[k] as number) + 1
    else denied[k] = (denied[k] as number) + 1
    if (out.result.allowed || out.rebased) state = out.state
  }
  return { admitted, denied }
}

async function choose(values: Record<string, string>): Promise<void> {
  const before = await page.getAttribute('#results', 'data-version')
  for (const [id, value] of Object.entries(values)) {
    if (id === 'pattern' || id === 'window') await page.selectOption(`#${id}`, value)
    else await page.fill(`#${id}`, value)
  }
  await page.waitForFunction((v) => document.getElementById('results')?.dataset.version !== v, before)
}

describe('playground in Chromium', () => {
  it('loads with every algorithm plotted', async () => {
    await page.goto(server.url)
    await page.waitForSelector('body[data-ready="true"]')
    const all = await panels()
    expect(all.map((p) => p.algorithm)).toEqual([...ALGORITHMS])
    expect(await page.title()).toContain('fastlimit playground')
  })

  for (const [pattern, rate, limit, window, burst] of [
    ['bursts', '8', '10', '1s', ''],
    ['steady', '15', '10', '1s', ''],
    ['ramp', '12', '100', '1m', '20'],
    ['sawtooth', '20', '50', '10s', '5'],
  ] as const) {
    it(`plots ${pattern} at ${rate}/s against ${limit}/${window}${burst ? ` burst ${burst}` : ''} as core computes it in Node`, async () => {
      await choose({ pattern, rate, duration: '60', limit, window, burst })
      expect(await page.getAttribute('#results', 'data-pattern')).toBe(pattern)
      const tickMs = Number(await page.getAttribute('#results', 'data-tick-ms'))
      const ticks = Math.ceil(60_000 / tickMs)
      const times = arrivals({ pattern: pattern as Pattern, rate: Number(rate), durationS: 60 })
      expect(Number(await page.getAttribute('#results', 'data-requests'))).toBe(times.length)
      const shown = await panels()
      expect(shown).toHaveLength(6)
      let denials = 0
      for (const p of shown) {
        const algorithm = p.algorithm as Algorithm
        const bucket = ['token-bucket', 'leaky-bucket', 'gcra'].includes(algorithm) && burst !== ''
        const rule = { limit: Number(limit), window, ...(bucket ? { burst: Number(burst) } : {}) }
        const want = expected(algorithm, times, rule, tickMs, ticks)
        expect({ algorithm, series: p.admittedSeries }).toEqual({ algorithm, series: want.admitted })
        expect(p.deniedSeries).toEqual(want.denied)
        expect(p.admitted).toBe(want.admitted.reduce((s, x) => s + x, 0))
        denials += p.denied
      }
      // The patterns are chosen to go over the limit: a test whose limit never bites could not fail.
      expect(denials).toBeGreaterThan(0)
    })
  }

  it('plots a pasted log, and shows a bad rule as an error instead of a chart', async () => {
    await choose({ pattern: 'log', limit: '2', window: '1s', burst: '' })
    const shown = await panels()
    // The sample log: 7 requests, at 0, 0, 1, 1.5, 2, 3 and 3.25 s.
    const times = [0, 0, 1000, 1500, 2000, 3000, 3250].map((t) => T0 + t)
    const tickMs = Number(await page.getAttribute('#results', 'data-tick-ms'))
    for (const p of shown) {
      const want = expected(
        p.algorithm as Algorithm,
        times,
        { limit: 2, window: '1s' },
        tickMs,
        p.admittedSeries.length,
      )
      expect(p.admittedSeries).toEqual(want.admitted)
    }
    expect(shown.reduce((s, p) => s + p.admitted + p.denied, 0)).toBe(7 * 6)
    await choose({ pattern: 'steady', rate: '5', limit: '0' })
    expect(await page.textContent('#status')).toContain('[fastlimit] [core]')
    expect(await panels()).toHaveLength(0)
  })

  it('takes a screenshot, with no error on the page', async () => {
    await choose({ pattern: 'bursts', rate: '8', duration: '60', limit: '10', window: '1s', burst: '' })
    const file =
      process.env.PLAYGROUND_SCREENSHOT ?? path.join(os.tmpdir(), `fastlimit-playground-${process.pid}.png`)
    await page.screenshot({ path: file, fullPage: true })
    const png = fs.readFileSync(file)
    expect(png.subarray(1, 4).toString()).toBe('PNG')
    expect(png.length).toBeGreaterThan(20_000)
    if (!process.env.PLAYGROUND_SCREENSHOT) fs.rmSync(file)
    expect(errors).toEqual([])
  })
})
