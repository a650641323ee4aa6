// The shape every algorithm shares: a pure integer step from (state, now, bucket, cost) to a new state.
import type { BackendResult, BucketConfig, Charge } from '../backend'

/**
 * An algorithm's stored state: a short array of safe integers (never fractions), so that every
 * store can keep it as text (`encodeState`) and a Lua port computes the same numbers bit for bit.
 */
export type State = readonly number[]

/** What a {@link StepFunction} returns. */
export interface StepOutput {
  /**
   * The state to store. Write it back (with a TTL of `ttlMs`) when `result.allowed` and `cost > 0`, or
   * when `rebased`; otherwise it means the same as the state passed in and the write may be skipped.
   */
  readonly state: number[]
  /** The decision, every field exact. */
  readonly result: BackendResult
  /** Milliseconds after which the state is equivalent to no state at all and may be deleted (>= 1). */
  readonly ttlMs: number
  /**
   * The stored state lay further ahead of `nowMs` than `skewMs` allows (the clock stepped backwards)
   * and `state` is that state moved back to now. Write it back even when nothing was charged, so that
   * the next call continues from it and `retryAfterMs` holds. A state ahead by no more than `skewMs`
   * is another clock's and is never moved: the step counts from it as it lies.
   */
  readonly rebased: boolean
}

/**
 * An algorithm as a pure function of integers.
 *
 * @param state the stored state, or `undefined` when the key has none (or it expired, or is malformed)
 * @param nowMs the current time, integer epoch milliseconds
 * @param bucket the validated configuration
 * @param cost a positive integer to charge, or `0` to only read (`peek`): then `allowed` says whether
 *   a cost of 1 would pass, `retryAfterMs` when it would, and nothing is charged.
 * @param skewMs how far apart the clocks of the processes sharing the state may be (a whole number of
 *   milliseconds, 0 by default: one clock). A state lying ahead of `nowMs` by up to `skewMs` (plus what
 *   it holds) is another process's, written by a clock ahead of this one: it is kept as it lies, and
 *   this process counts from it, the meters seeing it as full as it will be at `nowMs`, the windows
 *   counting in its (later) window; durations (`retryAfterMs`) stay true on this process's clock. A
 *   state further ahead means this clock stepped back: it is moved back to now (`rebased`). Shared by
 *   clocks at most `S <= skewMs` apart (and kept at least `S` past its empty time), a limit admits over
 *   any `d` ms at most what one clock admits over `d + S` ms.
 */
export type StepFunction = (
  state: State | undefined,
  nowMs: number,
  bucket: BucketConfig,
  cost: number,
  skewMs?: number,
) => StepOutput

/** What an {@link AdjustFunction} returns. */
export interface AdjustOutput extends StepOutput {
  /**
   * Whether the adjustment changed anything: write `state` back (with a TTL of `ttlMs`) when `changed`
   * or `rebased`; otherwise the stored state already means the same and the write may be skipped.
   */
  readonly changed: boolean
}

/**
 * An algorithm's adjustment as a pure function of integers: the refund or extra charge of
 * `Backend.adjust` on one bucket. Integer-only like {@link StepFunction}, reading the state exactly as
 * the algorithm's step does (the same `skewMs` rules, the same rebasing), then:
 *
 * - `delta < 0` refunds up to `-delta` units (at most `charge.cost` with a charge), never lifting the
 *   bucket above its capacity. With a `charge`, only out of what counted that charge and still holds
 *   it: the meters (`'gcra'`, `'token-bucket'`, `'leaky-bucket'`) drain oldest first, so a charge that
 *   left the bucket at level `a` holds `a - e * limit` scaled units `e` ms later, and no more than that
 *   comes back; the windows refund only in the window (`'fixed-window'`, `'sliding-window'`: the
 *   current or the previous one) or the log entry (`'sliding-log'`, or the entry of its slot it was
 *   merged into) that counted it. Without a charge, out of what the bucket holds now, newest first.
 * - `delta > 0` charges `delta` units now, never denied, but saturating: a meter fills up to its
 *   capacity and a window counts at most `limit`; the excess is forgiven.
 *
 * `result` is the bucket after the adjustment as a peek sees it (`allowed`: whether a cost of 1
 * would pass), and `ttlMs` as the step gives it for that state.
 *
 * @param state the stored state, or `undefined`
 * @param nowMs the current time, integer epoch milliseconds (the backend's clock)
 * @param bucket the validated configuration
 * @param delta a safe integer: negative refunds, positive charges more, 0 changes nothing
 * @param charge what the call being settled charged to this bucket, or `undefined` when unknown
 * @param skewMs as for {@link StepFunction}
 */
export type AdjustFunction = (
  state: State | undefined,
  nowMs: number,
  bucket: BucketConfig,
  delta: number,
  charge: Charge | undefined,
  skewMs?: number,
) => AdjustOutput
