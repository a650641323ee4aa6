// Every error fastlimit throws: one class, a machine-readable code, and a message that says what to do.

/**
 * The machine-readable kind of a {@link FastlimitError}.
 *
 * - `ERR_FASTLIMIT_CONFIG`: bad configuration (a rule, an option); thrown at construction.
 * - `ERR_FASTLIMIT_ARGUMENT`: a bad argument to a call (an identity that is not a string, a cost of 0).
 * - `ERR_FASTLIMIT_BACKEND`: the backend failed (connection refused, script error, a read-only replica).
 * - `ERR_FASTLIMIT_TIMEOUT`: the backend did not answer within `timeoutMs`, or the store refused to
 *   apply a call whose deadline had passed (nothing was charged).
 * - `ERR_FASTLIMIT_STORE_FULL`: the store is out of memory or disk (Redis `OOM` under `maxmemory`,
 *   SQLite `SQLITE_FULL`): limits cannot be kept until it has room. Warned about once per process
 *   when no `onError` is set.
 * - `ERR_FASTLIMIT_CIRCUIT_OPEN`: the limiter's circuit breaker is open after repeated failures; the
 *   store was not called.
 * - `ERR_FASTLIMIT_OVERLOADED`: too many calls to the store are already in flight (`maxInFlight`),
 *   or too many waiters are already queued (`maxQueue` of `wait` and `throttle`); the store was not called.
 * - `ERR_FASTLIMIT_WAIT_TOO_LONG`: a `wait` (or a throttled call) cannot be admitted within its
 *   `maxWaitMs`, or its cost can never pass; refused as soon as that is known.
 * - `ERR_FASTLIMIT_CLOSED`: the limiter or backend was used after `close()`.
 * - `ERR_FASTLIMIT_ABORTED`: the client of a request held in `mode: 'delay'` closed the connection
 *   while it waited; nothing was charged for it.
 */
export type FastlimitErrorCode =
  | 'ERR_FASTLIMIT_CONFIG'
  | 'ERR_FASTLIMIT_ARGUMENT'
  | 'ERR_FASTLIMIT_BACKEND'
  | 'ERR_FASTLIMIT_TIMEOUT'
  | 'ERR_FASTLIMIT_STORE_FULL'
  | 'ERR_FASTLIMIT_CIRCUIT_OPEN'
  | 'ERR_FASTLIMIT_OVERLOADED'
  | 'ERR_FASTLIMIT_WAIT_TOO_LONG'
  | 'ERR_FASTLIMIT_CLOSED'
  | 'ERR_FASTLIMIT_ABORTED'

/**
 * The one error class of fastlimit. Being over a limit is never an error (it is `allowed: false`);
 * this is thrown for bad configuration, bad arguments and, when the policy is `'throw'`, backend failures.
 *
 * @example
 * ```ts
 * try { new FastLimit().check('user', '100/mn') }
 * catch (err) { if (err instanceof FastlimitError && err.code === 'ERR_FASTLIMIT_CONFIG') ... }
 * ```
 */
export class FastlimitError extends Error {
  /** What kind of failure this is; stable across releases. */
  readonly code: FastlimitErrorCode

  constructor(code: FastlimitErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'FastlimitError'
    this.code = code
  }
}

/** A configuration error: thrown at construction, with the bad value and a valid example in the message. */
export class ConfigError extends FastlimitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_FASTLIMIT_CONFIG', message, options)
    this.name = 'ConfigError'
  }
}

/** Formats a value for an error message: strings quoted, long values cut. */
export function show(value: unknown): string {
  let text: string
  if (typeof value === 'string') text = JSON.stringify(value)
  else if (typeof value === 'function') text = 'a function'
  // Numbers, bigints, booleans, symbols, undefined and null as String() writes them.
  else if (typeof value !== 'object' || value === null) text = String(value)
  else {
    try {
      text = JSON.stringify(value) ?? String(value)
    } catch {
      text = Object.prototype.toString.call(value)
    }
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text
}

/**
 * Checks a duration option that feeds a timer: a whole number of milliseconds up to 2147483647
 * (2^31 - 1, the most a timer takes), from 0 (meaning off) when `zeroIsOff`, else from 1. Internal.
 * @throws ConfigError naming `field`, with `example` as a valid value
 */
export function checkTimerMs(
  tag: string,
  field: string,
  value: number,
  zeroIsOff: boolean,
  example: string,
): void {
  if (!Number.isSafeInteger(value) || value < (zeroIsOff ? 0 : 1) || value > 2 ** 31 - 1) {
    throw new ConfigError(
      `[fastlimit] [${tag}] ${field} must be a whole number of milliseconds from ${zeroIsOff ? '0 (off)' : '1'} ` +
        `to 2147483647, got ${show(value)}. For example ${example}.`,
    )
  }
}

/**
 * Validates a cost: a positive safe integer. Internal; `hint` ends the message (`''` for none).
 * @throws FastlimitError `ERR_FASTLIMIT_ARGUMENT`
 */
export function checkPositiveCost(tag: string, cost: unknown, hint: string): number {
  if (typeof cost !== 'number' || !Number.isSafeInteger(cost) || cost < 1) {
    throw new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [${tag}] cost must be a positive whole number up to 2^53 - 1, got ${show(cost)}${hint}.`,
    )
  }
  return cost
}

/**
 * Validates the arguments of `Backend.adjust`, for a backend to call first: `delta` a safe integer,
 * `charges` absent or one per bucket, each with a positive safe integer `cost`, a safe integer
 * `resetMs` and, when present, a safe integer `atMs`.
 * @param tag the backend's name in the message (`'memory'`, `'sqlite'`)
 * @throws FastlimitError `ERR_FASTLIMIT_ARGUMENT`
 */
export function checkAdjustArguments(
  tag: string,
  buckets: readonly unknown[],
  delta: unknown,
  charges: unknown,
): void {
  if (typeof delta !== 'number' || !Number.isSafeInteger(delta)) {
    throw badAdjust(tag, `delta must be a whole number from -(2^53 - 1) to 2^53 - 1, got ${show(delta)}`)
  }
  if (charges === undefined) return
  if (!Array.isArray(charges) || charges.length !== buckets.length) {
    throw badAdjust(
      tag,
      `charges must be undefined or one Charge per bucket (${buckets.length}), got ${show(charges)}`,
    )
  }
  for (let i = 0; i < charges.length; i++) {
    const c: unknown = charges[i]
    const x = c as { cost?: unknown; resetMs?: unknown; atMs?: unknown } | null
    if (
      typeof x !== 'object' ||
      x === null ||
      typeof x.cost !== 'number' ||
      !Number.isSafeInteger(x.cost) ||
      x.cost < 1 ||
      typeof x.resetMs !== 'number' ||
      !Number.isSafeInteger(x.resetMs) ||
      (x.atMs !== undefined && (typeof x.atMs !== 'number' || !Number.isSafeInteger(x.atMs)))
    ) {
      throw badAdjust(
        tag,
        `a charge must be { cost, resetMs, atMs? } of whole numbers (cost >= 1), got ${show(c)}`,
      )
    }
  }
}

function badAdjust(tag: string, what: string): FastlimitError {
  return new FastlimitError('ERR_FASTLIMIT_ARGUMENT', `[fastlimit] [${tag}] adjust: ${what}.`)
}
