// Rules: '100/min', '5 per minute' and { limit, window } turned into validated BucketConfigs.

import { ALGORITHMS } from './algorithms/names'
import { type Algorithm, type BucketConfig, bucketId } from './backend'
import { ConfigError, show } from './errors'

/** The longest window a rule may have: 365 days. */
export const MAX_WINDOW_MS = 365 * 24 * 60 * 60 * 1000

/**
 * The largest `max(limit, burst) * windowMs`: every algorithm counts in integers up to twice this,
 * which stays exact below 2^53 in JavaScript and in Lua (whose numbers are doubles).
 */
export const MAX_SCALED = 2 ** 52

const BUCKET_ALGORITHMS: ReadonlySet<Algorithm> = new Set(['token-bucket', 'leaky-bucket', 'gcra'])

/** The fields every object rule takes, besides its window. */
export interface RuleObjectBase {
  /** Units of cost admitted per window: a positive integer. */
  readonly limit: number
  /**
   * The algorithm.
   * @default the limiter's `algorithm`, itself `'gcra'` by default
   */
  readonly algorithm?: Algorithm
  /**
   * Capacity of the bucket algorithms (`'gcra'`, `'token-bucket'`, `'leaky-bucket'`): the most
   * admitted at once. A positive integer; not allowed with the window algorithms.
   * @default limit
   */
  readonly burst?: number
  /**
   * A name for headers and decisions: 1 to 64 of `A-Z a-z 0-9 _ . : / + -`.
   * @default the rule in short form, e.g. `'100/1m'`
   */
  readonly name?: string
}

/**
 * The object form of a rule: `{ limit: 100, window: '1m' }`, or with `windowMs: 60000` as in a
 * {@link BucketConfig}.
 */
export type RuleObject = RuleObjectBase &
  (
    | {
        /**
         * The window: a duration string (`'1m'`, `'15 minutes'`, `'500ms'`, `'day'`) or milliseconds.
         * Between 1 ms and 365 days.
         */
        readonly window: string | number
        readonly windowMs?: never
      }
    | {
        /** The window in milliseconds, between 1 and 365 days. */
        readonly windowMs: number
        readonly window?: never
      }
  )

/**
 * A rule as users write it: `'100/min'`, `'10/s'`, `'1000/day'`, `'100/15m'`, `'5 per minute'`,
 * a {@link RuleObject}, or a {@link Rule} that {@link parseRule} already built.
 */
export type RuleInput = string | RuleObject | Rule

/** One rule or several; several are checked all-or-nothing. */
export type RulesInput = RuleInput | readonly RuleInput[]

/** A validated rule: a {@link BucketConfig} with a name and a stable id. Frozen. */
export interface Rule extends BucketConfig {
  /** The name shown in headers and decisions. */
  readonly name: string
  /**
   * Identifies the rule's state within a key (see `bucketId`): `algorithm:limit:windowMs:burst`,
   * followed by `:name` when the rule has a name other than its short form. Two rules share state
   * exactly when every field, `name` included, is equal.
   */
  readonly id: string
}

/** A validated, frozen list of rules with distinct ids and names, ready for `FastLimit.check`. */
export interface RuleSet {
  readonly rules: readonly Rule[]
  /** The rule when there is exactly one (the common case, read without indexing `rules`), else undefined. */
  readonly single: Rule | undefined
  /** Marks the object as built by {@link parseRules}. */
  readonly [RULESET]: true
}

const RULESET: unique symbol = Symbol.for('fastlimit.ruleset')
const RULE: unique symbol = Symbol.for('fastlimit.rule')

/** The units of a window and their aliases, one capture group per unit, in the order of {@link UNIT_MS}. */
const UNIT =
  /^(?:(ms|msecs?|milliseconds?)|(s|secs?|seconds?)|(m|mins?|minutes?)|(h|hrs?|hours?)|(d|days?)|(w|wks?|weeks?))$/i
const UNIT_MS = [1, 1000, 60_000, 3_600_000, 86_400_000, 604_800_000]

const UNIT_HELP = 'ms, s, m (or min), h, d or w'
const RULE_EXAMPLES = '"100/min", "10/s", "100/15m" or "5 per minute"'
const WINDOW_EXAMPLES = '"1m" or "15 minutes"'
/** The longest rule or window string: real ones are short, and a bound keeps parsing linear. */
const MAX_RULE_TEXT = 100
const RULE_KEYS = new Set(['limit', 'window', 'windowMs', 'algorithm', 'burst', 'name'])
const NAME = /^[A-Za-z0-9_.:/+-]{1,64}$/

function fail(subject: string, problem: string, fix: string): never {
  throw new ConfigError(`[fastlimit] [core] ${subject}: ${problem}. ${fix}`)
}

