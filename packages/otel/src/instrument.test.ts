// instrument() against the OpenTelemetry SDK's in-memory exporter: exact counts, bounded attributes,
// breaker, timeouts, spans, several limiters, and the options' errors.
import {
  type Backend,
  type BackendResult,
  type BucketConfig,
  FastLimit,
  FastlimitError,
  MemoryBackend,
} from '@fastlimit/core'
import { type Attributes, context, metrics, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import {
  AggregationTemporality,
  type DataPoint,
  type Histogram,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { afterEach, describe, expect, it } from 'vitest'
import { ATTRIBUTES as A, instrument, METRICS } from './index'

interface Point {
  name: string
  attributes: Attributes
  value: number | Histogram
}

/** A MeterProvider whose reader only exports when asked; `collect()` returns every data point. */
function setup() {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 })
  const meterProvider = new MeterProvider({ readers: [reader] })
  const collect = async (): Promise<Point[]> => {
    exporter.reset()
    await reader.forceFlush()
    const out: Point[] = []
    for (const rm of exporter.getMetrics()) {
      for (const sm of rm.scopeMetrics) {
        for (const m of sm.metrics) {
          for (const p of m.dataPoints as DataPoint<number | Histogram>[]) {
            out.push({ name: m.descriptor.name, attributes: p.attributes, value: p.value })
          }
        }
      }
    }
    return out
  }
  return { meterProvider, collect, shutdown: () => meterProvider.shutdown() }
}

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c()
})

function points(all: Point[], name: string, match: Attributes = {}): Point[] {
  return all.filter((p) => p.name === name && Object.entries(match).every(([k, v]) => p.attributes[k] === v))
}

function total(all: Point[], name: string, match: Attributes = {}): number {
  return points(all, name, match).reduce(
    (s, p) => s + (typeof p.value === 'number' ? p.value : p.value.count),
    0,
  )
}

const result = (allowed: boolean): BackendResult => ({
  allowed,
  limit: 10,
  remaining: allowed ? 9 : 0,
  resetMs: Date.now(),
  retryAfterMs: allowed ? 0 : 1000,
})

/** An asynchronous backend whose calls fail, hang or answer, as the test says. */
class ScriptedBackend implements Backend {
  readonly kind = 'scripted'
  mode: 'ok' | 'fail' | 'full' | 'hang' = 'ok'
  delayMs = 0
  readonly pending: Array<() => void> = []
  checkAndIncrement(_key: string, _bucket: BucketConfig, _cost: number): Promise<BackendResult> {
    if (this.mode === 'fail') return Promise.reject(new Error('connection refused'))
    if (this.mode === 'full')
      return Promise.reject(new FastlimitError('ERR_FASTLIMIT_STORE_FULL', '[fastlimit] [test] full'))
    if (this.mode === 'hang') return new Promise((resolve) => this.pending.push(() => resolve(result(true))))
    return new Promise((resolve) => setTimeout(() => resolve(result(true)), this.delayMs))
  }
}

