// @fastlimit/core: the Backend protocol, the algorithms, rules, FastLimit and MemoryBackend.

export type {
  AdjustFunction,
  AdjustOutput,
  State,
  StepAllOutput,
  StepFunction,
  StepOutput,
} from './algorithms'
export {
  ALGORITHMS,
  adjustAll,
  adjustments,
  adjustStep,
  algorithms,
  decodeState,
  encodeState,
  fixedWindow,
  fixedWindowAdjust,
  gcra,
  gcraAdjust,
  leakyBucket,
  leakyBucketAdjust,
  SLIDING_LOG_SLOTS,
  slidingLog,
  slidingLogAdjust,
  slidingLogSlotMs,
  slidingWindow,
  slidingWindowAdjust,
  step,
  stepAll,
  tokenBucket,
  tokenBucketAdjust,
} from './algorithms'
export { stepAllWith } from './algorithms/step-all'
export type {
  AcquireResult,
  Algorithm,
  Backend,
  BackendResult,
  BucketConfig,
  CallOptions,
  Charge,
  ResultSink,
  SlotConfig,
  SyncBackend,
} from './backend'
export { bucketId, isSyncBackend, MAX_LEASE_LIMIT, RETRY_NEVER } from './backend'
export type { AcquireOptions, Lease, LeaseReason } from './concurrency'
export { DEFAULT_LEASE_MS } from './concurrency'
export type { FastlimitErrorCode } from './errors'
export { ConfigError, checkAdjustArguments, FastlimitError } from './errors'
export type { BackendFromUrlOptions } from './from-url'
export { backendFromUrl } from './from-url'
export type {
  Cidr,
  ClosableResponse,
  ConcurrencyOptions,
  ConcurrencySetting,
  HeaderEntry,
  HeaderFormat,
  HttpAdapter,
  HttpDenial,
  HttpInvalidCost,
  IPv4Address,
  IPv6Address,
  IpAddress,
  JsonBody,
  MessageBody,
  NodeResponseLike,
  OutcomeFunction,
  OutcomeOptions,
  ProxyHeader,
  ProxyTrust,
  RateLimitCommonOptions,
  RateLimitHandle,
  RateLimitInfo,
  RateLimitInfoJSON,
  RulesFunction,
  SetHeader,
  TrustProxySetting,
} from './http'
export {
  applyCombined,
  CLIENT_CLOSED_REQUEST,
  checkHandler,
  cidrContains,
  closeSignal,
  compileTrust,
  createHttpLimiter,
  createIpMatcher,
  delaySeconds,
  draft7Value,
  embeddedIPv4,
  formatIp,
  HEADER_FORMATS,
  HttpLimiter,
  InvalidCostError,
  IP_RANGES,
  ipKey,
  isLocalAddress,
  isRequestAborted,
  normalizeIdentity,
  onResponseClose,
  parseCidr,
  parseForwarded,
  parseHop,
  parseIp,
  problemDetails,
  quotaPolicies,
  RateLimitHeaders,
  RequestAbortedError,
  rateLimitHandleOf,
  resetDelayMs,
  resolveClientIp,
  retryAfterValue,
} from './http'
export { escapeIdentity, MAX_IDENTITY_LENGTH, storageKey, validatePrefix, validateScope } from './keys'
export { checkLeaseArguments } from './leases'
export type {
  BackendCallEvent,
  BackendErrorPolicy,
  BreakerEvent,
  BreakerOptions,
  BreakerState,
  CheckOptions,
  Decision,
  DecisionEvent,
  DecisionReason,
  FastLimitEvents,
  FastLimitOptions,
  LeaseEvent,
  ListenOptions,
  Reservation,
  ReservationActions,
  RuleResult,
  ScopeOptions,
  Settlement,
  SettlementOutcome,
} from './limiter'
export { checkCost, FastLimit } from './limiter'
export type { LocalTierBackend, LocalTierOptions, LocalTierStats } from './local-tier'
export { localTier } from './local-tier'
export type { MemoryBackendOptions } from './memory'
export { MemoryBackend } from './memory'
export type { Rule, RuleInput, RuleObject, RuleObjectBase, RuleSet, RulesInput } from './rules'
export {
  formatWindow,
  isRule,
  isRuleSet,
  MAX_SCALED,
  MAX_WINDOW_MS,
  parseRule,
  parseRules,
  parseWindow,
} from './rules'
export type { Throttled, ThrottleOptions, WaitOptions } from './wait'
export { throttle, WaitTooLongError } from './wait'