/**
 * The window of `count` (default 1) times `unit`, checked as {@link parseWindow} checks milliseconds;
 * an unknown unit fails with the examples `eg` (of windows or of rules, as `subject` is).
 */
function unitWindow(count: string | undefined, unit: string, subject: string, eg: string): number {
  const m = UNIT.exec(unit)
  if (m === null)
    return fail(subject, `unknown unit ${show(unit)}`, `Use a unit of ${UNIT_HELP}, e.g. ${eg}.`)
  const ms = UNIT_MS[m.findIndex((g, i) => i > 0 && g !== undefined) - 1] as number
  return parseWindow((count === undefined ? 1 : Number(count)) * ms, subject)
}

/**
 * Parses a duration: `'1m'`, `'15 minutes'`, `'500ms'`, `'day'` (one day), or milliseconds as a number.
 * @throws ConfigError for anything else, or outside 1 ms to 365 days
 */
export function parseWindow(window: string | number, subject = `Window ${show(window)}`): number {
  if (typeof window === 'string') {
    if (window.length > MAX_RULE_TEXT) {
      fail(subject, `longer than ${MAX_RULE_TEXT} characters`, `Write a duration such as ${WINDOW_EXAMPLES}.`)
    }
    const m = /^\s*(\d+)?\s*([a-zA-Z]+)\s*$/.exec(window)
    if (!m)
      fail(
        subject,
        'not a duration',
        `Write a whole number and a unit of ${UNIT_HELP}, e.g. ${WINDOW_EXAMPLES}.`,
      )
    return unitWindow(m[1], m[2] as string, subject, WINDOW_EXAMPLES)
  }
  if (typeof window !== 'number') {
    return fail(
      subject,
      'not a duration',
      'Pass a string such as "1m" or a number of milliseconds such as 60000.',
    )
  }
  const ms = window
  if (!Number.isSafeInteger(ms) || ms < 1) {
    fail(
      subject,
      'the window must be a whole number of milliseconds, at least 1',
      'For example 60000 or "1m".',
    )
  }
  if (ms > MAX_WINDOW_MS) fail(subject, 'the window is longer than 365 days', 'Use at most "365d".')
  return ms
}

