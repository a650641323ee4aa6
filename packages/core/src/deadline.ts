// Timeouts for backend calls without a timer per call: one timer for a FIFO of pending calls.
//
// Every call of a limiter has the same timeout, so deadlines arrive in the order calls start. One
// timer is armed for the oldest pending call; when it fires, every due call is rejected and the timer
// is re-armed for the next. A call that settles in time only marks itself done (and is trimmed from
// the head), so the common path costs an object and two field writes instead of setTimeout and
// clearTimeout. Deadlines use the monotonic `performance.now()`, never the wall clock: an NTP step
// must neither expire calls early nor hold them for the length of the step.

/** One call waiting for its answer or its deadline. */
export interface Pending {
  /** Marks the call answered; false when its deadline has already passed (the answer is then ignored). */
  settle(): boolean
}

class Entry implements Pending {
  next: Entry | undefined = undefined
  done = false
  constructor(
    readonly deadline: number,
    public expire: ((now: number) => void) | undefined,
  ) {}

  settle(): boolean {
    if (this.done) return false
    this.done = true
    this.expire = undefined
    return true
  }
}

/** A queue of deadlines `ms` after each call's start. */
export class Deadlines {
  readonly #ms: number
  #head: Entry | undefined
  #tail: Entry | undefined
  #timer: ReturnType<typeof setTimeout> | undefined

  constructor(ms: number) {
    this.#ms = ms
  }

  /** Registers a call; `expire` runs once if it is still pending `ms` from now. */
  add(expire: (now: number) => void): Pending {
    const entry = new Entry(performance.now() + this.#ms, expire)
    // Calls answered in time are dropped from the head as new ones arrive.
    let head = this.#head
    while (head?.done) head = head.next
    this.#head = head
    if (this.#head === undefined) this.#head = entry
    else (this.#tail as Entry).next = entry
    this.#tail = entry
    if (this.#timer === undefined) this.#arm(this.#ms)
    return entry
  }

  #arm(ms: number): void {
    this.#timer = setTimeout(() => this.#fire(), ms)
    // A pending timeout must never keep the process alive.
    ;(this.#timer as { unref?: () => void }).unref?.()
  }

  #fire(): void {
    this.#timer = undefined
    const now = performance.now()
    let e = this.#head
    while (e !== undefined && (e.done || e.deadline <= now)) {
      if (!e.done) {
        const expire = e.expire
        e.done = true
        e.expire = undefined
        expire?.(now)
      }
      e = e.next
    }
    this.#head = e
    if (e === undefined) this.#tail = undefined
    else this.#arm(Math.max(1, Math.ceil(e.deadline - now)))
  }
}
