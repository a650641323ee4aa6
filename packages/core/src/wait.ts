// Waiting instead of refusing: FIFO queues per identity that sleep the exact retryAfterMs, and throttle().
//
// One queue per (scope, rules, identity) in a limiter. Only the head of a queue talks to the store: it
// checks, and on a denial sleeps until the exact retry time the store gave it, then checks again; on an
// admission it leaves and the next head checks at once. Every admission is a real `check`, so waiters
// never over-admit, whatever the number of processes. Every store answer is also a fact about the future
// (a bucket refills at `limit / windowMs` at most; a window admits at most `limit * (ceil(d / windowMs) + 1)`
// over `d` ms), from which each waiter's earliest possible admission is projected: a waiter whose
// projection already lies past its `maxWaitMs` is refused at that moment, never after waiting in vain.
//
// All the timers of a limiter's waits share one `setTimeout`, armed for the earliest due time while
// something waits and cleared as soon as nothing does (and on close).

import { ConfigError, checkPositiveCost, FastlimitError, show } from './errors'
import { validateScope } from './keys'
import { type Decision, FastLimit } from './limiter'
import { parseRules, type Rule, type RuleSet, type RulesInput } from './rules'

/** Options of {@link FastLimit.wait}. */
export interface WaitOptions {
  /**
   * Units to charge once admitted: a positive whole number.
   * @default 1
   */
  cost?: number
  /** The key space of the identity (see {@link CheckOptions.scope}). @default none */
  scope?: string
  /**
   * Cancels the wait: the promise rejects with `signal.reason` (as `fetch` does) and the waiter leaves
   * its queue at once. A check already sent for it is not recalled: if the store admits it, that unit
   * stays charged.
   * @default none
   */
  signal?: AbortSignal
  /**
   * The longest this wait may take, in milliseconds from the call. The wait is refused
   * (`ERR_FASTLIMIT_WAIT_TOO_LONG`) as soon as it is known that it cannot be admitted in time: at once
   * when the cost can never pass or when its projected admission (the store's last answer for its
   * queue and the cost queued ahead of it in this process) is already later, else at the moment a
   * store answer says so, and at the latest when `maxWaitMs` has passed. A check in flight at that
   * moment is let finish: if it admits, the wait resolves (late by at most that round trip). `0` admits
   * only what passes at once. A whole number from 0 to 2147483647, or `Infinity`.
   * @default Infinity
   */
  maxWaitMs?: number
  /**
   * The most waiters queued at once for this identity, scope and rules in this process (the one being
   * checked included). A wait that would exceed it is refused at once (`ERR_FASTLIMIT_OVERLOADED`),
   * so a backlog cannot grow without bound. With a finite `maxWaitMs` the queue is also bounded by
   * what the rules can admit within it. A whole number from 1 to 1000000000.
   * @default 1000
   */
  maxQueue?: number
}

/** The most waiters a queue holds by default ({@link WaitOptions.maxQueue}). */
export const DEFAULT_MAX_QUEUE = 1000
/** The longest delay one `setTimeout` takes; longer sleeps are taken in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1
const MAX_QUEUE_LIMIT = 1_000_000_000
const WAIT_OPTION_NAMES = ['cost', 'scope', 'signal', 'maxWaitMs', 'maxQueue']
const BUCKETS: ReadonlySet<string> = new Set(['gcra', 'token-bucket', 'leaky-bucket'])

/** One due time in {@link Timers}. */
interface Timer {
  at: number
  readonly seq: number
  readonly run: () => void
  /** Its place in the heap; -1 once it ran or was cancelled. */
  index: number
}

/**
 * Due times on the monotonic clock (`performance.now()`), kept in a binary heap, behind one
 * `setTimeout` armed for the earliest. Ties run in the order they were added.
 */
class Timers {
  readonly #heap: Timer[] = []
  #seq = 0
  #handle: ReturnType<typeof setTimeout> | undefined
  /** The due time the handle is armed for. */
  #armedFor = Number.POSITIVE_INFINITY

  /** Runs `run` once at `at` (a `performance.now()` time) or soon after. */
  at(at: number, run: () => void): Timer {
    const timer: Timer = { at, seq: this.#seq++, run, index: this.#heap.length }
    this.#heap.push(timer)
    this.#up(timer.index)
    this.#arm()
    return timer
  }

  cancel(timer: Timer): void {
    if (timer.index < 0) return
    this.#remove(timer)
    this.#arm()
  }

  #remove(timer: Timer): void {
    const i = timer.index
    timer.index = -1
    const heap = this.#heap
    const last = heap.pop() as Timer
    if (i < heap.length) {
      heap[i] = last
      last.index = i
      this.#down(i)
      this.#up(last.index)
    }
  }

