// instrument(limiter): OpenTelemetry metrics (and optional spans) from a FastLimit's events.
import type {
  BackendCallEvent,
  BreakerEvent,
  BreakerState,
  DecisionEvent,
  FastLimit,
  FastlimitError,
} from '@fastlimit/core'
import { ConfigError } from '@fastlimit/core'
import {
  type Attributes,
  type BatchObservableResult,
  type Counter,
  context,
  type Histogram,
  type Meter,
  type MeterProvider,
  metrics,
  type ObservableCounter,
  type ObservableGauge,
  type ObservableUpDownCounter,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  type TracerProvider,
  trace,
} from '@opentelemetry/api'
import { ATTRIBUTES as A, METRICS, OTHER_RULE } from './names'

/** Options of {@link instrument}. */
export interface InstrumentOptions {
  /**
   * Where the metrics go.
   * @default the global MeterProvider (`metrics.getMeterProvider()` of `@opentelemetry/api`)
   */
  meterProvider?: MeterProvider
  /**
   * Where the spans go (only with `spans: true`).
   * @default the global TracerProvider (`trace.getTracerProvider()` of `@opentelemetry/api`)
   */
  tracerProvider?: TracerProvider
  /**
   * Records a span for every call to the store (`fastlimit check`, `fastlimit peek`, `fastlimit reset`, `fastlimit adjust`),
   * with its real start and end times, as a child of the span active when `check` was called. Calls
   * the breaker or `maxInFlight` kept off the store are not calls and get no span.
   * @default false
   */
  spans?: boolean
  /**
   * Also records calls decided on the synchronous fast path (MemoryBackend, SQLiteBackend without a
   * lock wait) in the duration histogram and as spans. Off by default because it costs far more than
   * the calls: core times every call once anyone listens to calls (two clock reads), and the
   * OpenTelemetry SDK hashes the attributes of every histogram measurement (1 to 3 µs), where a
   * MemoryBackend check takes well under a microsecond (the bench measured a check 4.8 times as
   * expensive). While it is off, decisions made on the fast path are not timed at all (core listens
   * with `{ sync: false }`), but calls that leave it are: SQLite's lock waits, and every call to an
   * asynchronous backend (Redis). Failures are always counted (`fastlimit.backend.errors`).
   * @default false
   */
  syncCalls?: boolean
  /**
   * The most distinct rule names the `fastlimit.rule` attribute takes; decisions of further rules are
   * counted under `'other'`. Bounds the number of series when rules are built per tenant.
   * @default 100
   */
  maxRuleNames?: number
  /**
   * Attributes added to every measurement, to tell limiters apart on one MeterProvider
   * (e.g. `{ 'fastlimit.limiter': 'api' }`). Keep the values few and fixed; never an identity.
   * Two limiters instrumented with the same attributes and backend kind add up into the same series.
   * @default {}
   */
  attributes?: Attributes
}

/** The name and version the meter and tracer are created with. */
const SCOPE = '@fastlimit/otel'
const OPTION_NAMES = ['meterProvider', 'tracerProvider', 'spans', 'syncCalls', 'maxRuleNames', 'attributes']
const DEFAULT_MAX_RULE_NAMES = 100
/** Seconds: from a MemoryBackend call (about a microsecond) to a timeout at the default 1 s and beyond. */
const DURATION_BOUNDARIES = [
  0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
  0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
]

const OUTCOMES = ['allowed', 'denied', 'would-deny'] as const
const REASONS = ['ok', 'rate-limited', 'cost-exceeds-limit', 'fail-open', 'fail-closed'] as const
const SOURCES = ['backend', 'fallback', 'policy'] as const
const DECISION_OPERATIONS = ['check', 'peek'] as const
const CALL_OPERATIONS = ['check', 'peek', 'reset', 'adjust'] as const
const BREAKER_STATES: readonly BreakerState[] = ['closed', 'open', 'half-open']
/** Cells per rule: outcome x reason x source x operation. */
const CELLS = OUTCOMES.length * REASONS.length * SOURCES.length * DECISION_OPERATIONS.length

