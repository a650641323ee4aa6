// @fastlimit/otel: OpenTelemetry metrics and spans from a FastLimit's events.
export type { InstrumentOptions } from './instrument'
export { instrument } from './instrument'
export { ATTRIBUTES, METRICS, OTHER_RULE } from './names'