  /** Forgets every timer and clears the handle. */
  clear(): void {
    for (const t of this.#heap) t.index = -1
    this.#heap.length = 0
    this.#arm()
  }

  /** Keeps the one handle armed for the earliest due time, or none when nothing is due. */
  #arm(): void {
    const first = this.#heap[0]
    const at = first === undefined ? Number.POSITIVE_INFINITY : first.at
    if (at === this.#armedFor) return
    if (this.#handle !== undefined) clearTimeout(this.#handle)
    this.#handle = undefined
    this.#armedFor = at
    if (first === undefined) return
    // A pending wait keeps the process alive, as a pending setTimeout does; nothing is left once
    // nothing waits. (An unref'd timer would let a script exit in the middle of its waits.)
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, Math.ceil(at - performance.now())))
    this.#handle = setTimeout(() => this.#fire(), delay)
  }

  #fire(): void {
    this.#handle = undefined
    this.#armedFor = Number.POSITIVE_INFINITY
    const now = performance.now()
    const due: Timer[] = []
    const heap = this.#heap
    while (heap.length > 0 && (heap[0] as Timer).at <= now) {
      const t = heap[0] as Timer
      this.#remove(t)
      due.push(t)
    }
    // Timers may fire a fraction of a millisecond before their time: those wait for the next round.
    for (const t of due) t.run()
    this.#arm()
  }

  #less(a: Timer, b: Timer): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq)
  }

  #up(i: number): void {
    const heap = this.#heap
    const t = heap[i] as Timer
    while (i > 0) {
      const p = (i - 1) >> 1
      const parent = heap[p] as Timer
      if (!this.#less(t, parent)) break
      heap[i] = parent
      parent.index = i
      i = p
    }
    heap[i] = t
    t.index = i
  }

  #down(i: number): void {
    const heap = this.#heap
    const n = heap.length
    const t = heap[i] as Timer
    for (;;) {
      const l = 2 * i + 1
      if (l >= n) break
      const r = l + 1
      const c = r < n && this.#less(heap[r] as Timer, heap[l] as Timer) ? r : l
      const child = heap[c] as Timer
      if (!this.#less(child, t)) break
      heap[i] = child
      child.index = i
      i = c
    }
    heap[i] = t
    t.index = i
  }
}

/** One pending `wait`. */
class Waiter {
  prev: Waiter | undefined = undefined
  next: Waiter | undefined = undefined
  /** Settled (resolved or rejected); a check in flight for it then only informs the queue. */
  done = false
  /** Its `maxWaitMs` ended while its check was in flight: that check decides. */
  expired = false
  timer: Timer | undefined = undefined
  onAbort: (() => void) | undefined = undefined

  constructor(
    readonly queue: Queue,
    readonly cost: number,
    /** `performance.now()` time after which it may no longer be admitted (`Infinity`: none). */
    readonly deadline: number,
    readonly maxWaitMs: number,
    readonly signal: AbortSignal | undefined,
    readonly resolve: (decision: Decision) => void,
    readonly reject: (reason: unknown) => void,
  ) {}
}

/** What the last store answer of a queue tells about the future. */
interface Known {
  /** `performance.now()` when that check was sent: every bound counts from it (the store decided later). */
  readonly sentAt: number
  /** `performance.now()` of the earliest next check worth sending for a cost of at least `cost`. */
  readonly retryAt: number
  readonly cost: number
  /** The decision, when the backend or the fallback made it (projections use its rules' results). */
  readonly decision: Decision | undefined
}

/** The waiters of one identity, scope and rule set, in arrival order. */
class Queue {
  head: Waiter | undefined = undefined
  tail: Waiter | undefined = undefined
  size = 0
  /** The sum of the costs queued. */
  units = 0
  /** How many waiters have a finite deadline (no projection sweep without them). */
  bounded = 0
  /** The waiter whose check is in flight. */
  checking: Waiter | undefined = undefined
  /** The head's sleep until its retry time. */
  wake: Timer | undefined = undefined
  known: Known | undefined = undefined
  /** The failure behind the last policy decision, given as the cause when a waiter then runs out of time. */
  lastError: FastlimitError | undefined = undefined

  constructor(
    readonly id: string,
    readonly identity: string,
    readonly scope: string | undefined,
    readonly set: RuleSet,
  ) {}
}

/** The least number of milliseconds, from the moment `known` was sent, before `units` more can pass `rule`. */
function boundMs(rule: Rule, units: number, known: Known | undefined, i: number): number {
  const L = rule.limit
  const W = rule.windowMs
  // Window algorithms: over any d ms at most limit * (ceil(d / W) + 1) is admitted.
  const windows = (Math.ceil(units / L) - 2) * W
  if (BUCKETS.has(rule.algorithm)) {
    const perUnit = W / L
    const result = known?.decision?.rules[i]
    // Nothing known: the bucket holds at most its capacity now and refills at limit per window.
    if (known === undefined || result === undefined || result.remaining === undefined)
      return (units - (rule.burst ?? L)) * perUnit
    // A denial: `cost` fits no earlier than retryAfterMs, so the room then is below cost + 1 ms of refill.
    if (!result.allowed) return result.retryAfterMs - 1 + (units - known.cost) * perUnit
    // An admission (or a bucket that would admit): the room is below remaining + 1.
    return (units - result.remaining - 1) * perUnit
  }
  const result = known?.decision?.rules[i]
  if (result !== undefined && !result.allowed && units >= (known as Known).cost) {
    return Math.max(result.retryAfterMs - 1, windows)
  }
  return windows
}

