import { createHash } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ConfigError, type FastlimitError } from './errors'
import { escapeIdentity, MAX_IDENTITY_LENGTH, storageKey, validatePrefix } from './keys'
import { sha256Hex, sha256HexUtf16 } from './sha256'

describe('sha256Hex', () => {
  it('matches node:crypto on random strings, including multi-block and non-ASCII input', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 300 }), (text) => {
        expect(sha256Hex(text)).toBe(createHash('sha256').update(text, 'utf8').digest('hex'))
      }),
    )
    expect(sha256Hex('')).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (text) => {
        expect(sha256HexUtf16(text)).toBe(createHash('sha256').update(text, 'utf16le').digest('hex'))
      }),
    )
  })
})

describe('escapeIdentity', () => {
  it('leaves ordinary identities alone', () => {
    expect(escapeIdentity('user-42')).toBe('user-42')
    expect(escapeIdentity('203.0.113.7')).toBe('203.0.113.7')
    expect(escapeIdentity('2001:db8::/56')).toBe('2001:db8::/56')
    expect(escapeIdentity('日本語🚦')).toBe('日本語🚦')
  })

  it('escapes braces, percent, control characters and lone surrogates', () => {
    expect(escapeIdentity('{a}')).toBe('%7Ba%7D')
    expect(escapeIdentity('50%')).toBe('50%25')
    expect(escapeIdentity('a\nb\u0000')).toBe('a%0Ab%00')
    expect(escapeIdentity('\ud800x')).toBe('%uD800x')
    expect(escapeIdentity('\u0085')).toBe('%85')
  })

  it('hashes long identities into a form escaping never produces', () => {
    const long = 'x'.repeat(MAX_IDENTITY_LENGTH + 1)
    expect(escapeIdentity(long)).toMatch(/^%H[0-9a-f]{64}$/)
    expect(escapeIdentity('x'.repeat(MAX_IDENTITY_LENGTH))).toHaveLength(MAX_IDENTITY_LENGTH)
    expect(escapeIdentity('y'.repeat(1_000_000))).toMatch(/^%H[0-9a-f]{64}$/)
    // Short identities that escape to more than the limit are hashed too, from their raw form.
    expect(escapeIdentity('{'.repeat(100))).toBe(`%H${sha256HexUtf16('{'.repeat(100))}`)
    // Lone surrogates of long identities stay distinct (UTF-8 would map both to U+FFFD).
    expect(escapeIdentity(`\ud800${'x'.repeat(300)}`)).not.toBe(escapeIdentity(`\udc00${'x'.repeat(300)}`))
  })

  it('is injective and never leaves a brace or control character', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: 'binary', maxLength: 260 }),
        fc.string({ unit: 'binary', maxLength: 260 }),
        (a, b) => {
          const ea = escapeIdentity(a)
          expect(ea).not.toMatch(/[{}\u0000-\u001f\u007f]/)
          if (a !== b) expect(ea).not.toBe(escapeIdentity(b))
        },
      ),
      { numRuns: 2000 },
    )
    // Crafted near-collisions: an escaped form written literally must not equal the original.
    expect(escapeIdentity('%7B')).not.toBe(escapeIdentity('{'))
    expect(escapeIdentity(`%H${'0'.repeat(64)}`)).not.toMatch(/^%H/)
  })
})

describe('storageKey', () => {
  it('wraps the identity in one hash tag', () => {
    expect(storageKey('fl', 'user:{1}')).toBe('fl:{user:%7B1%7D}')
  })
  it('rejects identities that are not strings', () => {
    for (const bad of [undefined, null, 42, {}, Symbol('x')]) {
      try {
        storageKey('fl', bad as never)
        expect.unreachable()
      } catch (err) {
        expect((err as FastlimitError).code).toBe('ERR_FASTLIMIT_ARGUMENT')
      }
    }
  })
  it('validates prefixes', () => {
    expect(validatePrefix('myapp:rl')).toBe('myapp:rl')
    for (const bad of ['', 'a b', '{x}', 'x'.repeat(65), 42, 'tab\t'])
      expect(() => validatePrefix(bad)).toThrow(ConfigError)
  })
})
