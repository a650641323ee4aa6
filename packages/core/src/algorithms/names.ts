// The algorithms' names alone, so that validating a rule does not pull every step function into a bundle.
import type { Algorithm } from '../backend'

/** The names of all algorithms, in a stable order (the order of `algorithms`). */
export const ALGORITHMS: readonly Algorithm[] = /* @__PURE__ */ Object.freeze([
  'fixed-window',
  'sliding-window',
  'sliding-log',
  'token-bucket',
  'leaky-bucket',
  'gcra',
] as const)