/**
 * The earliest `performance.now()` at which a waiter with `units` queued up to and including it (from
 * the head on) could be admitted, as far as this process knows: the store's last answer for the queue,
 * projected at the rules' fastest rate. Other processes can only make it later.
 */
function projection(queue: Queue, units: number, now: number): number {
  const known = queue.known
  const rules = queue.set.rules
  // A policy decision (the store is failing) tells nothing about the rules: count from now.
  const usable = known?.decision !== undefined ? known : undefined
  let ms = 0
  for (let i = 0; i < rules.length; i++) {
    const b = boundMs(rules[i] as Rule, units, usable, i)
    if (b > ms) ms = b
  }
  return (usable === undefined ? now : usable.sentAt) + ms
}

/**
 * The rejection of a `wait` (or a throttled call) that cannot be admitted within its `maxWaitMs`, or whose
 * cost can never pass: code `ERR_FASTLIMIT_WAIT_TOO_LONG`, with what was known when it was refused, so
 * that an HTTP 429 can carry `Retry-After` and the rate-limit headers.
 */
export class WaitTooLongError extends FastlimitError {
  /**
   * Milliseconds from the refusal until the cost could be admitted at the earliest, as far as this
   * process knew (the store's retry time, or its projection over the cost queued ahead); `Infinity` when
   * it can never pass; `undefined` when nothing was known (the store failing, or a wait for a
   * concurrency slot). A lower bound: other processes can only make it later.
   */
  readonly retryAfterMs: number | undefined
  /**
   * The store's last decision for this identity and rules in this process, if any (a denial, or the
   * admission of the waiter ahead): the limit, remaining and reset figures for rate-limit headers.
   */
  readonly decision: Decision | undefined

  constructor(
    message: string,
    retryAfterMs: number | undefined,
    decision: Decision | undefined,
    options?: { cause?: unknown },
  ) {
    super('ERR_FASTLIMIT_WAIT_TOO_LONG', message, options)
    this.name = 'WaitTooLongError'
    this.retryAfterMs = retryAfterMs
    this.decision = decision
  }
}

function tooLong(
  message: string,
  retryAfterMs: number | undefined,
  decision: Decision | undefined,
  cause?: unknown,
): WaitTooLongError {
  return new WaitTooLongError(
    `[fastlimit] [core] wait: ${message}`,
    retryAfterMs === undefined || retryAfterMs === Number.POSITIVE_INFINITY
      ? retryAfterMs
      : Math.max(0, Math.ceil(retryAfterMs)),
    decision,
    cause === undefined ? undefined : { cause },
  )
}

