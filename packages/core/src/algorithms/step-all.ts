// The all-or-nothing step of several buckets, given the step functions it may use.
import type { Algorithm, BackendResult, BucketConfig } from '../backend'
import type { State, StepFunction, StepOutput } from './types'

/** What `stepAll` and {@link stepAllWith} return. */
export interface StepAllOutput {
  /** Whether every bucket admitted the cost; only then is anything charged. */
  readonly allowed: boolean
  /**
   * One output per bucket. Write `outputs[i].state` back (with its `ttlMs`) when `allowed`, or when
   * `outputs[i].rebased`. When `allowed` is false, every output holds its bucket's uncharged state.
   */
  readonly outputs: readonly StepOutput[]
  /**
   * One result per bucket. When `allowed` is false nothing is charged, so a bucket that would have
   * admitted reports its uncharged state (`allowed: true`, `retryAfterMs: 0`).
   */
  readonly results: BackendResult[]
}

/**
 * The all-or-nothing step behind `checkAndIncrementAll`, with the step functions looked up in `steps`
 * by `bucket.algorithm` (so that a store that knows a few algorithms bundles only those): applies
 * `cost` to every bucket of one key and admits only if every bucket admits. Pure, like `step`
 * (`skewMs` as there). `stepAll` is this with every algorithm.
 */
export function stepAllWith(
  steps: Readonly<Partial<Record<Algorithm, StepFunction>>>,
  states: ReadonlyArray<State | undefined>,
  nowMs: number,
  buckets: readonly BucketConfig[],
  cost: number,
  skewMs = 0,
): StepAllOutput {
  const outputs: StepOutput[] = new Array(buckets.length)
  let allowed = true
  for (let i = 0; i < buckets.length; i++) {
    const bucket = buckets[i] as BucketConfig
    const out = (steps[bucket.algorithm] as StepFunction)(states[i], nowMs, bucket, cost, skewMs)
    outputs[i] = out
    if (!out.result.allowed) allowed = false
  }
  const results: BackendResult[] = new Array(buckets.length)
  for (let i = 0; i < buckets.length; i++) {
    const out = outputs[i] as StepOutput
    if (allowed || !out.result.allowed) results[i] = out.result
    else {
      // This bucket would have admitted, but nothing is charged: report (and keep) its uncharged state.
      const bucket = buckets[i] as BucketConfig
      const peek = (steps[bucket.algorithm] as StepFunction)(states[i], nowMs, bucket, 0, skewMs)
      outputs[i] = peek
      const r = peek.result
      results[i] = {
        allowed: true,
        limit: r.limit,
        remaining: r.remaining,
        resetMs: r.resetMs,
        retryAfterMs: 0,
      }
    }
  }
  return { allowed, outputs, results }
}
