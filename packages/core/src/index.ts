// @fastlimit/core: the Backend protocol, the algorithms, rules, FastLimit and MemoryBackend.

export type { State, StepAllOutput, StepFunction, StepOutput } from './algorithms'
export {
  ALGORITHMS,
  algorithms,
  decodeState,
  encodeState,
  fixedWindow,
  gcra,
  leakyBucket,
  SLIDING_LOG_SLOTS,
  slidingLog,
  slidingLogSlotMs,
  slidingWindow,
  step,
  stepAll,
  tokenBucket,
} from './algorithms'
export type { Algorithm, Backend, BackendResult, BucketConfig, CallOptions, SyncBackend } from './backend'
export { bucketId, isSyncBackend, RETRY_NEVER } from './backend'
export type { FastlimitErrorCode } from './errors'
export { ConfigError, FastlimitError } from './errors'
export type { BackendFromUrlOptions } from './from-url'
export { backendFromUrl } from './from-url'
export type {
  Cidr,
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
  RateLimitInfo,
  RateLimitInfoJSON,
  RulesFunction,
  SetHeader,
  TrustProxySetting,
} from './http'
export {
  applyCombined,
  checkHandler,
  CLIENT_CLOSED_REQUEST,
  cidrContains,
  compileTrust,
  createHttpLimiter,
  createIpMatcher,
  delaySeconds,
  embeddedIPv4,
  formatIp,
  HEADER_FORMATS,
  HttpLimiter,
  InvalidCostError,
  IP_RANGES,
  ipKey,
  isLocalAddress,
  normalizeIdentity,
  onResponseClose,
  parseCidr,
  parseForwarded,
  parseHop,
  parseIp,
  problemDetails,
  RateLimitHeaders,
  resolveClientIp,
  retryAfterValue,
} from './http'
export { escapeIdentity, MAX_IDENTITY_LENGTH, storageKey, validatePrefix, validateScope } from './keys'
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
  ListenOptions,
  RuleResult,
  ScopeOptions,
} from './limiter'
export { checkCost, FastLimit } from './limiter'
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