function reasonIndex(reason: string): number {
  switch (reason) {
    case 'ok':
      return 0
    case 'rate-limited':
      return 1
    case 'cost-exceeds-limit':
      return 2
    case 'fail-open':
      return 3
    default:
      return 4
  }
}

/** The attribute values of a decision cell, from its index. */
function cellAttributes(index: number): Attributes {
  let i = index
  const op = i % DECISION_OPERATIONS.length
  i = (i - op) / DECISION_OPERATIONS.length
  const source = i % SOURCES.length
  i = (i - source) / SOURCES.length
  const reason = i % REASONS.length
  const outcome = (i - reason) / REASONS.length
  return {
    [A.outcome]: OUTCOMES[outcome] as string,
    [A.reason]: REASONS[reason] as string,
    [A.source]: SOURCES[source] as string,
    [A.operation]: DECISION_OPERATIONS[op] as string,
  }
}

/** One instrumented limiter, as the collection callbacks of its meter see it. */
interface Source {
  /** Its constant attributes (the user's and the backend kind), and their stable text. */
  readonly base: Attributes
  readonly baseKey: string
  /** Decision counts per rule name (cells indexed as in {@link cellAttributes}). */
  readonly rules: Map<string, Float64Array>
  readonly breakerState: () => BreakerState
  readonly inFlight: () => number
}

/** The instruments of one meter, shared by every limiter instrumented on it. */
interface Shared {
  readonly sources: Set<Source>
  /** The final decision counts of uninstrumented limiters, so that every counter series stays monotonic. */
  readonly retired: Map<string, { value: number; attributes: Attributes }>
  readonly decisions: ObservableCounter
  readonly breakerState: ObservableGauge
  readonly inFlight: ObservableUpDownCounter
  readonly callDuration: Histogram
  readonly errors: Counter
  readonly transitions: Counter
  readonly collect: (result: BatchObservableResult) => void
}

const shared = new WeakMap<Meter, Shared>()

/** Adds a limiter's decision counts into `counts`, by attribute set. */
function addCounts(source: Source, counts: Map<string, { value: number; attributes: Attributes }>): void {
  for (const [rule, cells] of source.rules) {
    for (let i = 0; i < CELLS; i++) {
      const n = cells[i] as number
      if (n === 0) continue
      const key = `${source.baseKey}\u0000${rule}\u0000${i}`
      const seen = counts.get(key)
      if (seen !== undefined) seen.value += n
      else counts.set(key, { value: n, attributes: { ...source.base, ...cellAttributes(i), [A.rule]: rule } })
    }
  }
}

function sharedOf(meter: Meter): Shared {
  let s = shared.get(meter)
  if (s !== undefined) return s
  const sources = new Set<Source>()
  const retired = new Map<string, { value: number; attributes: Attributes }>()
  const decisions = meter.createObservableCounter(METRICS.decisions, {
    description: 'Rate-limit decisions, by outcome, reason, rule, source and operation.',
    unit: '{decision}',
  })
  const breakerState = meter.createObservableGauge(METRICS.breakerState, {
    description: "The circuit breaker's state: 1 on the current state's series, 0 on the others.",
    unit: '1',
  })
  const inFlight = meter.createObservableUpDownCounter(METRICS.inFlight, {
    description: 'Calls to an asynchronous store not yet answered (timed-out ones included).',
    unit: '{call}',
  })
  const callDuration = meter.createHistogram(METRICS.callDuration, {
    description: 'Duration of calls to the rate-limit store, until their answer, failure or timeout.',
    unit: 's',
    advice: { explicitBucketBoundaries: DURATION_BOUNDARIES },
  })
  const errors = meter.createCounter(METRICS.errors, {
    description: 'Failed or timed-out calls to the rate-limit store, by error code.',
    unit: '{error}',
  })
  const transitions = meter.createCounter(METRICS.breakerTransitions, {
    description: 'Transitions of the circuit breaker, by the state entered.',
    unit: '{transition}',
  })
  const collect = (result: BatchObservableResult): void => {
    // Limiters with the same constant attributes add up (gauge: 1 if any of them is in that state).
    const counts = new Map<string, { value: number; attributes: Attributes }>()
    for (const [key, c] of retired) counts.set(key, { value: c.value, attributes: c.attributes })
    const states = new Map<string, { value: number; attributes: Attributes }>()
    const flights = new Map<string, { value: number; attributes: Attributes }>()
    for (const source of sources) {
      for (const [rule, cells] of source.rules) {
        for (let i = 0; i < CELLS; i++) {
          const n = cells[i] as number
          if (n === 0) continue
          const key = `${source.baseKey}\u0000${rule}\u0000${i}`
          const seen = counts.get(key)
          if (seen !== undefined) seen.value += n
          else
            counts.set(key, {
              value: n,
              attributes: { ...source.base, ...cellAttributes(i), [A.rule]: rule },
            })
        }
      }
      const now = source.breakerState()
      for (const state of BREAKER_STATES) {
        const key = `${source.baseKey}\u0000${state}`
        const value = state === now ? 1 : 0
        const seen = states.get(key)
        if (seen !== undefined) seen.value = Math.max(seen.value, value)
        else states.set(key, { value, attributes: { ...source.base, [A.breakerState]: state } })
      }
      const seen = flights.get(source.baseKey)
      if (seen !== undefined) seen.value += source.inFlight()
      else flights.set(source.baseKey, { value: source.inFlight(), attributes: source.base })
    }
    for (const c of counts.values()) result.observe(decisions, c.value, c.attributes)
    for (const c of states.values()) result.observe(breakerState, c.value, c.attributes)
    for (const c of flights.values()) result.observe(inFlight, c.value, c.attributes)
  }
  s = { sources, retired, decisions, breakerState, inFlight, callDuration, errors, transitions, collect }
  shared.set(meter, s)
  return s
}