/** The short form of a window for default names: '1m', '15m', '1d', '1500ms'. */
export function formatWindow(ms: number): string {
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`
  }
  return `${ms}ms`
}

function checkCount(subject: string, field: string, value: unknown, example: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    fail(subject, `${field} must be a positive whole number, got ${show(value)}`, `For example ${example}.`)
  }
  return value
}

function build(
  subject: string,
  limit: number,
  windowMs: number,
  algorithm: Algorithm,
  burst: number | undefined,
  name: string | undefined,
): Rule {
  if (!ALGORITHMS.includes(algorithm)) {
    fail(
      subject,
      `unknown algorithm ${show(algorithm)}`,
      `Use one of ${ALGORITHMS.map((a) => `'${a}'`).join(', ')}.`,
    )
  }
  if (burst !== undefined) {
    checkCount(subject, 'burst', burst, '{ limit: 10, window: "1s", burst: 50 }')
    if (!BUCKET_ALGORITHMS.has(algorithm)) {
      fail(
        subject,
        `burst applies only to 'gcra', 'token-bucket' and 'leaky-bucket', not '${algorithm}'`,
        'Remove burst, or choose one of those algorithms.',
      )
    }
  }
  const scaled = Math.max(limit, burst ?? limit) * windowMs
  if (scaled > MAX_SCALED) {
    const most = Math.floor(MAX_SCALED / windowMs)
    fail(
      subject,
      `${burst !== undefined && burst > limit ? 'burst' : 'limit'} × window is ${scaled.toExponential(2)}, above 2^52, ` +
        'the most the algorithms count exactly',
      `Use at most ${most} per ${formatWindow(windowMs)}, or a shorter window.`,
    )
  }
  if (name !== undefined && (typeof name !== 'string' || !NAME.test(name))) {
    fail(subject, `invalid name ${show(name)}`, 'Use 1 to 64 of A-Z a-z 0-9 _ . : / + -, e.g. "login".')
  }
  const b = burst === undefined || burst === limit ? undefined : burst
  const shortName = `${limit}/${formatWindow(windowMs)}`
  const config = bucketId({ algorithm, limit, windowMs, burst: b })
  const rule = {
    algorithm,
    limit,
    windowMs,
    ...(b === undefined ? {} : { burst: b }),
    name: name ?? shortName,
    // The name is part of the id, so rules that differ only by name never share a bucket. The
    // configuration has exactly four ':'-separated parts, so whatever a name holds, the id is injective.
    id: name === undefined || name === shortName ? config : `${config}:${name}`,
    [RULE]: true,
  }
  return Object.freeze(rule) as Rule
}

/** Whether a value is a {@link Rule} built by {@link parseRule}. */
export function isRule(value: unknown): value is Rule {
  return typeof value === 'object' && value !== null && (value as { [RULE]?: true })[RULE] === true
}

/**
 * Validates one rule and returns it frozen.
 *
 * @param input `'100/min'`, `'5 per minute'`, `{ limit: 100, window: '1m', algorithm: 'sliding-window' }`, ...
 * @param defaultAlgorithm the algorithm of rules that name none
 * @throws ConfigError with the bad value and a valid example
 *
 * @example
 * ```ts
 * parseRule('100/15m') // { algorithm: 'gcra', limit: 100, windowMs: 900000, name: '100/15m', ... }
 * ```
 */
export function parseRule(input: RuleInput, defaultAlgorithm: Algorithm = 'gcra'): Rule {
  if (isRule(input)) return input
  if (typeof input === 'string') {
    const subject = `Rule ${show(input)}`
    if (input.length > MAX_RULE_TEXT) {
      fail(
        subject,
        `longer than ${MAX_RULE_TEXT} characters`,
        `Write a limit and a window, e.g. ${RULE_EXAMPLES}.`,
      )
    }
    const m = /^\s*(\S+?)\s*(?:\/|\s+per\s+)\s*(\d+)?\s*([a-zA-Z]+)\s*$/i.exec(input)
    if (!m) fail(subject, 'not a rule', `Write a limit and a window, e.g. ${RULE_EXAMPLES}.`)
    const limitText = m[1] as string
    const limit = /^\d+$/.test(limitText) ? Number(limitText) : Number.NaN
    if (!Number.isSafeInteger(limit) || limit < 1) {
      fail(
        subject,
        `the limit ${show(limitText)} is not a positive whole number`,
        `For example ${RULE_EXAMPLES}.`,
      )
    }
    const windowMs = unitWindow(m[2], m[3] as string, subject, RULE_EXAMPLES)
    return build(subject, limit, windowMs, defaultAlgorithm, undefined, undefined)
  }
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    return fail(
      `Rule ${show(input)}`,
      'not a rule',
      `Pass a string such as ${RULE_EXAMPLES}, or an object such as { limit: 100, window: "1m" }.`,
    )
  }
  const obj = input as RuleObjectBase & { window?: string | number; windowMs?: number }
  const subject = `Rule ${show(obj)}`
  for (const key of Object.keys(obj)) {
    if (!RULE_KEYS.has(key)) {
      fail(subject, `unknown option ${show(key)}`, 'A rule takes limit, window, algorithm, burst and name.')
    }
  }
  const limit = checkCount(subject, 'limit', obj.limit, '{ limit: 100, window: "1m" }')
  if (obj.window !== undefined && obj.windowMs !== undefined) {
    fail(subject, 'both window and windowMs are given', 'Keep one, e.g. window: "1m".')
  }
  const rawWindow = obj.window ?? obj.windowMs
  if (rawWindow === undefined) fail(subject, 'window is missing', 'For example { limit: 100, window: "1m" }.')
  const windowMs = parseWindow(rawWindow, subject)
  return build(subject, limit, windowMs, obj.algorithm ?? defaultAlgorithm, obj.burst, obj.name)
}

/** Whether a value is a {@link RuleSet} built by {@link parseRules}. */
export function isRuleSet(value: unknown): value is RuleSet {
  return typeof value === 'object' && value !== null && (value as { [RULESET]?: true })[RULESET] === true
}

/**
 * Validates one rule or several and returns a frozen {@link RuleSet}. Call it at startup (adapters
 * do, in `rateLimit()`), so a bad rule fails at construction rather than at the first request.
 *
 * @throws ConfigError for a bad rule, an empty list, or two rules with the same configuration or name
 */
export function parseRules(input: RulesInput | RuleSet, defaultAlgorithm: Algorithm = 'gcra'): RuleSet {
  if (isRuleSet(input)) return input
  const list = Array.isArray(input) ? (input as readonly RuleInput[]) : [input as RuleInput]
  if (list.length === 0)
    fail('Rules []', 'the list is empty', `Give at least one rule, e.g. ${RULE_EXAMPLES}.`)
  const rules = list.map((r) => parseRule(r, defaultAlgorithm))
  const ids = new Set<string>()
  const names = new Set<string>()
  for (const rule of rules) {
    if (ids.has(rule.id)) {
      fail(`Rules ${show(list)}`, `two rules are the same (${rule.name})`, 'Remove one of them.')
    }
    if (names.has(rule.name)) {
      fail(`Rules ${show(list)}`, `two rules are named ${show(rule.name)}`, 'Give each rule a distinct name.')
    }
    ids.add(rule.id)
    names.add(rule.name)
  }
  return Object.freeze({
    rules: Object.freeze(rules),
    single: rules.length === 1 ? rules[0] : undefined,
    [RULESET]: true as const,
  })
}
