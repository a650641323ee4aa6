// Keys and bucket ids as bytea: an injective encoding of any UTF-16 string, written into SQL as hex.
import { createHash } from 'node:crypto'

/**
 * The longest encoding stored as it is, in bytes. Longer ones are stored as their SHA-256, because a
 * btree index entry holds at most about 2,700 bytes (and long keys only bloat the index).
 */
export const MAX_RAW_KEY_BYTES = 512

/** A high or low surrogate without its partner: what UTF-8 cannot hold. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

/** First byte of a key stored as UTF-16LE code units (it holds a lone surrogate). Never starts UTF-8. */
const UTF16_MARK = 0xff
/** First byte of a key stored as the SHA-256 of its encoding (it was too long). Never starts UTF-8. */
const HASH_MARK = 0xfe

/**
 * Encodes a key (or a bucket id) as the bytes stored in the `bytea` column, injectively:
 *
 * - a well-formed string is its UTF-8 bytes (so `encode(key, 'escape')` reads as the key), NUL included:
 *   `bytea` holds any byte, where Postgres `text` refuses NUL;
 * - a string holding a lone surrogate (which UTF-8 cannot represent: encoders turn it into U+FFFD, so two
 *   keys would meet) is the byte 0xFF followed by its UTF-16LE code units;
 * - an encoding longer than {@link MAX_RAW_KEY_BYTES} is 0xFE followed by its SHA-256.
 *
 * The first bytes 0xFF and 0xFE never begin UTF-8, so the three forms cannot meet.
 */
export function encodeKey(key: string): Buffer {
  let bytes: Buffer
  if (LONE_SURROGATE.test(key)) {
    const units = Buffer.from(key, 'utf16le')
    bytes = Buffer.allocUnsafe(units.length + 1)
    bytes[0] = UTF16_MARK
    units.copy(bytes, 1)
  } else {
    bytes = Buffer.from(key, 'utf8')
  }
  if (bytes.length <= MAX_RAW_KEY_BYTES) return bytes
  const digest = createHash('sha256').update(bytes).digest()
  const hashed = Buffer.allocUnsafe(digest.length + 1)
  hashed[0] = HASH_MARK
  digest.copy(hashed, 1)
  return hashed
}

/**
 * A key as an SQL expression of type bytea: `'\x6869'::bytea`. Hex digits are the only characters
 * inside the quotes, so the literal is safe whatever the key holds, and it is read the same with
 * `standard_conforming_strings` on (the default since PostgreSQL 9.1) or off (an `E` string).
 */
export function keyLiteral(key: string): string {
  return `E'\\\\x${encodeKey(key).toString('hex')}'::bytea`
}
