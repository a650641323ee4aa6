// `rules` as a function of the request: what it returns compiled once and cached, with its header writer.

import { FastlimitError, show } from '../errors'
import type { CheckOptions, FastLimit } from '../limiter'
import type { RuleSet, RulesInput } from '../rules'
import type { RateLimitHeaders } from './headers'
import type { InfoOwner } from './info'
import type { RulesFunction } from './options'

/** What one rule set of a middleware needs per request: the rules, their header writer and their owner. */
export interface RulesEntry {
  readonly rules: RuleSet
  /** The header writer of these rules, or `undefined` when the middleware writes no RateLimit fields. */
  readonly headers: RateLimitHeaders | undefined
  /** The owner of the infos of requests counted under these rules (its `group` is the middleware's). */
  readonly owner: InfoOwner
}

/** Distinct strings remembered before the cache starts over (a plan table has a handful). */
const MAX_STRINGS = 1000

/**
 * The rules of each request when `rules` is a function: calls it, compiles what it returns through
 * the limiter (whose own cache parses each distinct value once) and keeps one {@link RulesEntry} per
 * rule set, by the value returned (strings) or its identity (objects, arrays, rule sets).
 */
export class RulesOfRequest<Req> {
  readonly #fn: RulesFunction<Req>
  readonly #limiter: FastLimit
  readonly #group: InfoOwner
  readonly #reset: (identity: string) => Promise<void>
  readonly #scoped: CheckOptions | undefined
  readonly #headers: (rules: RuleSet) => RateLimitHeaders | undefined
  readonly #adapter: string
  readonly #requestName: string
  readonly #bySet = new WeakMap<RuleSet, RulesEntry>()
  readonly #byString = new Map<string, RulesEntry>()
  readonly #byObject = new WeakMap<object, RulesEntry>()

  constructor(
    fn: RulesFunction<Req>,
    limiter: FastLimit,
    group: InfoOwner,
    reset: (identity: string) => Promise<void>,
    scoped: CheckOptions | undefined,
    headers: (rules: RuleSet) => RateLimitHeaders | undefined,
    adapter: string,
    requestName: string,
  ) {
    this.#fn = fn
    this.#limiter = limiter
    this.#group = group
    this.#reset = reset
    this.#scoped = scoped
    this.#headers = headers
    this.#adapter = adapter
    this.#requestName = requestName
  }

  /**
   * The entry of `req`'s rules. A promise only when the function returns one. Rejects (or throws)
   * with what the function throws, or a `FastlimitError` (`ERR_FASTLIMIT_ARGUMENT`) naming a value that is not a rule.
   */
  of(req: Req): RulesEntry | Promise<RulesEntry> {
    const given = this.#fn(req)
    if (given instanceof Promise) return given.then((input) => this.#entry(input))
    return this.#entry(given)
  }

  #entry(input: RulesInput | RuleSet): RulesEntry {
    if (typeof input === 'string') {
      let entry = this.#byString.get(input)
      if (entry === undefined) {
        entry = this.#compile(input)
        if (this.#byString.size >= MAX_STRINGS) this.#byString.clear()
        this.#byString.set(input, entry)
      }
      return entry
    }
    if (typeof input === 'object' && input !== null) {
      let entry = this.#byObject.get(input)
      if (entry === undefined) {
        entry = this.#compile(input)
        this.#byObject.set(input, entry)
      }
      return entry
    }
    return this.#compile(input)
  }

  #compile(input: RulesInput | RuleSet): RulesEntry {
    let rules: RuleSet
    try {
      rules = this.#limiter.rules(input)
    } catch (err) {
      const why = err instanceof Error ? err.message.replace(/^\[fastlimit\] \[[a-z]+\] /, '') : String(err)
      throw new FastlimitError(
        'ERR_FASTLIMIT_ARGUMENT',
        `[fastlimit] [${this.#adapter}] rules(${this.#requestName}) returned ${show(input)}, which is not a rule: ${why}`,
        { cause: err },
      )
    }
    let entry = this.#bySet.get(rules)
    if (entry === undefined) {
      const limiter = this.#limiter
      const scoped = this.#scoped
      const headers = this.#headers(rules)
      const owner: InfoOwner = {
        scope: this.#group.scope,
        headers,
        group: this.#group,
        reset: this.#reset,
        peek: (identity) => limiter.peek(identity, rules, scoped),
      }
      entry = { rules, headers, owner }
      this.#bySet.set(rules, entry)
    }
    return entry
  }
}