/** Whether a backend offers the synchronous fast path (as core's `isSyncBackend` decides). */
function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return 'a function'
  if (Array.isArray(value)) return 'an array'
  if (value === null) return 'null'
  if (typeof value === 'object') return 'an object'
  return String(value)
}

function validate(limiter: unknown, options: unknown): asserts options is InstrumentOptions {
  if (
    typeof limiter !== 'object' ||
    limiter === null ||
    typeof (limiter as { on?: unknown }).on !== 'function'
  ) {
    throw new ConfigError(
      `[fastlimit] [otel] instrument() needs a FastLimit from @fastlimit/core (with on(event, listener)), got ${show(limiter)}. ` +
        'Pass the limiter your middleware uses: instrument(limiter).',
    )
  }
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new ConfigError(`[fastlimit] [otel] instrument() options must be an object, got ${show(options)}.`)
  }
  const o = options as Record<string, unknown>
  for (const key of Object.keys(o)) {
    if (!OPTION_NAMES.includes(key)) {
      throw new ConfigError(
        `[fastlimit] [otel] Unknown instrument() option ${show(key)}: it takes ${OPTION_NAMES.join(', ')}.`,
      )
    }
  }
  if (o.meterProvider !== undefined && typeof (o.meterProvider as MeterProvider).getMeter !== 'function') {
    throw new ConfigError(
      '[fastlimit] [otel] meterProvider must be an OpenTelemetry MeterProvider (with getMeter), e.g. new MeterProvider({ readers }) from @opentelemetry/sdk-metrics.',
    )
  }
  if (
    o.tracerProvider !== undefined &&
    typeof (o.tracerProvider as TracerProvider).getTracer !== 'function'
  ) {
    throw new ConfigError(
      '[fastlimit] [otel] tracerProvider must be an OpenTelemetry TracerProvider (with getTracer).',
    )
  }
  for (const key of ['spans', 'syncCalls'] as const) {
    if (o[key] !== undefined && typeof o[key] !== 'boolean') {
      throw new ConfigError(`[fastlimit] [otel] ${key} must be true or false, got ${show(o[key])}.`)
    }
  }
  const max = o.maxRuleNames
  if (max !== undefined && (!Number.isSafeInteger(max) || (max as number) < 1 || (max as number) > 10_000)) {
    throw new ConfigError(
      `[fastlimit] [otel] maxRuleNames must be a whole number from 1 to 10000, got ${show(max)}. For example 100.`,
    )
  }
  const attrs = o.attributes
  if (attrs !== undefined && (typeof attrs !== 'object' || attrs === null || Array.isArray(attrs))) {
    throw new ConfigError(
      `[fastlimit] [otel] attributes must be an object of attribute values, got ${show(attrs)}. For example { 'fastlimit.limiter': 'api' }.`,
    )
  }
}

