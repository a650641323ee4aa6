// The HTTP layer every adapter shares: client IP, RateLimit headers, the 429 response, skip and allow lists.

export type { HeaderFormat, SetHeader } from './headers'
export { delaySeconds, HEADER_FORMATS, RateLimitHeaders, retryAfterValue } from './headers'
export type { HttpAdapter, HttpDenial } from './http-limiter'
export { checkHandler, createHttpLimiter, HttpLimiter, problemDetails } from './http-limiter'
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
export type { JsonBody, MessageBody, RateLimitCommonOptions } from './options'
