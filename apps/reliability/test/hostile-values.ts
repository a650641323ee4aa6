// fast-check arbitraries of hostile input: values of every type, rule strings and rule objects.
import { ALGORITHMS, MAX_WINDOW_MS } from '@fastlimit/core'
import fc from 'fast-check'

const circular: Record<string, unknown> = { limit: 1 }
circular.self = circular

/** Any value a careless or hostile caller might pass where an option goes. */
export const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom<unknown>(
    undefined,
    null,
    true,
    false,
    0,
    -0,
    -1,
    1,
    1.5,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    2 ** 53,
    2 ** 53 - 1,
    2 ** 31,
    1e21,
    '',
    ' ',
    '0',
    '1',
    'NaN',
    '__proto__',
    'constructor',
    'toString',
    '\u0000',
    '\n',
    'x'.repeat(1000),
    Symbol('hostile'),
    () => 1,
    [],
    [1, 2],
    {},
    Object.create(null),
    new Date(0),
    /x/,
    new Map([['limit', 1]]),
    circular,
    JSON.parse('{"__proto__": {"limit": 1}}'),
    // biome-ignore lint/suspicious/noThenProperty: a thenable is exactly the hostile value wanted here.
    Object.freeze({ then: 1 }),
  ),
  fc.bigInt(),
  fc.string({ maxLength: 12 }),
  fc.double(),
  fc.integer(),
)

const ws = fc.constantFrom('', '', '', ' ', '\t', '\n', '\u00a0', '\u2028', '\ufeff', '   ')
const digits = fc.oneof(
  fc.nat({ max: 100_000 }).map(String),
  fc.bigInt({ min: 0n, max: 10n ** 22n }).map(String),
  fc.constantFrom(
    '0',
    '00',
    '01',
    '9007199254740991',
    '9007199254740992',
    '1.5',
    '1e3',
    '-1',
    '+1',
    '١',
    '１',
    'x',
    '0x10',
    '',
  ),
)
const units = fc.constantFrom(
  'ms',
  'msec',
  'millisecond',
  's',
  'sec',
  'second',
  'seconds',
  'm',
  'min',
  'mins',
  'minute',
  'minutes',
  'h',
  'hr',
  'hours',
  'd',
  'day',
  'days',
  'w',
  'wk',
  'weeks',
  'MIN',
  'Minute',
  'mo',
  'month',
  'y',
  'year',
  'µs',
  'us',
  'ns',
  'mın',
  'ſ',
  '',
)
const separators = fc.constantFrom(
  '/',
  ' per ',
  ' PER ',
  'per',
  ' / ',
  '//',
  '\tper\n',
  ' pre ',
  '',
  ' ',
  '/ /',
)

/** Rule strings: grammar-built near misses, known tricky forms, and arbitrary (unicode) text. */
export const ruleStringArb: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .tuple(ws, digits, ws, separators, ws, fc.oneof(fc.constant(''), digits), ws, units, ws)
      .map((p) => p.join('')),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '100/min',
      '5 per minute',
      '0/s',
      '1/0s',
      '9007199254740993/s',
      '1/365d',
      '1/366d',
      '1/52w',
      '1/53w',
      '4503599627370496/ms',
      '4503599627370497/ms',
      '100001/s',
      '１００/min',
      '1/-1s',
      '1//s',
      '1/s/s',
      'per/s',
      '/s',
      '1/',
      '\t1\t/\tmin\n',
    ),
  },
  { weight: 2, arbitrary: fc.string({ maxLength: 30 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
)

const numberish = fc.oneof(
  fc.integer({ min: -5, max: 200 }),
  fc.constantFrom(
    0,
    1,
    2 ** 52,
    2 ** 53,
    2 ** 53 - 1,
    MAX_WINDOW_MS,
    MAX_WINDOW_MS + 1,
    1e-300,
    1.5,
    100_000,
    100_001,
    86_400_000,
  ),
  hostileValue,
)
const windowish = fc.oneof(
  numberish,
  fc.constantFrom(
    '1m',
    '15 minutes',
    'day',
    '0s',
    '366d',
    '365d',
    '52w',
    '53w',
    '1.5s',
    'm',
    '',
    ' 1 m ',
    '1mm',
    '1 m s',
    '1e3ms',
  ),
)
const algorithmish = fc.oneof(
  fc.constantFrom(...ALGORITHMS),
  fc.constantFrom('GCRA', 'sliding_log', '__proto__', 'constructor'),
  hostileValue,
)
const nameish = fc.oneof(
  fc.constantFrom(
    'login',
    'a',
    'x'.repeat(64),
    'x'.repeat(65),
    'with space',
    'é',
    '"quoted"',
    'a;b',
    '__proto__',
    'constructor',
  ),
  hostileValue,
)

/**
 * A valid base object with zero to three fields replaced by hostile values or removed, and sometimes an
 * unknown or prototype-named own key: near misses, which find more than pure noise.
 */
export function mutated(
  base: fc.Arbitrary<Record<string, unknown>>,
  fields: Record<string, fc.Arbitrary<unknown>>,
): fc.Arbitrary<Record<string, unknown>> {
  const names = Object.keys(fields)
  return fc
    .tuple(
      base,
      fc
        .array(fc.tuple(fc.constantFrom(...names), fc.boolean()), { maxLength: 3 })
        .chain((picks) =>
          fc.tuple(
            ...picks.map(([name, remove]) =>
              (fields[name] as fc.Arbitrary<unknown>).map((v) => [name, remove, v] as const),
            ),
          ),
        ),
      fc.oneof(
        { weight: 5, arbitrary: fc.constant(null) },
        {
          weight: 1,
          arbitrary: fc.constantFrom(
            '__proto__',
            'constructor',
            'prototype',
            'Limit',
            'windowms',
            'toString',
          ),
        },
      ),
      hostileValue,
    )
    .map(([b, changes, key, value]) => {
      const out: Record<string, unknown> = { ...b }
      for (const [name, remove, v] of changes) {
        if (remove) delete out[name]
        else out[name] = v
      }
      if (key !== null)
        Object.defineProperty(out, key, { value, enumerable: true, configurable: true, writable: true })
      return out
    })
}

const validRule = fc
  .tuple(
    fc.constantFrom(...ALGORITHMS),
    fc.integer({ min: 1, max: 1000 }),
    fc.oneof(
      fc.constantFrom('1s', '1m', '15 minutes', 'day', '365d', 'ms'),
      fc.integer({ min: 1, max: MAX_WINDOW_MS }),
    ),
  )
  .map(([algorithm, limit, window]) => ({ algorithm, limit, window }) as Record<string, unknown>)

/** Rule objects: valid ones, and near misses with hostile field values or prototype-named keys. */
export const ruleObjectArb: fc.Arbitrary<unknown> = mutated(validRule, {
  limit: numberish,
  window: windowish,
  windowMs: numberish,
  algorithm: algorithmish,
  burst: numberish,
  name: nameish,
})