/**
 * Records OpenTelemetry metrics of a limiter (and, with `spans: true`, a span per call to its store),
 * through `@opentelemetry/api`, from the limiter's events:
 *
 * - `fastlimit.decisions` (counter): every decision of `check` and `peek`, by `fastlimit.outcome`
 *   (`allowed`, `denied`, or `would-deny` for a denial in shadow mode), `fastlimit.reason`,
 *   `fastlimit.rule` (the deciding rule's name), `fastlimit.source`, `fastlimit.operation` and
 *   `fastlimit.backend`. Counted in the process and reported when the reader collects, so a decision
 *   costs an array increment.
 * - `fastlimit.backend.call.duration` (histogram, seconds): each call to the store, by operation,
 *   `fastlimit.call.outcome` (`ok`, `error`, `timeout`), `fastlimit.sync` and `error.type`.
 * - `fastlimit.backend.errors` (counter): failed or timed-out calls, by `error.type` (the error code:
 *   `ERR_FASTLIMIT_STORE_FULL`, `ERR_FASTLIMIT_TIMEOUT`, ...).
 * - `fastlimit.breaker.state` (gauge) and `fastlimit.breaker.transitions` (counter).
 * - `fastlimit.backend.in_flight` (up-down counter): calls to the store not yet answered.
 *
 * No attribute ever holds an identity, and rule names are capped by `maxRuleNames`.
 *
 * @returns a function that stops recording (idempotent)
 * @throws ConfigError when `limiter` is not a FastLimit or an option is invalid
 * @example
 * ```ts
 * import { FastLimit } from '@fastlimit/core'
 * import { instrument } from '@fastlimit/otel'
 *
 * const limiter = new FastLimit({ backend })
 * const uninstrument = instrument(limiter)          // the global MeterProvider
 * ```
 */
