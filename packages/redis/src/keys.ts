// Backend key -> Redis key: the keyPrefix, the separator "::" and the key, as bytes that never collide
// (within one backend or across two with different keyPrefixes), and the SCAN pattern of one backend's keys.
import { ConfigError } from '@fastlimit/core'

function show(value: unknown): string {
  const text = typeof value === 'string' ? JSON.stringify(value) : typeof value
  return text.length > 80 ? `${text.slice(0, 77)}...` : text
}

/**
 * What RedisBackend puts between its keyPrefix and each key. A keyPrefix may not hold it (nor end with
 * ":"), so the first "::" of a Redis key ends the keyPrefix: two backends with different keyPrefixes
 * never share a key, and no backend's keys start with another's `keyPrefix + "::"`, which is what
 * `clear()` deletes.
 */
export const KEY_SEPARATOR = '::'

/**
 * The text a backend puts before each key: `keyPrefix` (one trailing ":" dropped, so `'myapp:'` and
 * `'myapp'` are the same) and {@link KEY_SEPARATOR}.
 *
 * @throws ConfigError unless `keyPrefix` is 1 to 64 printable ASCII characters without spaces, braces or "::"
 */
export function keyNamespace(keyPrefix: unknown): string {
  const name = typeof keyPrefix === 'string' && keyPrefix.endsWith(':') ? keyPrefix.slice(0, -1) : keyPrefix
  if (typeof keyPrefix !== 'string' || !/^[\x21-\x7a\x7c\x7e]{1,64}$/.test(keyPrefix)) {
    throw new ConfigError(
      `[fastlimit] [redis] keyPrefix must be 1 to 64 printable ASCII characters without spaces or braces ` +
        `(braces would become the Cluster hash tag), got ${show(keyPrefix)}. For example "fastlimit" or "myapp:rl".`,
    )
  }
  if (keyPrefix.includes(KEY_SEPARATOR) || name === '') {
    throw new ConfigError(
      `[fastlimit] [redis] keyPrefix ${show(keyPrefix)} holds "::" (or is only ":"): RedisBackend writes ` +
        `keyPrefix + "::" + key, and a "::" inside keyPrefix would let another backend's keys start like this ` +
        `one's (its clear() would delete them). Use single ":" as a separator, e.g. "myapp:rl".`,
    )
  }
  return `${name as string}${KEY_SEPARATOR}`
}

// A lone surrogate has no UTF-8 form: Node would turn every one into U+FFFD, so '\ud800' and '\udc00'
// would share a Redis key. Such keys are sent as WTF-8 bytes instead (a lone surrogate as its 3-byte
// generalised UTF-8 form, ED A0..BF xx), which no well-formed string ever produces: the map stays injective.
const SURROGATE = /[\ud800-\udfff]/
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

/** Whether a string has a lone surrogate (and so no UTF-8 encoding). */
export function hasLoneSurrogate(text: string): boolean {
  return SURROGATE.test(text) && LONE_SURROGATE.test(text)
}

/** WTF-8: UTF-8 for every well-formed part, the generalised 3-byte form for each lone surrogate. */
export function wtf8(text: string): Buffer {
  const bytes: number[] = []
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00)
        i++
      }
    }
    if (c < 0x80) bytes.push(c)
    else if (c < 0x800) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 63))
    else if (c < 0x10000) bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63))
    else bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63))
  }
  return Buffer.from(bytes)
}

/**
 * The Redis key of a backend key: `namespace + key` (`namespace` from {@link keyNamespace}), a string when
 * the key is well-formed (ioredis sends it as UTF-8), else the same bytes with WTF-8 for the lone surrogates.
 */
export function redisKey(prefix: string, key: string): string | Buffer {
  const full = prefix + key
  return hasLoneSurrogate(key) ? wtf8(full) : full
}

/**
 * A SCAN MATCH pattern for every key that starts with `prefix` (glob characters escaped). With a
 * namespace from {@link keyNamespace}, exactly the keys of the backends with that keyPrefix.
 */
export function prefixPattern(prefix: string): string {
  return `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`
}