describe('instrument: decisions', () => {
  it('counts every decision by outcome, reason, rule, source, operation and backend, never the identity', async () => {
    const { meterProvider, collect, shutdown } = setup()
    cleanups.push(shutdown)
    const limiter = new FastLimit()
    instrument(limiter, { meterProvider })
    const rule = { limit: 3, window: '1m', algorithm: 'fixed-window', name: 'login' } as const
    for (let i = 0; i < 5; i++) await limiter.check('alice@example.com', rule)
    await limiter.check('bob', rule, { mode: 'shadow' })
    for (let i = 0; i < 3; i++) await limiter.check('bob', rule, { mode: 'shadow' })
    await limiter.peek('alice@example.com', rule)
    const all = await collect()
    const d = METRICS.decisions
    const base = { [A.rule]: 'login', [A.backend]: 'memory', [A.source]: 'backend' }
    expect(total(all, d, { ...base, [A.operation]: 'check', [A.outcome]: 'allowed', [A.reason]: 'ok' })).toBe(
      6,
    )
    expect(
      total(all, d, { ...base, [A.operation]: 'check', [A.outcome]: 'denied', [A.reason]: 'rate-limited' }),
    ).toBe(2)
    expect(
      total(all, d, {
        ...base,
        [A.operation]: 'check',
        [A.outcome]: 'would-deny',
        [A.reason]: 'rate-limited',
      }),
    ).toBe(1)
    expect(total(all, d, { ...base, [A.operation]: 'peek', [A.outcome]: 'denied' })).toBe(1)
    expect(total(all, d)).toBe(10)
    for (const p of all) {
      for (const v of Object.values(p.attributes)) {
        expect(String(v)).not.toContain('alice')
        expect(String(v)).not.toBe('bob')
      }
    }
    // Exactly the documented attribute keys on the decisions counter.
    for (const p of points(all, d)) {
      expect(Object.keys(p.attributes).sort()).toEqual(
        [A.backend, A.operation, A.outcome, A.reason, A.rule, A.source].sort(),
      )
    }
  })

  it('names the deciding rule of several, and cost-exceeds-limit', async () => {
    const { meterProvider, collect, shutdown } = setup()
    cleanups.push(shutdown)
    const limiter = new FastLimit({ algorithm: 'fixed-window' })
    instrument(limiter, { meterProvider })
    const rules = [
      { limit: 2, window: '1s', name: 'burst' },
      { limit: 100, window: '1h', name: 'hourly' },
    ]
    for (let i = 0; i < 3; i++) await limiter.check('k', rules)
    await limiter.check('k2', rules, { cost: 5 })
    const all = await collect()
    expect(
      total(all, METRICS.decisions, { [A.outcome]: 'denied', [A.rule]: 'burst', [A.reason]: 'rate-limited' }),
    ).toBe(1)
    expect(total(all, METRICS.decisions, { [A.reason]: 'cost-exceeds-limit', [A.rule]: 'burst' })).toBe(1)
    expect(total(all, METRICS.decisions, { [A.outcome]: 'allowed' })).toBe(2)
  })

  it('caps distinct rule names at maxRuleNames and folds the rest into other, keeping the total', async () => {
    const { meterProvider, collect, shutdown } = setup()
    cleanups.push(shutdown)
    const limiter = new FastLimit()
    instrument(limiter, { meterProvider, maxRuleNames: 3 })
    for (let t = 0; t < 20; t++) {
      for (let i = 0; i < 2; i++)
        await limiter.check(`user-${t}`, { limit: 10, window: '1m', name: `tenant-${t}` })
    }
    const all = await collect()
    const names = new Set(points(all, METRICS.decisions).map((p) => p.attributes[A.rule]))
    expect([...names].sort()).toEqual(['other', 'tenant-0', 'tenant-1', 'tenant-2'])
    expect(total(all, METRICS.decisions, { [A.rule]: 'other' })).toBe(34)
    expect(total(all, METRICS.decisions)).toBe(40)
  })

  it('tells policy and fallback decisions apart, counts errors by code, and the breaker', async () => {
    const { meterProvider, collect, shutdown } = setup()
    cleanups.push(shutdown)
    const backend = new ScriptedBackend()
    const closed = new FastLimit({
      backend,
      onBackendError: 'fail-closed',
      breaker: { failures: 3, openMs: 60_000 },
    })
    instrument(closed, { meterProvider, attributes: { 'fastlimit.limiter': 'closed' } })
    backend.mode = 'fail'
    for (let i = 0; i < 5; i++) await closed.check('x', '10/s')
    let all = await collect()
    const mine = { 'fastlimit.limiter': 'closed', [A.backend]: 'scripted' }
    expect(
      total(all, METRICS.decisions, {
        ...mine,
        [A.outcome]: 'denied',
        [A.reason]: 'fail-closed',
        [A.source]: 'policy',
      }),
    ).toBe(5)
    // Three failures open the breaker; the two calls after it never reach the store.
    expect(total(all, METRICS.errors, { ...mine, [A.errorType]: 'ERR_FASTLIMIT_BACKEND' })).toBe(3)
    expect(total(all, METRICS.callDuration, { ...mine, [A.callOutcome]: 'error', [A.sync]: false })).toBe(3)
    expect(total(all, METRICS.breakerTransitions, { ...mine, [A.breakerState]: 'open' })).toBe(1)
    expect(total(all, METRICS.breakerState, { ...mine, [A.breakerState]: 'open' })).toBe(1)
    expect(total(all, METRICS.breakerState, { ...mine, [A.breakerState]: 'closed' })).toBe(0)

    const other = new ScriptedBackend()
    other.mode = 'full'
    const fallback = new FastLimit({ backend: other, onBackendError: { fallback: new MemoryBackend() } })
    instrument(fallback, { meterProvider, attributes: { 'fastlimit.limiter': 'fallback' } })
    await fallback.check('y', '10/s')
    all = await collect()
    const theirs = { 'fastlimit.limiter': 'fallback' }
    expect(total(all, METRICS.decisions, { ...theirs, [A.source]: 'fallback', [A.outcome]: 'allowed' })).toBe(
      1,
    )
    expect(total(all, METRICS.errors, { ...theirs, [A.errorType]: 'ERR_FASTLIMIT_STORE_FULL' })).toBe(1)
    expect(total(all, METRICS.breakerState, { ...theirs, [A.breakerState]: 'closed' })).toBe(1)
  })
})

