// The HTTP layer every adapter shares: client IP, RateLimit headers, the 429 response, skip and allow lists.

export type { ConcurrencyOptions, ConcurrencySetting } from './concurrency'
export type { ClosableResponse } from './delay'
export { closeSignal, isRequestAborted, RequestAbortedError } from './delay'
export type { HeaderEntry, HeaderFormat, SetHeader } from './headers'
export {
  applyCombined,
  delaySeconds,
  draft7Value,
  HEADER_FORMATS,
  quotaPolicies,
  RateLimitHeaders,
  resetDelayMs,
  retryAfterValue,
} from './headers'
export type { HttpAdapter, HttpDenial, HttpInvalidCost } from './http-limiter'
export {
  checkHandler,
  createHttpLimiter,
  HttpLimiter,
  InvalidCostError,
  problemDetails,
} from './http-limiter'
export type { RateLimitHandle, RateLimitInfo, RateLimitInfoJSON } from './info'
export { rateLimitHandleOf } from './info'
export type {
  Cidr,
  IPv4Address,
  IPv6Address,
  IpAddress,
  ProxyHeader,
  ProxyTrust,
  TrustProxySetting,
} from './ip'
export {
  cidrContains,
  compileTrust,
  createIpMatcher,
  embeddedIPv4,
  formatIp,
  IP_RANGES,
  ipKey,
  isLocalAddress,
  parseCidr,
  parseForwarded,
  parseHop,
  parseIp,
  resolveClientIp,
} from './ip'
export { normalizeIdentity } from './normalize'
export type { JsonBody, MessageBody, RateLimitCommonOptions, RulesFunction } from './options'
export type { NodeResponseLike, OutcomeFunction, OutcomeOptions } from './outcome'
export { CLIENT_CLOSED_REQUEST, onResponseClose } from './outcome'
