// Identity -> storage key: escaped so it cannot break a Redis Cluster hash tag or collide, hashed when long.
import { ConfigError, FastlimitError, show } from './errors'
import { sha256HexUtf16 } from './sha256'

/** Identities longer than this (in UTF-16 code units, after escaping) are stored as a SHA-256 digest. */
export const MAX_IDENTITY_LENGTH = 200

// Braces (hash tags), '%' (the escape itself), C0/C1 control characters, DEL, and lone surrogates
// (which UTF-8 would turn into U+FFFD, so two different ones would collide).
const UNSAFE =
  /[%{}\u0000-\u001f\u007f-\u009f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g

/** 1 for every UTF-16 code unit that may need escaping (surrogates go to the exact check). */
const UNSAFE_CODE = (() => {
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
 * Turns any identity into a safe, injective key part: `%`, braces, control characters and lone
 * surrogates are percent-escaped; an identity whose key part would be longer than
 * {@link MAX_IDENTITY_LENGTH} becomes `%H` + the SHA-256 of its UTF-16 code units (a form escaping never
 * produces, so hashed and escaped keys cannot collide; linear in the length, however hostile).
 *
 * @example
 * ```ts
 * escapeIdentity('user:{1}') // 'user:%7B1%7D'
 * ```
 */
export function escapeIdentity(identity: string): string {
  const n = identity.length
  if (n <= MAX_IDENTITY_LENGTH) {
    // Fast path: most identities (ids, IPs, API keys) hold no character that needs escaping.
    let i = 0
    while (i < n && UNSAFE_CODE[identity.charCodeAt(i)] === 0) i++
    if (i === n) return identity
  }
  if (n > MAX_IDENTITY_LENGTH) return `%H${sha256HexUtf16(identity)}`
  const escaped = identity.replace(UNSAFE, escapeChar)
  return escaped.length > MAX_IDENTITY_LENGTH ? `%H${sha256HexUtf16(identity)}` : escaped
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
 * Cluster hash tag, so every rule of one identity lives in one slot.
 *
 * Injective: an escaped identity never starts with `%S` (escapes are `%` + hex digits, `%u` or `%H`),
 * and a scope never holds `;`, so no (scope, identity) pair shares a key with another, scoped or not.
 */
export function storageKey(prefix: string, identity: string, scope?: string): string {
  const name = identityName(identity)
  return scope === undefined ? `${prefix}:{${name}}` : `${prefix}:{%S${validateScope(scope)};${name}}`
}

/** Checks that an identity is a string and escapes it ({@link escapeIdentity}). */
export function identityName(identity: string): string {
  if (typeof identity !== 'string') {
    throw new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [core] The identity must be a string, got ${show(identity)}: pass e.g. a user id or an IP address.`,
    )
  }
  return escapeIdentity(identity)
}
