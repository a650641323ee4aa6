// Warnings given once per process: a misconfiguration the app can run with but should hear about.

/**
 * The ids of the warnings already given, kept on `globalThis` under a registered symbol so that two
 * copies of core in one process (an ESM and a CJS build) still warn once between them.
 */
const WARNED: Set<string> = (() => {
  const key = Symbol.for('fastlimit.warnings')
  const g = globalThis as { [key: symbol]: unknown }
  const existing = g[key]
  if (existing instanceof Set) return existing as Set<string>
  const created = new Set<string>()
  g[key] = created
  return created
})()

/** Whether the warning `id` was already given in this process. */
export function warned(id: string): boolean {
  return WARNED.has(id)
}

/** Gives `message` with `console.warn` unless a warning of this `id` was already given in this process. */
export function warnOnce(id: string, message: string): void {
  if (WARNED.has(id)) return
  WARNED.add(id)
  console.warn(message)
}
