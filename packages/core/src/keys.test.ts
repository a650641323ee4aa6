import { createHash } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ConfigError, type FastlimitError } from './errors'
import { escapeIdentity, MAX_IDENTITY_LENGTH, sha256HexUtf16, storageKey, validatePrefix } from './keys'

describe('sha256HexUtf16 (Web Crypto)', () => {
  it('matches node:crypto over UTF-16 code units, lone surrogates included', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: 'binary', maxLength: 300 }), async (text) => {
        expect(await sha256HexUtf16(text)).toBe(createHash('sha256').update(text, 'utf16le').digest('hex'))
      }),
    )
    expect(await sha256HexUtf16('\ud800')).toBe(
      createHash('sha256')
        .update(Buffer.from([0x00, 0xd8]))
        .digest('hex'),
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

  it('hashes long identities into a form escaping never produces', async () => {
    const long = 'x'.repeat(MAX_IDENTITY_LENGTH + 1)
    expect(await escapeIdentity(long)).toMatch(/^%H[0-9a-f]{64}$/)
    expect(escapeIdentity('x'.repeat(MAX_IDENTITY_LENGTH))).toHaveLength(MAX_IDENTITY_LENGTH)
    expect(await escapeIdentity('y'.repeat(1_000_000))).toMatch(/^%H[0-9a-f]{64}$/)
    // Short identities that escape to more than the limit are hashed too, from their raw form.
    expect(await escapeIdentity('{'.repeat(100))).toBe(`%H${await sha256HexUtf16('{'.repeat(100))}`)
    // Lone surrogates of long identities stay distinct (UTF-8 would map both to U+FFFD).
    expect(await escapeIdentity(`\ud800${'x'.repeat(300)}`)).not.toBe(
      await escapeIdentity(`\udc00${'x'.repeat(300)}`),
    )
  })

  it('is synchronous except for identities stored as their digest', () => {
    expect(typeof escapeIdentity('x'.repeat(MAX_IDENTITY_LENGTH))).toBe('string')
    expect(escapeIdentity('x'.repeat(MAX_IDENTITY_LENGTH + 1))).toBeInstanceOf(Promise)
  })

  it('is injective and never leaves a brace or control character', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.string({ unit: 'binary', maxLength: 260 }),
        fc.string({ unit: 'binary', maxLength: 260 }),
        async (a, b) => {
          const ea = await escapeIdentity(a)
          expect(ea).not.toMatch(/[{}\u0000-\u001f\u007f]/)
          if (a !== b) expect(ea).not.toBe(await escapeIdentity(b))
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
    expect(storageKey('fl', 'u', 'login')).toBe('fl:{%Slogin;u}')
  })
  it('keeps every (scope, identity) pair apart, scoped or not', async () => {
    const scope = fc.option(fc.stringMatching(/^[A-Za-z0-9_.:-]{1,64}$/), { nil: undefined })
    // Identities built from the very characters keys are made of: separators, escapes, scope markers.
    const identity = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 40 }),
      fc
        .array(fc.constantFrom('%', 'S', ';', '{', '}', ':', '|', 'login', 'a', '%S', '%25', '\u0000'), {
          maxLength: 12,
        })
        .map((parts) => parts.join('')),
    )
    await fc.assert(
      fc.asyncProperty(scope, identity, scope, identity, async (s1, i1, s2, i2) => {
        fc.pre(s1 !== s2 || i1 !== i2)
        expect(await storageKey('fl', i1, s1)).not.toBe(await storageKey('fl', i2, s2))
      }),
      { numRuns: 5000 },
    )
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