/** Checks a `maxWaitMs`: a whole number of milliseconds from 0 to 2^31 - 1, or Infinity. */
function checkMaxWait(value: unknown, tag: string): number {
  if (value === Number.POSITIVE_INFINITY) return value
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0 || value > MAX_TIMER_MS) {
    throw new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [${tag}] maxWaitMs must be a whole number of milliseconds from 0 to 2147483647, or Infinity, got ${show(value)}: e.g. 5000.`,
    )
  }
  return value
}

function checkMaxQueue(value: unknown, tag: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > MAX_QUEUE_LIMIT) {
    throw new FastlimitError(
      'ERR_FASTLIMIT_ARGUMENT',
      `[fastlimit] [${tag}] maxQueue must be a whole number from 1 to 1000000000, got ${show(value)}: e.g. 1000.`,
    )
  }
  return value
}

function isSignal(value: unknown): value is AbortSignal {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as AbortSignal).aborted === 'boolean' &&
    typeof (value as AbortSignal).addEventListener === 'function' &&
    typeof (value as AbortSignal).removeEventListener === 'function'
  )
}

/** The largest cost every rule of a set can ever admit. */
function capacityOf(rules: readonly Rule[]): { cap: number; rule: Rule } {
  let pick = rules[0] as Rule
  let cap = Number.POSITIVE_INFINITY
  for (const rule of rules) {
    const c = rule.burst ?? rule.limit
    if (c < cap) {
      cap = c
      pick = rule
    }
  }
  return { cap, rule: pick }
}

/** The ids of a rule set's rules, joined once per set (sets are frozen, and cached by the limiter). */
const RULE_IDS = new WeakMap<RuleSet, string>()

function ruleIds(set: RuleSet): string {
  let ids = RULE_IDS.get(set)
  if (ids === undefined) {
    ids = set.rules.map((r) => r.id).join('\n')
    RULE_IDS.set(set, ids)
  }
  return ids
}

/**
 * The waits of one {@link FastLimit}: its queues and their timers. Internal; reached through
 * `limiter.wait()` and {@link throttle}.
 */
export class Waits {
  readonly #limiter: FastLimit
  readonly #queues = new Map<string, Queue>()
  readonly #timers = new Timers()
  #closed: FastlimitError | undefined
  /** The shortest round trip of a store call seen so far, in ms (Infinity before the first). */
  #minRtt = Number.POSITIVE_INFINITY

  constructor(limiter: FastLimit) {
    this.#limiter = limiter
  }

  /** See {@link FastLimit.wait}. */
  wait(identity: string, rules: RulesInput | RuleSet, options?: WaitOptions): Promise<Decision> {
    let queue: Queue
    let cost = 1
    let maxWaitMs = Number.POSITIVE_INFINITY
    let maxQueue = DEFAULT_MAX_QUEUE
    let signal: AbortSignal | undefined
    try {
      if (this.#closed !== undefined) throw this.#closed
      if (typeof identity !== 'string') {
        throw new FastlimitError(
          'ERR_FASTLIMIT_ARGUMENT',
          `[fastlimit] [core] The identity must be a string, got ${show(identity)}: pass e.g. a user id or an API host.`,
        )
      }
      let scope: string | undefined
      if (options !== undefined) {
        if (typeof options !== 'object' || options === null) {
          throw new FastlimitError(
            'ERR_FASTLIMIT_ARGUMENT',
            `[fastlimit] [core] wait options must be an object, got ${show(options)}: e.g. { maxWaitMs: 5000 }.`,
          )
        }
        for (const key of Object.keys(options)) {
          if (!WAIT_OPTION_NAMES.includes(key)) {
            throw new FastlimitError(
              'ERR_FASTLIMIT_ARGUMENT',
              `[fastlimit] [core] Unknown wait option ${show(key)}: it takes ${WAIT_OPTION_NAMES.join(', ')}.`,
            )
          }
        }
        if (options.cost !== undefined) cost = checkPositiveCost('core', options.cost, ': e.g. { cost: 5 }')
        if (options.scope !== undefined) scope = validateScope(options.scope)
        if (options.maxWaitMs !== undefined) maxWaitMs = checkMaxWait(options.maxWaitMs, 'core')
        if (options.maxQueue !== undefined) maxQueue = checkMaxQueue(options.maxQueue, 'core')
        if (options.signal !== undefined) {
          if (!isSignal(options.signal)) {
            throw new FastlimitError(
              'ERR_FASTLIMIT_ARGUMENT',
              `[fastlimit] [core] signal must be an AbortSignal, got ${show(options.signal)}: e.g. AbortSignal.timeout(5000).`,
            )
          }
          signal = options.signal
        }
      }
      const set = this.#limiter.rules(rules)
      const { cap, rule } = capacityOf(set.rules)
      if (cost > cap) {
        throw tooLong(
          `cost ${cost} can never pass rule ${show(rule.name)}, which holds at most ${cap}: however long it waits. ` +
            'Lower the cost, or raise the rule (its limit, or burst).',
          Number.POSITIVE_INFINITY,
          undefined,
        )
      }
      const id = `${scope ?? ''}\n${ruleIds(set)}\n${identity}`
      let q = this.#queues.get(id)
      if (q === undefined) {
        q = new Queue(id, identity, scope, set)
        this.#queues.set(id, q)
      }
      queue = q
      if (signal?.aborted) {
        this.#drop(queue)
        return Promise.reject(signal.reason)
      }
      if (queue.size >= maxQueue) {
        throw new FastlimitError(
          'ERR_FASTLIMIT_OVERLOADED',
          `[fastlimit] [core] wait: ${queue.size} waiters are already queued for this identity in this process ` +
            `(maxQueue ${maxQueue}): refused at once. Raise maxQueue, or shed the work.`,
        )
      }
    } catch (err) {
      return Promise.reject(err)
    }
    const now = performance.now()
    const deadline = now + maxWaitMs
    if (deadline < Number.POSITIVE_INFINITY) {
      const earliest = projection(queue, queue.units + cost, now)
      if (earliest > deadline) {
        this.#drop(queue)
        return Promise.reject(
          tooLong(
            `admitting cost ${cost} takes at least ${Math.ceil(earliest - now)} ms (the rules' last answer and ` +
              `the ${queue.units} units queued ahead in this process), more than maxWaitMs ${maxWaitMs}: refused at once.`,
            earliest - now,
            queue.known?.decision,
          ),
        )
      }
    }
    return new Promise<Decision>((resolve, reject) => {
      const w = new Waiter(queue, cost, deadline, maxWaitMs, signal, resolve, reject)
      if (queue.tail === undefined) queue.head = w
      else {
        queue.tail.next = w
        w.prev = queue.tail
      }
      queue.tail = w
      queue.size++
      queue.units += cost
      if (deadline < Number.POSITIVE_INFINITY) {
        queue.bounded++
        w.timer = this.#timers.at(deadline, () => this.#expire(w))
      }
      if (signal !== undefined) {
        w.onAbort = () => this.#abort(w)
        signal.addEventListener('abort', w.onAbort, { once: true })
      }
      if (queue.head === w) this.#pump(queue)
    })
  }

  /** Rejects every pending wait with `error` and clears the timer; later waits reject with it too. */
  close(error: FastlimitError): void {
    if (this.#closed !== undefined) return
    this.#closed = error
    const queues = [...this.#queues.values()]
    this.#queues.clear()
    this.#timers.clear()
    for (const queue of queues) {
      queue.wake = undefined
      let w = queue.head
      while (w !== undefined) {
        const next = w.next
        this.#settle(w)
        w.reject(error)
        w = next
      }
    }
  }

  /** Removes a queue that holds nothing and waits for nothing. */
  #drop(queue: Queue): void {
    if (queue.size === 0 && queue.checking === undefined && queue.wake === undefined) {
      if (this.#queues.get(queue.id) === queue) this.#queues.delete(queue.id)
    }
  }

  /** Takes a waiter out of its queue and releases what it holds. */
  #settle(w: Waiter): void {
    if (w.done) return
    w.done = true
    const queue = w.queue
    if (w.prev === undefined) queue.head = w.next
    else w.prev.next = w.next
    if (w.next === undefined) queue.tail = w.prev
    else w.next.prev = w.prev
    w.prev = undefined
    w.next = undefined
    queue.size--
    queue.units -= w.cost
    if (w.deadline < Number.POSITIVE_INFINITY) queue.bounded--
    if (w.timer !== undefined) {
      this.#timers.cancel(w.timer)
      w.timer = undefined
    }
    if (w.onAbort !== undefined) {
      w.signal?.removeEventListener('abort', w.onAbort)
      w.onAbort = undefined
    }
  }

  /** A waiter left by abort or deadline: if it was the sleeping head, the new head decides afresh. */
  #left(w: Waiter, wasHead: boolean): void {
    const queue = w.queue
    if (wasHead && queue.wake !== undefined) {
      this.#timers.cancel(queue.wake)
      queue.wake = undefined
    }
    if (wasHead) this.#pump(queue)
    else this.#drop(queue)
  }

  #abort(w: Waiter): void {
    if (w.done) return
    const wasHead = w.queue.head === w
    this.#settle(w)
    w.reject(w.signal?.reason)
    this.#left(w, wasHead)
  }

  #expire(w: Waiter): void {
    w.timer = undefined
    if (w.done) return
    if (w.queue.checking === w) {
      // Its check is in flight: the store's answer decides (an admission is not thrown away).
      w.expired = true
      return
    }
    const queue = w.queue
    const wasHead = queue.head === w
    if (wasHead && queue.wake !== undefined && queue.wake.at <= w.deadline) {
      // Its retry time is its deadline: the check it was sleeping for still counts.
      this.#timers.cancel(queue.wake)
      queue.wake = undefined
      w.expired = true
      this.#check(queue, w, performance.now())
      return
    }
    const known = queue.known
    const now = performance.now()
    let retryAfterMs: number | undefined
    if (known?.decision !== undefined) {
      let units = 0
      for (let x = queue.head; x !== undefined && x !== w.next; x = x.next) units += x.cost
      retryAfterMs = Math.max(wasHead ? known.retryAt : 0, projection(queue, units, now)) - now
    }
    this.#settle(w)
    w.reject(
      tooLong(
        `not admitted within maxWaitMs ${w.maxWaitMs}.`,
        retryAfterMs,
        known?.decision,
        known !== undefined && known.decision === undefined ? queue.lastError : undefined,
      ),
    )
    this.#left(w, wasHead)
  }

  /** Moves a queue on: checks for its head, or sleeps until the head's retry time. */
  #pump(queue: Queue): void {
    for (;;) {
      if (this.#closed !== undefined) return
      if (queue.checking !== undefined || queue.wake !== undefined) return
      const w = queue.head
      if (w === undefined) {
        this.#drop(queue)
        return
      }
      const now = performance.now()
      const known = queue.known
      if (
        known !== undefined &&
        known.retryAt > now &&
        (w.cost >= known.cost || known.decision === undefined)
      ) {
        if (known.decision !== undefined && known.retryAt > w.deadline) {
          // The store's answer already says this head cannot pass in time.
          this.#settle(w)
          w.reject(
            tooLong(
              `the rules admit cost ${w.cost} no earlier than in ${Math.ceil(known.retryAt - now)} ms, ` +
                `after maxWaitMs ${w.maxWaitMs} ends: refused without waiting.`,
              known.retryAt - now,
              known.decision,
            ),
          )
          continue
        }
        // Sleep to the exact retry time (after a policy denial: to the policy's retry time, and this
        // head's deadline rejects it if that comes first).
        queue.wake = this.#timers.at(known.retryAt, () => {
          queue.wake = undefined
          this.#pump(queue)
        })
        return
      }
      this.#check(queue, w, now)
      return
    }
  }

  #check(queue: Queue, w: Waiter, sentAt: number): void {
    queue.checking = w
    let decided: Promise<Decision>
    try {
      decided = this.#limiter.check(queue.identity, queue.set, { cost: w.cost, scope: queue.scope })
    } catch (err) {
      decided = Promise.reject(err)
    }
    decided.then(
      (d) => this.#decided(queue, w, sentAt, d),
      (err) => this.#failed(queue, w, err),
    )
  }

  #decided(queue: Queue, w: Waiter, sentAt: number, d: Decision): void {
    queue.checking = undefined
    if (this.#closed !== undefined) return
    const now = performance.now()
    if (d.allowed) {
      queue.known = { sentAt, retryAt: now, cost: w.cost, decision: d.source === 'policy' ? undefined : d }
      if (!w.done) {
        this.#settle(w)
        w.resolve(d)
      }
      // Else it was aborted while its check was in flight: the unit it took stays charged.
    } else if (d.source === 'policy') {
      // The store is failing and the policy denies: nothing is known of the rules; ask again after
      // the policy's retry time, waiters leaving at their deadlines meanwhile.
      queue.lastError = d.error
      queue.known = { sentAt, retryAt: now + d.retryAfterMs, cost: w.cost, decision: undefined }
      if (!w.done && w.expired) {
        this.#settle(w)
        w.reject(
          tooLong(
            `not admitted within maxWaitMs ${w.maxWaitMs}: the store is failing.`,
            undefined,
            undefined,
            d.error,
          ),
        )
      }
    } else if (!Number.isFinite(d.retryAfterMs)) {
      queue.known = undefined
      if (!w.done) {
        this.#settle(w)
        w.reject(
          tooLong(
            `cost ${w.cost} can never pass rule ${show(d.rule.name)} (the store says so), however long it waits.`,
            Number.POSITIVE_INFINITY,
            d,
          ),
        )
      }
    } else {
      // Aim for the check to reach the store at the exact retry time: leave half a round trip early
      // (half the shortest one seen, so a busy event loop does not make it early). A process far from
      // the store is then not beaten to every unit by nearer ones; a check that still arrives early is
      // denied, charges nothing and gives the exact time left.
      const rtt = now - sentAt
      if (rtt < this.#minRtt) this.#minRtt = rtt
      const retryAt = now + d.retryAfterMs - this.#minRtt / 2
      queue.known = { sentAt, retryAt, cost: w.cost, decision: d }
      if (!w.done && (w.expired || retryAt > w.deadline)) {
        this.#settle(w)
        w.reject(
          tooLong(
            `the rules admit cost ${w.cost} no earlier than in ${d.retryAfterMs} ms, after maxWaitMs ${w.maxWaitMs} ends: ` +
              'refused without waiting.',
            retryAt - now,
            d,
          ),
        )
      }
    }
    this.#sweep(queue, now)
    this.#pump(queue)
  }

  #failed(queue: Queue, w: Waiter, err: unknown): void {
    queue.checking = undefined
    if (this.#closed !== undefined) return
    // The policy is 'throw' (or the arguments were bad): this waiter gets the error; the next checks afresh.
    if (!w.done) {
      this.#settle(w)
      w.reject(err)
    }
    this.#pump(queue)
  }

  /** Refuses, at once, every waiter whose projected admission is now known to come after its deadline. */
  #sweep(queue: Queue, now: number): void {
    if (queue.bounded === 0 || queue.known?.decision === undefined) return
    let units = 0
    let w = queue.head
    while (w !== undefined) {
      const next = w.next
      units += w.cost
      if (w.deadline < Number.POSITIVE_INFINITY && w !== queue.checking) {
        const earliest = projection(queue, units, now)
        if (earliest > w.deadline) {
          units -= w.cost
          this.#settle(w)
          w.reject(
            tooLong(
              `admitting cost ${w.cost} takes at least ${Math.ceil(earliest - now)} ms more (the rules' last answer and ` +
                `the units queued ahead in this process), after maxWaitMs ${w.maxWaitMs} ends: refused without waiting.`,
              earliest - now,
              queue.known?.decision,
            ),
          )
        }
      }
      w = next
    }
  }
}

