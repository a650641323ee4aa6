// Replays requests (time, key) through the rules on every algorithm: one MemoryBackend per algorithm,
// its clock set to each request's own time, decided by core's real steps on the synchronous path.
import {
  ALGORITHMS,
  type Algorithm,
  type BackendResult,
  ConfigError,
  MemoryBackend,
  parseRules,
  type Rule,
} from '@fastlimit/core'

/** Options of {@link Simulation}. */
export interface SimulationOptions {
  /**
   * The algorithms to replay on.
   * @default all six: fixed-window, sliding-window, sliding-log, token-bucket, leaky-bucket, gcra
   */
  algorithms?: readonly Algorithm[]
  /**
   * The most distinct clients each algorithm's MemoryBackend keeps (the least recently seen is dropped
   * past it, as in production).
   * @default 10_000_000
   */
  maxKeys?: number
  /**
   * How many of the most denied clients to report per algorithm.
   * @default 10
   */
  top?: number
}

/** One algorithm's part of a {@link SimulationResult}. */
export interface AlgorithmResult {
  /** Requests admitted. */
  admitted: number
  /** Requests denied. */
  denied: number
  /** Distinct clients denied at least once. */
  clientsDenied: number
  /** The clients denied most, most first: the key, its denials and its requests. */
  topDenied: Array<{ key: string; denied: number; requests: number }>
  /** Admitted and denied requests per interval of `binMs`, from `from` on (empty intervals included). */
  timeline: Array<{ t: number; admitted: number; denied: number }>
  /** Why this algorithm was not replayed (a rule it cannot take). */
  skipped?: string
}

/** What a replay found. */
export interface SimulationResult {
  /** The rules, by name (`'100/1m'`). */
  rules: string[]
  /** Requests replayed. */
  requests: number
  /** Distinct clients (keys). */
  clients: number
  /** Epoch ms of the earliest and latest request (0 when there was none). */
  from: number
  to: number
  /** Requests whose time was earlier than a request before them in the log. */
  outOfOrder: number
  /** The width of a timeline interval, in milliseconds. */
  binMs: number
  /** Per algorithm. */
  algorithms: Partial<Record<Algorithm, AlgorithmResult>>
}

/** Timeline intervals kept before they are merged two by two (the width doubles). */
const MAX_BINS = 4096
const FIRST_BIN_MS = 1000

/**
 * Replays requests in the order given. Pure computation: no timers, no I/O; about a microsecond per
 * request and algorithm.
 *
 * @example
 * ```ts
 * const sim = new Simulation('100/min')
 * sim.add(Date.parse('2026-11-23T10:00:00Z'), '203.0.113.7')
 * const { algorithms } = sim.result()
 * ```
 */
export class Simulation {
  readonly #algorithms: Algorithm[] = []
  readonly #skipped = new Map<Algorithm, string>()
  readonly #backends: MemoryBackend[] = []
  readonly #rules: Array<readonly Rule[]> = []
  readonly #ruleNames: string[]
  readonly #top: number
  #now = 0
  readonly #index = new Map<string, number>()
  readonly #names: string[] = []
  #requestsByKey: Float64Array = new Float64Array(1024)
  #deniedByKey: Float64Array[] = []
  readonly #admitted: number[] = []
  readonly #denied: number[] = []
  #requests = 0
  #from = Number.POSITIVE_INFINITY
  #to = Number.NEGATIVE_INFINITY
  #last = Number.NEGATIVE_INFINITY
  #outOfOrder = 0
  #binMs = FIRST_BIN_MS
  #bins = new Map<number, Float64Array>()
  #lastBin = Number.NaN
  #lastCounts: Float64Array | undefined

  /**
   * @param rules the rules, as `FastLimit.check` takes them (`'100/min'`, `['10/s', '1000/day']`); a rule
   *   that names an algorithm keeps it, the others take each algorithm in turn
   * @throws ConfigError for a bad rule or option
   */
  constructor(rules: string | readonly string[], options: SimulationOptions = {}) {
    const { algorithms = ALGORITHMS, maxKeys = 10_000_000, top = 10 } = options
    if (!Number.isSafeInteger(top) || top < 0) {
      throw new ConfigError(`[fastlimit] [replay] top must be a whole number, got ${String(top)}.`)
    }
    this.#top = top
    let names: string[] | undefined
    for (const algorithm of algorithms) {
      if (!ALGORITHMS.includes(algorithm)) {
        throw new ConfigError(
          `[fastlimit] [replay] Unknown algorithm ${JSON.stringify(algorithm)}: use ${ALGORITHMS.join(', ')}.`,
        )
      }
      let set: readonly Rule[]
      try {
        set = parseRules(typeof rules === 'string' ? rules : [...rules], algorithm).rules
      } catch (err) {
        // A rule one algorithm could not take would skip only that one (reported with its reason);
        // a rule no algorithm can take fails below.
        this.#skipped.set(algorithm, err instanceof Error ? err.message : String(err))
        continue
      }
      names ??= set.map((r) => r.name)
      this.#algorithms.push(algorithm)
      this.#rules.push(set)
      this.#backends.push(new MemoryBackend({ maxKeys, cleanupIntervalMs: 0, clock: () => this.#now }))
      this.#admitted.push(0)
      this.#denied.push(0)
      this.#deniedByKey.push(new Float64Array(1024))
    }
    if (names === undefined) {
      const first = this.#skipped.values().next().value
      throw new ConfigError(first ?? '[fastlimit] [replay] No algorithm to replay on: name at least one.')
    }
    this.#ruleNames = names
  }

  /** The algorithms replayed (those whose rules were valid), in order. */
  get algorithms(): readonly Algorithm[] {
    return this.#algorithms
  }

  /** Requests replayed so far. */
  get requests(): number {
    return this.#requests
  }

