// One form for the spellings of one name: the `normalize` hook's ready-made function.

/** Default_Ignorable_Code_Point: zero-width spaces and joiners, soft hyphens, variation selectors, ... */
const IGNORABLE = /\p{Default_Ignorable_Code_Point}/gu
/** `İ` lower-cases to `i` + U+0307 COMBINING DOT ABOVE: fold it to `i`, as Turkic case folding does. */
const DOTTED_I = /i\u0307/g

/**
 * Folds an identity such as a user name or an e-mail address into one form, so that its spellings
 * share one limit: Unicode NFKC (full-width `ａｄｍｉｎ`, ligatures and other compatibility forms become
 * plain letters), case folded (`Admin`, `ADMIN`, `ß`/`SS`, `ς`/`σ`, dotless `ı` and dotted `İ` as `i`), invisible characters
 * removed (zero-width space, soft hyphen, variation selectors...), surrounding white space trimmed.
 * Printable ASCII takes a fast path (lower case and trim). Pass it as `normalize` to `rateLimit()`, or
 * call it yourself before `limiter.check`. It folds more than most sign-up forms do, which is the safe
 * side for a limit: two names that differ only in ways it erases share one budget.
 *
 * @example
 * ```ts
 * normalizeIdentity('ＡＤＭＩＮ') // 'admin'
 * await limiter.check(normalizeIdentity(body.username), '5/15m', { scope: 'login' })
 * ```
 */
export function normalizeIdentity(identity: string): string {
  let ascii = true
  for (let i = 0; i < identity.length; i++) {
    const c = identity.charCodeAt(i)
    if (c > 0x7e || c < 0x20) {
      ascii = false
      break
    }
  }
  if (ascii) return identity.trim().toLowerCase()
  return identity
    .normalize('NFKC')
    .replace(IGNORABLE, '')
    .toUpperCase()
    .toLowerCase()
    .replace(DOTTED_I, 'i')
    .normalize('NFKC')
    .trim()
}
