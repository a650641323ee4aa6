// Proxies to believe, for the lite entry: the full entry's trustProxy setting and header walk, bundled
// only by apps that import proxyTrust.

import { ConfigError, show } from '../errors'
import {
  compileTrust,
  type IpAddress,
  type ProxyHeader,
  type TrustProxySetting,
  walkProxies,
} from '../http/ip'

/** What {@link proxyTrust} builds: the lite middleware's `trustProxy`. */
export interface LiteProxyTrust {
  /**
   * The client's address: `peer` unless it is a trusted proxy, in which case the forwarding header
   * (read through `header`) is walked right to left over the trusted hops. `undefined` when none.
   */
  walk(peer: IpAddress | undefined, header: (name: string) => string | undefined): IpAddress | undefined
}

/**
 * Compiles the full entry's `trustProxy` setting (`{ hops, from }`, a list of addresses and CIDRs, or a
 * number of hops from any peer) and `proxyHeader` for the lite middleware, with the same rules: a
 * client reaching the app directly is its own peer address whatever its headers say.
 * @throws ConfigError for a bad setting or header
 * @example
 * ```ts
 * rateLimit({ trustProxy: proxyTrust({ hops: 1, from: ['10.0.0.0/8'] }, 'x-forwarded-for') })
 * ```
 */
export function proxyTrust(
  setting: TrustProxySetting,
  proxyHeader: ProxyHeader = 'x-forwarded-for',
): LiteProxyTrust {
  const trust = compileTrust(setting)
  if (proxyHeader !== 'x-forwarded-for' && proxyHeader !== 'forwarded')
    throw new ConfigError(
      `[fastlimit] [core] proxyHeader must be 'x-forwarded-for' or 'forwarded', got ${show(proxyHeader)}.`,
    )
  return {
    walk: (peer, header) =>
      trust.hops === 0 || (peer !== undefined && trust.match !== undefined && !trust.match(peer))
        ? peer
        : walkProxies(peer, header(proxyHeader), trust, proxyHeader),
  }
}