describe('instrument: backend calls', () => {
  it('records every call with its duration, operation, outcome and path', async () => {
    const { meterProvider, collect, shutdown } = setup()
    cleanups.push(shutdown)
    const memory = new FastLimit()
    instrument(memory, { meterProvider, syncCalls: true, attributes: { 'fastlimit.limiter': 'memory' } })
    for (let i = 0; i < 7; i++) await memory.check(`k${i}`, '10/s')
    await memory.reset('k1')
    const reservation = await memory.reserve('k2', '10/s', { cost: 3 })
    await reservation.settle(1)
    const backend = new ScriptedBackend()
    backend.delayMs = 30
    const slow = new FastLimit({ backend })
    instrument(slow, { meterProvider, attributes: { 'fastlimit.limiter': 'slow' } })
    await slow.check('a', '10/s')
    const all = await collect()
    const d = METRICS.callDuration
    const sync = points(all, d, { 'fastlimit.limiter': 'memory', [A.operation]: 'check', [A.sync]: true })
    expect(sync).toHaveLength(1)
    expect((sync[0]!.value as Histogram).count).toBe(8)
    expect(total(all, d, { 'fastlimit.limiter': 'memory', [A.operation]: 'reset', [A.sync]: false })).toBe(1)
    expect(total(all, d, { 'fastlimit.limiter': 'memory', [A.operation]: 'adjust', [A.sync]: true })).toBe(1)
    const [asyncPoint] = points(all, d, {
      'fastlimit.limiter': 'slow',
      [A.callOutcome]: 'ok',
      [A.sync]: false,
    })
    const h = asyncPoint?.value as Histogram
    expect(h.count).toBe(1)
    // A lower bound only (a loaded machine is slower, never faster): the 30 ms wait is in seconds.
    expect(h.sum).toBeGreaterThanOrEqual(0.025)
    expect(h.sum).toBeLessThan(30)
  })

  it('records a timeout as outcome timeout, and counts calls in flight', async () => {
    const { meterProvider, collect, shutdown } = setup()
    cleanups.push(shutdown)
    const backend = new ScriptedBackend()
    backend.mode = 'hang'
    const limiter = new FastLimit({ backend, timeoutMs: 50 })
    instrument(limiter, { meterProvider })
    const decisions = [limiter.check('a', '10/s'), limiter.check('b', '10/s'), limiter.check('c', '10/s')]
    let all = await collect()
    expect(total(all, METRICS.inFlight)).toBe(3)
    await Promise.all(decisions)
    all = await collect()
    expect(
      total(all, METRICS.callDuration, {
        [A.callOutcome]: 'timeout',
        [A.errorType]: 'ERR_FASTLIMIT_TIMEOUT',
      }),
    ).toBe(3)
    expect(total(all, METRICS.decisions, { [A.reason]: 'fail-open', [A.source]: 'policy' })).toBe(3)
    // Timed-out calls stay in flight until the store answers them.
    expect(total(all, METRICS.inFlight)).toBe(3)
    for (const answer of backend.pending.splice(0)) answer()
    await new Promise((r) => setTimeout(r, 10))
    all = await collect()
    expect(total(all, METRICS.inFlight)).toBe(0)
  })

  it('by default times no call of a backend with the fast path, and still counts its decisions', async () => {
    const { meterProvider, collect, shutdown } = setup()
    cleanups.push(shutdown)
    const limiter = new FastLimit()
    instrument(limiter, { meterProvider })
    for (let i = 0; i < 4; i++) await limiter.check('k', '10/s')
    const all = await collect()
    expect(total(all, METRICS.callDuration)).toBe(0)
    expect(total(all, METRICS.decisions)).toBe(4)
  })
})