/** Options of {@link throttle}. `A` is the throttled function's parameter list. */
export interface ThrottleOptions<A extends readonly unknown[] = readonly unknown[]> {
  /**
   * The limiter whose store holds the limit. Pass one on Redis to share the limit across processes
   * (and with your HTTP middleware, by using the same identity and rules).
   * @default a new in-memory `FastLimit()` of this throttle alone, made at the first call
   */
  limiter?: FastLimit
  /** The limit: `'10/s'`, `['10/s', '1000/h']`, `{ limit: 10, window: '1s', burst: 1 }`. */
  rules: RulesInput | RuleSet
  /**
   * The identity each call is limited under: a string, or a function of the call's arguments (a host
   * name for a per-domain limit, a tenant id). Calls under different keys have independent limits and
   * queues. Give each throttled function its own key when they share a limiter.
   * @default 'throttle'
   */
  key?: string | ((...args: A) => string)
  /**
   * What a call costs: a positive whole number, or a function of the call's arguments.
   * @default 1
   */
  cost?: number | ((...args: A) => number)
  /** The key space of the identities ({@link CheckOptions.scope}). @default none */
  scope?: string
  /**
   * The longest a call may wait before it starts (for a concurrency slot, then for the rate); past
   * it, or as soon as it is known to be impossible, the call rejects with `ERR_FASTLIMIT_WAIT_TOO_LONG`
   * and `fn` is not called. See {@link WaitOptions.maxWaitMs}.
   * @default Infinity
   */
  maxWaitMs?: number
  /**
   * The most calls waiting per key in this process (each queue: for a concurrency slot, and for the
   * rate). Beyond it a call rejects at once with `ERR_FASTLIMIT_OVERLOADED`.
   * @default 1000
   */
  maxQueue?: number
  /**
   * The most calls of `fn` running at once per key in this process: a call waits (first in, first out)
   * for a slot before it waits for the rate, and frees it when `fn` settles. A whole number from 1.
   * @default Infinity (no cap)
   */
  concurrency?: number
}

