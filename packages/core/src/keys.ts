// Identity -> storage key: escaped so it cannot break a Redis Cluster hash tag or collide, hashed when long.
import { ConfigError, FastlimitError, show } from './errors'

/** Identities longer than this (in UTF-16 code units, after escaping) are stored as a SHA-256 digest. */
export const MAX_IDENTITY_LENGTH = 200

// Braces (hash tags), '%' (the escape itself), C0/C1 control characters, DEL, and lone surrogates
// (which UTF-8 would turn into U+FFFD, so two different ones would collide).
const UNSAFE =
  /[%{}\u0000-\u001f\u007f-\u009f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g

/** 1 for every UTF-16 code unit that may need escaping (surrogates go to the exact check). */
const UNSAFE_CODE = /* @__PURE__ */ (() => {
  const t = new Uint8Array(0x10000)
  for (let c = 0; c < 0x20; c++) t[c] = 1
  for (let c = 0x7f; c <= 0x9f; c++) t[c] = 1
  for (let c = 0xd800; c <= 0xdfff; c++) t[c] = 1
  t[0x25] = 1
  t[0x7b] = 1
  t[0x7d] = 1
  return t
})()

function escapeChar(ch: string): string {
  const code = ch.charCodeAt(0)
  return code < 0x100
    ? `%${code.toString(16).toUpperCase().padStart(2, '0')}`
    : `%u${code.toString(16).toUpperCase()}`
}

/**
 * SHA-256 of a string's UTF-16 code units (little-endian), as 64 lowercase hex digits, from the
 * platform's Web Crypto (Node 20+, Bun, Deno, Workers, browsers). Unlike UTF-8, this encoding is
 * injective for every JavaScript string, lone surrogates included.
 */
export async function sha256HexUtf16(text: string): Promise<string> {
  const subtle = (globalThis as { crypto?: { subtle?: SubtleLike } }).crypto?.subtle
  if (subtle === undefined) {
    throw new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [core] An identity longer than ${MAX_IDENTITY_LENGTH} characters is stored as its SHA-256, which ` +
        'needs Web Crypto (globalThis.crypto.subtle: Node 20+, Bun, Deno, Workers). Use shorter identities on this runtime.',
    )
  }
  const bytes = new Uint8Array(text.length * 2)
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    bytes[2 * i] = c & 0xff
    bytes[2 * i + 1] = c >>> 8
  }
  const digest = new Uint8Array(await subtle.digest('SHA-256', bytes))
  let hex = ''
  for (const b of digest) hex += (b < 16 ? '0' : '') + b.toString(16)
  return hex
}

interface SubtleLike {
  digest(algorithm: string, data: Uint8Array): Promise<ArrayBuffer>
}

/**
 * Turns any identity into a safe, injective key part: `%`, braces, control characters and lone
 * surrogates are percent-escaped; an identity whose key part would be longer than
 * {@link MAX_IDENTITY_LENGTH} becomes `%H` + the SHA-256 of its UTF-16 code units (a form escaping never
 * produces, so hashed and escaped keys cannot collide; linear in the length, however hostile).
 * Synchronous, except for those long identities: their digest comes from Web Crypto, as a promise.
 *
 * @example
 * ```ts
 * escapeIdentity('user:{1}')          // 'user:%7B1%7D'
 * await escapeIdentity('x'.repeat(500)) // '%H' + 64 hex digits
 * ```
 */
export function escapeIdentity(identity: string): string | Promise<string> {
  const n = identity.length
  if (n <= MAX_IDENTITY_LENGTH) {
    // Fast path: most identities (ids, IPs, API keys) hold no character that needs escaping.
    let i = 0
    while (i < n && UNSAFE_CODE[identity.charCodeAt(i)] === 0) i++
    if (i === n) return identity
    const escaped = identity.replace(UNSAFE, escapeChar)
    if (escaped.length <= MAX_IDENTITY_LENGTH) return escaped
  }
  return sha256HexUtf16(identity).then((hex) => `%H${hex}`)
}

/** Checks a key prefix at construction: short, printable, no braces (they would become the hash tag). */
export function validatePrefix(prefix: unknown, where = 'core'): string {
  if (typeof prefix !== 'string' || !/^[\x21-\x7a\x7c\x7e]{1,64}$/.test(prefix)) {
    throw new ConfigError(
      `[fastlimit] [${where}] Invalid prefix ${show(prefix)}: use 1 to 64 printable ASCII characters ` +
        `without spaces or braces, e.g. "rl" or "myapp:rl".`,
    )
  }
  return prefix
}

/** The alphabet of a scope: 1 to 64 of `A-Z a-z 0-9 _ . : -`. */
const SCOPE = /^[A-Za-z0-9_.:-]{1,64}$/

/**
 * Checks a scope (1 to 64 of `A-Z a-z 0-9 _ . : -`).
 * @throws FastlimitError `ERR_FASTLIMIT_ARGUMENT`
 */
export function validateScope(scope: unknown): string {
  if (typeof scope !== 'string' || !SCOPE.test(scope)) {
    throw new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [core] scope must be 1 to 64 of A-Z a-z 0-9 _ . : -, got ${show(scope)}: e.g. 'login'.`,
    )
  }
  return scope
}

/**
 * The storage key of an identity: `prefix:{escapedIdentity}`, or with a scope
 * `prefix:{%S<scope>;escapedIdentity}`. The braces make the identity (with its scope) the Redis
 * Cluster hash tag, so every rule of one identity lives in one slot. A promise only for an identity
 * that is hashed ({@link escapeIdentity}).
 *
 * Injective: an escaped identity never starts with `%S` (escapes are `%` + hex digits, `%u` or `%H`),
 * and a scope never holds `;`, so no (scope, identity) pair shares a key with another, scoped or not.
 * @throws FastlimitError `ERR_FASTLIMIT_ARGUMENT` for an identity that is not a string or a bad scope
 */
export function storageKey(prefix: string, identity: string, scope?: string): string | Promise<string> {
  const head = scope === undefined ? `${prefix}:{` : `${prefix}:{%S${validateScope(scope)};`
  const name = identityName(identity)
  return typeof name === 'string' ? `${head}${name}}` : name.then((n) => `${head}${n}}`)
}

/** Checks that an identity is a string and escapes it ({@link escapeIdentity}). */
export function identityName(identity: string): string | Promise<string> {
  if (typeof identity !== 'string') {
    throw new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [core] The identity must be a string, got ${show(identity)}: pass e.g. a user id or an IP address.`,
    )
  }
  return escapeIdentity(identity)
}
