// Waiting for another connection's write lock without blocking the event loop: a FIFO of calls retried on
// short timers until each one's deadline.
import type { FastlimitError } from '@fastlimit/core'
import { isBusy, sqliteCode } from './errors'

/** Retry delays after consecutive failed attempts, in milliseconds (the last one repeats). */
const BACKOFF_MS = [1, 1, 2, 2, 4, 4, 8]
/** How long one turn of the event loop may spend running calls that waited, before it yields. */
const TURN_BUDGET_MS = 4

/** A call waiting for the lock. */
interface Waiter {
  readonly attempt: () => unknown
  /** Epoch milliseconds (`Date.now()`) at which it gives up. */
  readonly deadline: number
  /** Whether the deadline is the caller's own (else the backend's busyTimeoutMs). */
  readonly byDeadline: boolean
  readonly started: number
  readonly resolve: (value: never) => void
  readonly reject: (err: unknown) => void
  /** The last SQLITE_BUSY error, the cause of a timeout. */
  busy: unknown
}

/** What the queue asks of its backend. */
export interface LockHooks {
  /** Turns a failed attempt (not a busy one) into the error the call rejects with. */
  readonly failed: (err: unknown) => FastlimitError
  /** The error of a call that waited until its deadline. */
  readonly timedOut: (waitedMs: number, byDeadline: boolean, busy: unknown) => FastlimitError
  /** Runs `run` with the connection set not to wait for the lock at all (a retry must never block). */
  readonly noWait: <T>(run: () => T) => T
}

/** Whether an attempt failed only because another connection holds the lock. */
export function isBusyError(err: unknown): boolean {
  return isBusy(sqliteCode(err))
}

/**
 * Calls that could not take the write lock at once. Each is retried, oldest first, on timers that back off
 * from 1 to 8 ms, with the connection told not to wait: the event loop is never blocked by a lock held
 * elsewhere. A call whose deadline passes is rejected with the error `timedOut` builds, and is never applied
 * afterwards. While calls wait, new calls queue behind them (first come, first served).
 */
export class LockQueue {
  private readonly waiters: Waiter[] = []
  private timer: ReturnType<typeof setTimeout> | undefined
  private misses = 0

  constructor(private readonly hooks: LockHooks) {}

  /** Whether calls are waiting for the lock (a synchronous caller should then wait its turn too). */
  get waiting(): boolean {
    return this.waiters.length > 0
  }

  /**
   * Runs `attempt` now if nothing waits, else (or if it finds the lock taken) queues it until it can run
   * or `deadline` passes.
   * @param attempt one try: throws a busy error when the lock is taken; checks the deadline itself once it
   *   holds the lock, so that nothing is applied late.
   * @param found the busy error of a try just made (a group that found the lock taken): the call is queued
   *   without trying again now.
   */
  run<T>(attempt: () => T, deadline: number, byDeadline: boolean, found?: unknown): Promise<T> {
    let busy: unknown = found
    if (found === undefined && this.waiters.length === 0) {
      try {
        return Promise.resolve(attempt())
      } catch (err) {
        if (!isBusyError(err)) return Promise.reject(this.hooks.failed(err))
        busy = err
      }
    }
    return new Promise<T>((resolve, reject) => {
      this.waiters.push({
        attempt,
        deadline,
        byDeadline,
        started: Date.now(),
        resolve: resolve as (value: never) => void,
        reject,
        busy,
      })
      if (this.timer === undefined) this.arm()
    })
  }

  /** Rejects every waiting call with `err` (close, or the limiter gave up on them all). */
  drop(err: unknown): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    this.misses = 0
    for (const w of this.waiters.splice(0)) w.reject(err)
  }

  /** Schedules the next try: after the backoff (at once after a turn that yielded), or sooner at the earliest deadline. */
  private arm(yielded = false): void {
    const now = Date.now()
    let wait = yielded ? 0 : (BACKOFF_MS[Math.min(this.misses, BACKOFF_MS.length - 1)] as number)
    for (const w of this.waiters) wait = Math.min(wait, w.deadline - now)
    this.timer = setTimeout(() => this.pump(), Math.max(0, wait))
  }

  private pump(): void {
    this.timer = undefined
    const started = performance.now()
    let yielded = false
    try {
      this.hooks.noWait(() => {
        this.expire()
        while (this.waiters.length > 0) {
          const w = this.waiters[0] as Waiter
          let value: unknown
          try {
            value = w.attempt()
          } catch (err) {
            if (isBusyError(err)) {
              w.busy = err
              this.misses++
              return
            }
            this.waiters.shift()
            w.reject(this.hooks.failed(err))
            continue
          }
          this.misses = 0
          this.waiters.shift()
          w.resolve(value as never)
          if (performance.now() - started > TURN_BUDGET_MS) {
            yielded = true
            return
          }
        }
      })
    } catch (err) {
      // The connection itself failed (a Database closed by its owner): no waiting call can succeed.
      this.drop(this.hooks.failed(err))
      return
    }
    if (this.waiters.length > 0) this.arm(yielded)
  }

  /** Rejects the calls whose deadline has passed. */
  private expire(): void {
    const now = Date.now()
    let kept = 0
    for (const w of this.waiters) {
      if (now >= w.deadline) w.reject(this.hooks.timedOut(now - w.started, w.byDeadline, w.busy))
      else this.waiters[kept++] = w
    }
    this.waiters.length = kept
  }
}