const THROTTLE_OPTION_NAMES = [
  'limiter',
  'rules',
  'key',
  'cost',
  'scope',
  'maxWaitMs',
  'maxQueue',
  'concurrency',
]

/** A throttled function: the same parameters and `this`, and a promise of the same result. */
export type Throttled<F extends (...args: never[]) => unknown> = (
  this: ThisParameterType<F>,
  ...args: Parameters<F>
) => Promise<Awaited<ReturnType<F>>>

/** A FIFO of calls waiting for one of `concurrency` slots under one key. */
interface Slots {
  active: number
  readonly waiting: Array<{
    grant: () => void
    timer: ReturnType<typeof setTimeout> | undefined
    gone: boolean
  }>
}

/**
 * Wraps an async function so that every call waits its turn under the rules (and, with
 * `concurrency`, for a free slot) before `fn` runs: calls over the limit are delayed, not refused.
 * Exact across processes when the limiter is on a shared store (Redis, SQLite): every start is an
 * admission the store made.
 *
 * @example
 * ```ts
 * // At most 10 calls a second to the API, across every process sharing the Redis:
 * const get = throttle((url: string) => fetch(url), { limiter, rules: '10/s', key: 'api.example.com' })
 * const res = await get('https://api.example.com/items')   // Promise<Response>
 *
 * // Per domain, at most 2 a second and 3 in flight:
 * const crawl = throttle(fetchPage, { rules: '2/s', key: (url) => new URL(url).host, concurrency: 3 })
 * ```
 * @throws ConfigError for bad options, at once
 */