export function instrument(limiter: FastLimit, options: InstrumentOptions = {}): () => void {
  validate(limiter, options)
  const {
    meterProvider = metrics.getMeterProvider(),
    tracerProvider,
    spans = false,
    syncCalls = false,
    maxRuleNames = DEFAULT_MAX_RULE_NAMES,
    attributes = {},
  } = options
  const meter = meterProvider.getMeter(SCOPE)
  const s = sharedOf(meter)
  const kind = (limiter.backend as { kind?: unknown } | undefined)?.kind
  const backend = typeof kind === 'string' && kind !== '' ? kind : 'custom'
  const base: Attributes = { ...attributes, [A.backend]: backend }
  const baseKey = JSON.stringify(Object.entries(base).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
  const rules = new Map<string, Float64Array>()

  /** The cells of a rule name not seen before: its own until `maxRuleNames` names, then `'other'`'s. */
  const slot = (name: string): Float64Array => {
    let cells: Float64Array | undefined
    if (rules.size < maxRuleNames) {
      cells = new Float64Array(CELLS)
    } else {
      cells = rules.get(OTHER_RULE)
      if (cells === undefined) {
        cells = new Float64Array(CELLS)
        rules.set(OTHER_RULE, cells)
      }
    }
    rules.set(name, cells)
    return cells
  }
  // The last rule's cells, so that the common case (the same rule again) skips the map.
  let lastName = ''
  let lastCells: Float64Array | undefined
  const onDecision = (e: DecisionEvent): void => {
    const d = e.decision
    const outcome = d.allowed ? 0 : e.mode === 'shadow' ? 2 : 1
    const src = d.source === 'backend' ? 0 : d.source === 'fallback' ? 1 : 2
    const op = e.operation === 'peek' ? 1 : 0
    const name = d.rule.name
    let cells = lastCells
    if (name !== lastName || cells === undefined) {
      cells = rules.get(name) ?? slot(name)
      lastName = name
      lastCells = cells
    }
    ;(cells[((outcome * REASONS.length + reasonIndex(d.reason)) * SOURCES.length + src) * 2 + op] as number)++
  }
  const reported: Source = {
    base,
    baseKey,
    // Read at each collection (a limiter-like object without them reports closed and 0).
    breakerState: () => limiter.breakerState ?? 'closed',
    inFlight: () => (typeof limiter.inFlight === 'number' ? limiter.inFlight : 0),
    // Each array once: under its own name, or 'other' for the names folded into it.
    get rules() {
      const out = new Map<string, Float64Array>()
      const other = rules.get(OTHER_RULE)
      for (const [name, cells] of rules) {
        if (cells === other) out.set(OTHER_RULE, cells)
        else out.set(name, cells)
      }
      return out
    },
  }

  // Histogram attributes of successful calls, by operation and path; failures' by code, on demand.
  const okAttributes: Attributes[] = []
  for (const operation of CALL_OPERATIONS) {
    for (const sync of [false, true]) {
      okAttributes.push({ ...base, [A.operation]: operation, [A.callOutcome]: 'ok', [A.sync]: sync })
    }
  }
  const failedAttributes = new Map<string, Attributes>()
  const failed = (operation: string, sync: boolean, error: FastlimitError): Attributes => {
    const key = `${operation}\u0000${sync}\u0000${error.code}`
    let a = failedAttributes.get(key)
    if (a === undefined) {
      a = {
        ...base,
        [A.operation]: operation,
        [A.callOutcome]: error.code === 'ERR_FASTLIMIT_TIMEOUT' ? 'timeout' : 'error',
        [A.sync]: sync,
        [A.errorType]: error.code,
      }
      failedAttributes.set(key, a)
    }
    return a
  }
  const tracer: Tracer | undefined = spans
    ? (tracerProvider ?? trace.getTracerProvider()).getTracer(SCOPE)
    : undefined
  const histogram = s.callDuration
  const onCall = (e: BackendCallEvent): void => {
    const error = e.error
    const sync = e.sync
    if (sync && !syncCalls) return
    const attrs =
      error === undefined
        ? (okAttributes[
            (e.operation === 'check' ? 0 : e.operation === 'peek' ? 1 : e.operation === 'reset' ? 2 : 3) * 2 +
              (sync ? 1 : 0)
          ] as Attributes)
        : failed(e.operation, sync, error)
    histogram.record(e.durationMs / 1000, attrs)
    if (tracer !== undefined) {
      const end = performance.timeOrigin + performance.now()
      const span = tracer.startSpan(
        `fastlimit ${e.operation}`,
        {
          kind: sync ? SpanKind.INTERNAL : SpanKind.CLIENT,
          startTime: end - e.durationMs,
          attributes: attrs,
        },
        context.active(),
      )
      if (error !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: error.message })
      span.end(end)
    }
  }
  const errorAttributes = new Map<string, Attributes>()
  const onError = (error: FastlimitError): void => {
    let a = errorAttributes.get(error.code)
    if (a === undefined) {
      a = { ...base, [A.errorType]: error.code }
      errorAttributes.set(error.code, a)
    }
    s.errors.add(1, a)
  }
  const transitionAttributes = new Map<BreakerState, Attributes>(
    BREAKER_STATES.map((state) => [state, { ...base, [A.breakerState]: state }]),
  )
  const onBreaker = (e: BreakerEvent): void => {
    s.transitions.add(1, transitionAttributes.get(e.state) as Attributes)
  }

  const off = [
    limiter.on('decision', onDecision),
    limiter.on('error', onError),
    limiter.on('breaker', onBreaker),
    // Without syncCalls, core times only the calls that left the fast path (SQLite's lock waits).
    limiter.on('call', onCall, { sync: syncCalls }),
  ]
  if (s.sources.size === 0) {
    meter.addBatchObservableCallback(s.collect, [s.decisions, s.breakerState, s.inFlight])
  }
  s.sources.add(reported)
  let done = false
  return () => {
    if (done) return
    done = true
    for (const f of off) f()
    addCounts(reported, s.retired)
    s.sources.delete(reported)
    if (s.sources.size === 0)
      meter.removeBatchObservableCallback(s.collect, [s.decisions, s.breakerState, s.inFlight])
  }
}
