// The algorithms by name, and the one dispatching step every JavaScript backend calls.
import type { Algorithm, BucketConfig, Charge } from '../backend'
import { fixedWindow, fixedWindowAdjust } from './fixed-window'
import { gcra, gcraAdjust } from './gcra'
import { leakyBucket, leakyBucketAdjust } from './leaky-bucket'
import { ALGORITHMS } from './names'
import {
  SLIDING_LOG_SLOTS,
  slidingLog,
  slidingLogAdjust,
  slidingLogInPlace,
  slidingLogSlotMs,
} from './sliding-log'
import { slidingWindow, slidingWindowAdjust } from './sliding-window'
import { type StepAllOutput, stepAllWith } from './step-all'
import { tokenBucket, tokenBucketAdjust } from './token-bucket'
import type { AdjustFunction, AdjustOutput, State, StepFunction, StepOutput } from './types'

export type { AdjustFunction, AdjustOutput, State, StepAllOutput, StepFunction, StepOutput }
export {
  fixedWindow,
  fixedWindowAdjust,
  gcra,
  gcraAdjust,
  leakyBucket,
  leakyBucketAdjust,
  SLIDING_LOG_SLOTS,
  slidingLog,
  slidingLogAdjust,
  slidingLogInPlace,
  slidingLogSlotMs,
  slidingWindow,
  slidingWindowAdjust,
  tokenBucket,
  tokenBucketAdjust,
}

/** Every algorithm's step function, by name. */
export const algorithms: Readonly<Record<Algorithm, StepFunction>> = /* @__PURE__ */ Object.freeze({
  'fixed-window': fixedWindow,
  'sliding-window': slidingWindow,
  'sliding-log': slidingLog,
  'token-bucket': tokenBucket,
  'leaky-bucket': leakyBucket,
  gcra,
})

/** Every algorithm's adjustment (refund or extra charge, see {@link AdjustFunction}), by name. */
export const adjustments: Readonly<Record<Algorithm, AdjustFunction>> = /* @__PURE__ */ Object.freeze({
  'fixed-window': fixedWindowAdjust,
  'sliding-window': slidingWindowAdjust,
  'sliding-log': slidingLogAdjust,
  'token-bucket': tokenBucketAdjust,
  'leaky-bucket': leakyBucketAdjust,
  gcra: gcraAdjust,
})

export { ALGORITHMS }

/**
 * Applies `bucket.algorithm` to a state: the whole of rate limiting, as one pure function.
 * A custom backend reads the state, calls `step`, and writes `state` back in one transaction.
 *
 * @example
 * ```ts
 * const out = step(await db.read(key), Date.now(), bucket, 1)
 * if (out.result.allowed) await db.write(key, out.state, out.ttlMs)
 * ```
 */
export function step(
  state: State | undefined,
  nowMs: number,
  bucket: BucketConfig,
  cost: number,
  skewMs = 0,
): StepOutput {
  return algorithms[bucket.algorithm](state, nowMs, bucket, cost, skewMs)
}

/** Serialises a state for a text column or a Redis value: integers joined by commas. */
export function encodeState(state: State): string {
  return state.join(',')
}

/** Integers (optionally negative) joined by commas, nothing else: what Lua's decoder accepts too. */
const STATE_TEXT = /^-?\d+(?:,-?\d+)*$/

/** Parses {@link encodeState}'s output; anything malformed gives `undefined` (treated as no state). */
export function decodeState(text: string | null | undefined): number[] | undefined {
  if (!text || !STATE_TEXT.test(text)) return undefined
  const parts = text.split(',')
  const out: number[] = new Array(parts.length)
  for (let i = 0; i < parts.length; i++) {
    const n = Number(parts[i])
    if (!Number.isSafeInteger(n)) return undefined
    out[i] = n
  }
  return out
}

/**
 * The all-or-nothing step behind `checkAndIncrementAll`: applies `cost` to every bucket of one key
 * and admits only if every bucket admits. Pure, like {@link step} (`skewMs` as there).
 */
export function stepAll(
  states: ReadonlyArray<State | undefined>,
  nowMs: number,
  buckets: readonly BucketConfig[],
  cost: number,
  skewMs = 0,
): StepAllOutput {
  return stepAllWith(algorithms, states, nowMs, buckets, cost, skewMs)
}

/**
 * Applies `bucket.algorithm`'s adjustment to a state: the refund (`delta < 0`) or extra charge
 * (`delta > 0`) behind `Backend.adjust`, as one pure function (see {@link AdjustFunction}).
 * A custom backend reads the state, calls `adjustStep`, and writes `state` back in one transaction
 * when `changed` or `rebased`.
 *
 * @example
 * ```ts
 * const out = adjustStep(await db.read(key), Date.now(), bucket, -3, charge)
 * if (out.changed || out.rebased) await db.write(key, out.state, out.ttlMs)
 * ```
 */
export function adjustStep(
  state: State | undefined,
  nowMs: number,
  bucket: BucketConfig,
  delta: number,
  charge: Charge | undefined,
  skewMs = 0,
): AdjustOutput {
  return adjustments[bucket.algorithm](state, nowMs, bucket, delta, charge, skewMs)
}

/**
 * The step behind `Backend.adjust` on several buckets of one key: {@link adjustStep} on each, with
 * `charges[i]` for bucket `i` (or none). Nothing is ever denied, so every output is applied: write
 * `outputs[i].state` back when its `changed` or `rebased`, all in one transaction. Pure.
 */
export function adjustAll(
  states: ReadonlyArray<State | undefined>,
  nowMs: number,
  buckets: readonly BucketConfig[],
  delta: number,
  charges: readonly Charge[] | undefined,
  skewMs = 0,
): AdjustOutput[] {
  const outputs: AdjustOutput[] = new Array(buckets.length)
  for (let i = 0; i < buckets.length; i++) {
    const bucket = buckets[i] as BucketConfig
    outputs[i] = adjustments[bucket.algorithm](states[i], nowMs, bucket, delta, charges?.[i], skewMs)
  }
  return outputs
}
