// A scope named after where a limit is declared, for limits that do not name their own.

const SCOPE = /^[A-Za-z0-9_.:-]{1,64}$/

/** FNV-1a, 32 bits, as 8 hex digits: tells apart names that read the same once cleaned. */
function fnv1a(text: string): string {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return (h >>> 0).toString(16).padStart(8, '0')
}

/**
 * A valid scope (1 to 64 of `A-Z a-z 0-9 _ . : -`) for `name`: the name itself when it is one,
 * otherwise the name cleaned and cut, with a hash of the whole name (`Login$Controller` gives
 * `Login_Controller-5d1c0a2e`). The same name gives the same scope in every process.
 */
export function scopeFor(name: string): string {
  if (SCOPE.test(name)) return name
  return `${name.replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 55)}-${fnv1a(name)}`
}
