// The names of the metrics, spans and attributes @fastlimit/otel records: stable, for dashboards and alerts.

/**
 * The instruments {@link instrument} creates, by role. Prometheus shows each with dots as underscores
 * and, for counters, a `_total` suffix (`fastlimit_decisions_total`); the duration is in seconds
 * (`fastlimit_backend_call_duration`, with `_seconds` appended by exporters that add units).
 */
export const METRICS = Object.freeze({
  /** Counter of decisions (`{decision}`), by outcome, reason, rule, source, operation and backend. */
  decisions: 'fastlimit.decisions',
  /** Histogram of the duration of calls to the store, in seconds, by operation, outcome and sync. */
  callDuration: 'fastlimit.backend.call.duration',
  /** Counter of failed or timed-out calls to the store (`{error}`), by `error.type` (the error code). */
  errors: 'fastlimit.backend.errors',
  /** Gauge of the circuit breaker's state: 1 on the current state's series, 0 on the others. */
  breakerState: 'fastlimit.breaker.state',
  /** Counter of the circuit breaker's transitions (`{transition}`), by the state entered. */
  breakerTransitions: 'fastlimit.breaker.transitions',
  /** Up-down counter of calls to an asynchronous store not yet answered (`{call}`). */
  inFlight: 'fastlimit.backend.in_flight',
})

/**
 * The attribute keys, each with a small fixed set of values (rule names are capped by
 * `maxRuleNames`). The identity is never an attribute.
 */
export const ATTRIBUTES = Object.freeze({
  /** `'allowed'`, `'denied'`, or `'would-deny'` (denied in shadow mode: the caller let it through). */
  outcome: 'fastlimit.outcome',
  /** The decision's reason: `'ok'`, `'rate-limited'`, `'cost-exceeds-limit'`, `'fail-open'`, `'fail-closed'`. */
  reason: 'fastlimit.reason',
  /** The deciding rule's name (`'100/1m'` or the name you gave it), or `'other'` past `maxRuleNames`. */
  rule: 'fastlimit.rule',
  /** Who decided: `'backend'`, `'fallback'` or `'policy'`. */
  source: 'fastlimit.source',
  /** `'check'` or `'peek'` (decisions); `'check'`, `'peek'` or `'reset'` (calls). */
  operation: 'fastlimit.operation',
  /** The backend's kind: `'memory'`, `'redis'`, `'sqlite'`, or `'custom'` when it names none. */
  backend: 'fastlimit.backend',
  /** Whether a call went through the synchronous fast path (a boolean). */
  sync: 'fastlimit.sync',
  /** How a call ended: `'ok'`, `'error'` or `'timeout'`. */
  callOutcome: 'fastlimit.call.outcome',
  /** The circuit breaker's state: `'closed'`, `'open'` or `'half-open'`. */
  breakerState: 'fastlimit.breaker.state',
  /** The error code of a failed call (`'ERR_FASTLIMIT_TIMEOUT'`, ...), as OpenTelemetry's `error.type`. */
  errorType: 'error.type',
})

/** The rule attribute's value for every rule name past `maxRuleNames`. */
export const OTHER_RULE = 'other'
