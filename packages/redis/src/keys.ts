// Backend key -> Redis key: the prefix plus the key, as bytes that never collide, and the SCAN pattern of a prefix.

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
 * The Redis key of a backend key: `prefix + key`, a string when the key is well-formed (ioredis sends
 * it as UTF-8), else the same bytes with WTF-8 for the lone surrogates.
 */
export function redisKey(prefix: string, key: string): string | Buffer {
  const full = prefix + key
  return hasLoneSurrogate(key) ? wtf8(full) : full
}

/** A SCAN MATCH pattern for every key that starts with `prefix` (glob characters escaped). */
export function prefixPattern(prefix: string): string {
  return `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`
}
