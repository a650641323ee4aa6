import { describe, expect, it } from 'vitest'
import { show } from './errors'

describe('show', () => {
  it('writes every kind of value as error messages quote it', () => {
    const circular: Record<string, unknown> = {}
    circular.self = circular
    expect(show('a"b')).toBe('"a\\"b"')
    expect(show(1.5)).toBe('1.5')
    expect(show(Number.NaN)).toBe('NaN')
    expect(show(10n)).toBe('10')
    expect(show(false)).toBe('false')
    expect(show(undefined)).toBe('undefined')
    expect(show(null)).toBe('null')
    expect(show(Symbol('s'))).toBe('Symbol(s)')
    expect(show(() => 1)).toBe('a function')
    expect(show({ a: [1] })).toBe('{"a":[1]}')
    expect(show(circular)).toBe('[object Object]')
    expect(show('x'.repeat(100))).toBe(`"${'x'.repeat(76)}...`)
  })
})