export function throttle<F extends (...args: never[]) => unknown>(
  fn: F,
  options: ThrottleOptions<Parameters<F>>,
): Throttled<F> {
  const tag = 'core'
  if (typeof fn !== 'function') {
    throw new ConfigError(`[fastlimit] [${tag}] throttle needs a function to wrap, got ${show(fn)}.`)
  }
  if (typeof options !== 'object' || options === null) {
    throw new ConfigError(
      `[fastlimit] [${tag}] throttle options must be an object, got ${show(options)}: e.g. { rules: '10/s' }.`,
    )
  }
  for (const name of Object.keys(options)) {
    if (!THROTTLE_OPTION_NAMES.includes(name)) {
      throw new ConfigError(
        `[fastlimit] [${tag}] Unknown throttle option ${show(name)}: it takes ${THROTTLE_OPTION_NAMES.join(', ')}.`,
      )
    }
  }
  const { limiter: given, rules, key = 'throttle', cost = 1, scope, concurrency } = options
  // Duck-typed: a FastLimit from another copy of core (ESM beside CJS) works as well.
  if (
    given !== undefined &&
    (typeof given !== 'object' ||
      given === null ||
      typeof given.wait !== 'function' ||
      typeof given.rules !== 'function')
  ) {
    throw new ConfigError(`[fastlimit] [${tag}] throttle's limiter must be a FastLimit, got ${show(given)}.`)
  }
  if (rules === undefined) {
    throw new ConfigError(`[fastlimit] [${tag}] throttle needs rules: e.g. { rules: '10/s' }.`)
  }
  // Bad rules fail here, not at the first call (no limiter, and so no timer, is made before that).
  const set = given !== undefined ? given.rules(rules) : parseRules(rules)
  if (typeof key !== 'string' && typeof key !== 'function') {
    throw new ConfigError(
      `[fastlimit] [${tag}] throttle's key must be a string or a function of the arguments, got ${show(key)}.`,
    )
  }
  if (typeof cost !== 'function') checkConfig(() => checkPositiveCost(tag, cost, ': e.g. { cost: 5 }'))
  if (scope !== undefined) checkConfig(() => validateScope(scope))
  const maxWaitMs = checkConfig(() => checkMaxWait(options.maxWaitMs ?? Number.POSITIVE_INFINITY, tag))
  const maxQueue = checkConfig(() => checkMaxQueue(options.maxQueue ?? DEFAULT_MAX_QUEUE, tag))
  if (
    concurrency !== undefined &&
    concurrency !== Number.POSITIVE_INFINITY &&
    (!Number.isSafeInteger(concurrency) || concurrency < 1)
  ) {
    throw new ConfigError(
      `[fastlimit] [${tag}] concurrency must be a whole number from 1, or Infinity, got ${show(concurrency)}: e.g. 3.`,
    )
  }
  const cap = concurrency ?? Number.POSITIVE_INFINITY
  let limiter = given
  const slots = new Map<string, Slots>()

  const release = (id: string, s: Slots) => {
    for (;;) {
      const next = s.waiting.shift()
      if (next === undefined) break
      if (next.gone) continue
      next.grant()
      return
    }
    s.active--
    if (s.active === 0) slots.delete(id)
  }

  /** Waits for a slot under `id`; resolves with its release function. */
  const acquire = (id: string, deadline: number): Promise<() => void> => {
    let s = slots.get(id)
    if (s === undefined) {
      s = { active: 0, waiting: [] }
      slots.set(id, s)
    }
    const held = s
    let released = false
    const free = () => {
      if (released) return
      released = true
      release(id, held)
    }
    if (held.active < cap) {
      held.active++
      return Promise.resolve(free)
    }
    if (held.waiting.length >= maxQueue) {
      return Promise.reject(
        new FastlimitError(
          'ERR_FASTLIMIT_OVERLOADED',
          `[fastlimit] [${tag}] throttle: ${held.waiting.length} calls already wait for a slot under this key ` +
            `(concurrency ${cap}, maxQueue ${maxQueue}): refused at once. Raise maxQueue, or shed the work.`,
        ),
      )
    }
    return new Promise((resolve, reject) => {
      const entry: Slots['waiting'][number] = {
        gone: false,
        timer: undefined,
        grant: () => {
          if (entry.timer !== undefined) clearTimeout(entry.timer)
          resolve(free)
        },
      }
      if (deadline < Number.POSITIVE_INFINITY) {
        entry.timer = setTimeout(
          () => {
            entry.gone = true
            reject(
              tooLong(
                `no concurrency slot (concurrency ${cap}) freed within maxWaitMs ${maxWaitMs}.`,
                undefined,
                undefined,
              ),
            )
          },
          Math.max(0, Math.ceil(deadline - performance.now())),
        )
      }
      held.waiting.push(entry)
    })
  }

  return async function throttled(
    this: ThisParameterType<F>,
    ...args: Parameters<F>
  ): Promise<Awaited<ReturnType<F>>> {
    const id = typeof key === 'function' ? key(...args) : key
    if (typeof id !== 'string') {
      throw new FastlimitError(
        'ERR_FASTLIMIT_ARGUMENT',
        `[fastlimit] [${tag}] throttle's key function must return a string, got ${show(id)}.`,
      )
    }
    const units = typeof cost === 'function' ? cost(...args) : cost
    limiter ??= new FastLimit()
    const started = performance.now()
    let free: (() => void) | undefined
    if (cap < Number.POSITIVE_INFINITY) free = await acquire(id, started + maxWaitMs)
    try {
      const left =
        maxWaitMs === Number.POSITIVE_INFINITY
          ? maxWaitMs
          : Math.max(0, Math.floor(maxWaitMs - (performance.now() - started)))
      await limiter.wait(id, set, {
        cost: units,
        maxWaitMs: left,
        maxQueue,
        ...(scope === undefined ? {} : { scope }),
      })
      return (await fn.apply(this, args as never)) as Awaited<ReturnType<F>>
    } finally {
      free?.()
    }
  }
}

/** Runs a validation that throws an argument error, as a ConfigError of throttle's construction. */
function checkConfig<T>(check: () => T): T {
  try {
    return check()
  } catch (err) {
    if (err instanceof FastlimitError && err.code === 'ERR_FASTLIMIT_ARGUMENT') {
      throw new ConfigError(err.message.replace('[fastlimit] [core] ', '[fastlimit] [core] throttle: '))
    }
    throw err
  }
}