  /** Replays one request of `key` at `timeMs` (epoch milliseconds) on every algorithm. */
  add(timeMs: number, key: string): void {
    const t = Math.floor(timeMs)
    this.#now = t
    this.#requests++
    if (t < this.#last) this.#outOfOrder++
    else this.#last = t
    if (t < this.#from) this.#from = t
    if (t > this.#to) this.#to = t
    let id = this.#index.get(key)
    if (id === undefined) id = this.#client(key)
    ;(this.#requestsByKey[id] as number)++
    const counts = this.#bin(t)
    const name = this.#names[id] as string
    const n = this.#algorithms.length
    for (let a = 0; a < n; a++) {
      const rules = this.#rules[a] as readonly Rule[]
      const backend = this.#backends[a] as MemoryBackend
      let allowed: boolean
      if (rules.length === 1)
        allowed = (backend.checkAndIncrementSync(name, rules[0] as Rule, 1) as BackendResult).allowed
      else
        allowed = (backend.checkAndIncrementAllSync(name, rules, 1) as BackendResult[]).every(
          (r) => r.allowed,
        )
      if (allowed) {
        ;(this.#admitted[a] as number)++
        ;(counts[a * 2] as number)++
      } else {
        ;(this.#denied[a] as number)++
        ;(counts[a * 2 + 1] as number)++
        ;((this.#deniedByKey[a] as Float64Array)[id] as number)++
      }
    }
  }

  /** A client seen for the first time: its index, and a copy of its key that holds no larger string. */
  #client(key: string): number {
    const id = this.#names.length
    // A key sliced from a big chunk of the file would keep the whole chunk alive.
    const own: string = JSON.parse(JSON.stringify(key))
    this.#names.push(own)
    this.#index.set(own, id)
    if (id >= this.#requestsByKey.length) {
      this.#requestsByKey = grow(this.#requestsByKey)
      this.#deniedByKey = this.#deniedByKey.map(grow)
    }
    return id
  }

  /** The timeline counts of `t`'s interval (merging intervals two by two when there are too many). */
  #bin(t: number): Float64Array {
    const b = Math.floor(t / this.#binMs)
    if (b === this.#lastBin) return this.#lastCounts as Float64Array
    let counts = this.#bins.get(b)
    if (counts === undefined) {
      counts = new Float64Array(this.#algorithms.length * 2)
      this.#bins.set(b, counts)
      if (this.#spanBins() > MAX_BINS) {
        this.#coarsen()
        return this.#bin(t)
      }
    }
    this.#lastBin = b
    this.#lastCounts = counts
    return counts
  }

  #spanBins(): number {
    const lo = Math.floor(this.#from / this.#binMs)
    const hi = Math.floor(this.#to / this.#binMs)
    return Number.isFinite(lo) && Number.isFinite(hi) ? hi - lo + 1 : 1
  }

  #coarsen(): void {
    while (this.#spanBins() > MAX_BINS) {
      const merged = new Map<number, Float64Array>()
      for (const [b, counts] of this.#bins) {
        const k = Math.floor(b / 2)
        const into = merged.get(k)
        if (into === undefined) merged.set(k, counts)
        else for (let i = 0; i < counts.length; i++) (into[i] as number) += counts[i] as number
      }
      this.#bins = merged
      this.#binMs *= 2
    }
    this.#lastBin = Number.NaN
    this.#lastCounts = undefined
  }

  /** What the replay found so far. */
  result(): SimulationResult {
    const from = this.#requests === 0 ? 0 : this.#from
    const to = this.#requests === 0 ? 0 : this.#to
    const algorithms: Partial<Record<Algorithm, AlgorithmResult>> = {}
    const first = Math.floor(from / this.#binMs)
    const last = Math.floor(to / this.#binMs)
    const clients = this.#names.length
    this.#algorithms.forEach((algorithm, a) => {
      const denied = this.#deniedByKey[a] as Float64Array
      let clientsDenied = 0
      const top: Array<{ id: number; denied: number }> = []
      for (let id = 0; id < clients; id++) {
        const d = denied[id] as number
        if (d === 0) continue
        clientsDenied++
        if (this.#top === 0) continue
        if (top.length < this.#top || d > (top[top.length - 1] as { denied: number }).denied) {
          top.push({ id, denied: d })
          top.sort((x, y) => y.denied - x.denied || x.id - y.id)
          if (top.length > this.#top) top.pop()
        }
      }
      const timeline: AlgorithmResult['timeline'] = []
      if (this.#requests > 0) {
        for (let b = first; b <= last; b++) {
          const counts = this.#bins.get(b)
          timeline.push({
            t: b * this.#binMs,
            admitted: counts ? (counts[a * 2] as number) : 0,
            denied: counts ? (counts[a * 2 + 1] as number) : 0,
          })
        }
      }
      algorithms[algorithm] = {
        admitted: this.#admitted[a] as number,
        denied: this.#denied[a] as number,
        clientsDenied,
        topDenied: top.map(({ id, denied: d }) => ({
          key: this.#names[id] as string,
          denied: d,
          requests: this.#requestsByKey[id] as number,
        })),
        timeline,
      }
    })
    for (const [algorithm, reason] of this.#skipped) {
      algorithms[algorithm] = {
        admitted: 0,
        denied: 0,
        clientsDenied: 0,
        topDenied: [],
        timeline: [],
        skipped: reason,
      }
    }
    return {
      rules: this.#ruleNames,
      requests: this.#requests,
      clients,
      from,
      to,
      outOfOrder: this.#outOfOrder,
      binMs: this.#binMs,
      algorithms,
    }
  }
}

function grow(a: Float64Array): Float64Array {
  const b = new Float64Array(a.length * 2)
  b.set(a)
  return b
}
