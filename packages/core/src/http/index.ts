// The HTTP layer every adapter shares: client IP, RateLimit headers, the 429 response, skip and allow lists.

export type { HeaderFormat, SetHeader } from './headers'
export { delaySeconds, HEADER_FORMATS, RateLimitHeaders, retryAfterValue } from './headers'
export type { HttpAdapter, HttpDenial } from './http-limiter'
export { checkHandler, createHttpLimiter, HttpLimiter, problemDetails } from './http-limiter'
export type { Cidr, IPv4Address, IPv6Address, IpAddress, ProxyHeader, ProxyTrust } from './ip'
export {
  cidrContains,
  compileTrust,
  createIpMatcher,
  formatIp,
  IP_RANGES,
  ipKey,
  parseCidr,
  parseForwarded,
  parseHop,
  parseIp,
  resolveClientIp,
} from './ip'
export type { JsonBody, MessageBody, RateLimitCommonOptions } from './options'