describe('instrument: spans', () => {
  it('records a span per call to the store, child of the active span, with its real times', async () => {
    const contextManager = new AsyncLocalStorageContextManager().enable()
    context.setGlobalContextManager(contextManager)
    cleanups.push(() => context.disable())
    const exporter = new InMemorySpanExporter()
    const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
    const { meterProvider, shutdown } = setup()
    cleanups.push(shutdown)
    const backend = new ScriptedBackend()
    backend.delayMs = 20
    const limiter = new FastLimit({ backend, timeoutMs: 5000 })
    instrument(limiter, { meterProvider, tracerProvider, spans: true })
    const tracer = tracerProvider.getTracer('test')
    await tracer.startActiveSpan('request', async (parent) => {
      await limiter.check('a', '10/s')
      parent.end()
    })
    backend.mode = 'fail'
    await limiter.check('a', '10/s')
    const spans = exporter.getFinishedSpans()
    const calls = spans.filter((s) => s.name === 'fastlimit check')
    expect(calls).toHaveLength(2)
    const request = spans.find((s) => s.name === 'request')
    const [ok, failed] = calls
    expect(ok?.parentSpanContext?.spanId).toBe(request?.spanContext().spanId)
    expect(ok?.attributes[A.backend]).toBe('scripted')
    const ms = (t: [number, number]) => t[0] * 1000 + t[1] / 1e6
    expect(
      ms(ok?.endTime as [number, number]) - ms(ok?.startTime as [number, number]),
    ).toBeGreaterThanOrEqual(15)
    expect(failed?.status.code).toBe(2) // SpanStatusCode.ERROR
    expect(failed?.attributes[A.errorType]).toBe('ERR_FASTLIMIT_BACKEND')
    await tracerProvider.shutdown()
  })

  it('records no span unless asked', async () => {
    const exporter = new InMemorySpanExporter()
    const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
    const { meterProvider, shutdown } = setup()
    cleanups.push(shutdown)
    const limiter = new FastLimit()
    instrument(limiter, { meterProvider, tracerProvider })
    await limiter.check('a', '10/s')
    expect(exporter.getFinishedSpans()).toHaveLength(0)
  })
})

describe('instrument: lifecycle and options', () => {
  it('uses the global MeterProvider by default, and stops recording when uninstrumented', async () => {
    const { meterProvider, collect, shutdown } = setup()
    metrics.setGlobalMeterProvider(meterProvider)
    cleanups.push(shutdown, () => metrics.disable())
    const limiter = new FastLimit({ backend: new ScriptedBackend() })
    const uninstrument = instrument(limiter)
    await limiter.check('a', '10/s')
    await limiter.check('a', '10/s')
    let all = await collect()
    expect(total(all, METRICS.decisions)).toBe(2)
    expect(total(all, METRICS.callDuration)).toBe(2)
    uninstrument()
    uninstrument()
    await limiter.check('a', '10/s')
    all = await collect()
    // Cumulative series keep their last value; the check after uninstrument() is in none of them.
    expect(total(all, METRICS.decisions)).toBe(2)
    expect(total(all, METRICS.callDuration)).toBe(2)
  })

  it('adds up limiters with the same attributes, and keeps limiters with their own apart', async () => {
    const { meterProvider, collect, shutdown } = setup()
    cleanups.push(shutdown)
    const a = new FastLimit()
    const b = new FastLimit()
    const c = new FastLimit()
    instrument(a, { meterProvider })
    const offB = instrument(b, { meterProvider })
    instrument(c, { meterProvider, attributes: { 'fastlimit.limiter': 'c' } })
    await a.check('x', '10/s')
    await b.check('x', '10/s')
    await b.check('x', '10/s')
    await c.check('x', '10/s')
    let all = await collect()
    const plain = points(all, METRICS.decisions).filter(
      (p) => p.attributes['fastlimit.limiter'] === undefined,
    )
    expect(plain).toHaveLength(1)
    expect(plain[0]?.value).toBe(3)
    expect(total(all, METRICS.decisions, { 'fastlimit.limiter': 'c' })).toBe(1)
    expect(points(all, METRICS.breakerState, { [A.breakerState]: 'closed' })).toHaveLength(2)
    offB()
    await b.check('x', '10/s')
    await a.check('x', '10/s')
    all = await collect()
    expect(total(all, METRICS.decisions)).toBe(5)
  })

  it('fails early, naming the package, on a bad limiter or option', () => {
    const limiter = new FastLimit()
    expect(() => instrument({} as FastLimit)).toThrow(
      /\[fastlimit\] \[otel\] instrument\(\) needs a FastLimit/,
    )
    expect(() => instrument(limiter, { spans: 'yes' } as never)).toThrow(/spans must be true or false/)
    expect(() => instrument(limiter, { maxRuleNames: 0 })).toThrow(/maxRuleNames must be a whole number/)
    expect(() => instrument(limiter, { meterProvider: {} as never })).toThrow(/MeterProvider/)
    expect(() => instrument(limiter, { meter: 1 } as never)).toThrow(/Unknown instrument\(\) option "meter"/)
    expect(() => instrument(limiter, { attributes: [] as never })).toThrow(/attributes must be an object/)
  })

  it('records nothing and costs no error without any SDK (the API is a no-op)', async () => {
    const limiter = new FastLimit()
    const off = instrument(limiter)
    const d = await limiter.check('a', '1/s')
    expect(d.allowed).toBe(true)
    off()
    expect(trace.getTracerProvider()).toBeDefined()
  })
})
