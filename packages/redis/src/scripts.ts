// Every Lua script of RedisBackend, inline: one per algorithm (a port of its TypeScript step) and one
// all-or-nothing script for several buckets of one key.
//
// The ports repeat the TypeScript integer arithmetic operation for operation, in the same order. Lua 5.1
// numbers are IEEE doubles, as in JavaScript, and rules keep every operand below 2^53, so the results are
// bit-for-bit equal; a differential test checks it. Notes on the few places where the languages differ:
// - Window starts are `floor(now / W) * W` on both sides (no `%`, whose meaning differs between the two).
// - `tostring` prints 1.7e+12; states are written with `string.format('%d', n)` (a 64-bit integer cast).
// - Infinity (`RETRY_NEVER`) leaves the script as -1; `retryAfterMs` is otherwise never negative.
// - Lua arrays start at 1: `state[i]` in TypeScript is `s[i + 1]` here.
import { createHash } from 'node:crypto'
import type { Algorithm } from '@fastlimit/core'

/** Helpers every script shares: time, state encoding, integer division, expiry. */
const PRELUDE = `
local floor = math.floor
local NEVER = 1 / 0
local MAX_SAFE = 9007199254740991

-- The time: the Redis server's clock (TIME) unless the client passed its own (ARGV[1] not empty).
local function clock(arg)
  if arg == '' then
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
  end
  return tonumber(arg)
end

-- decodeState: integers joined by commas; anything malformed reads as no state.
local function decode(text)
  if not text or text == '' then return nil end
  local out, n, pos = {}, 0, 1
  while true do
    local comma = string.find(text, ',', pos, true)
    local part
    if comma then part = string.sub(text, pos, comma - 1) else part = string.sub(text, pos) end
    if not string.find(part, '^%-?%d+$') then return nil end
    local v = tonumber(part)
    if v > MAX_SAFE or v < -MAX_SAFE then return nil end
    n = n + 1
    out[n] = v
    if not comma then return out end
    pos = comma + 1
  end
end

-- encodeState, with every integer printed in full (tostring would give 1.7e+12).
local function encode(s)
  local parts = {}
  for i = 1, #s do parts[i] = string.format('%d', s[i]) end
  return table.concat(parts, ',')
end

-- ceilDiv(a, b) for integers a >= 0, b >= 1.
local function ceil_div(a, b)
  local q = floor(a / b)
  if q * b < a then return q + 1 end
  return q
end

-- Keeps the key until its longest-lived bucket is empty: never shortens the current expiry.
local function extend(key, ttl)
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, string.format('%d', ttl))
  end
end

-- A result as the flat integers the client reads: allowed, limit, remaining, resetMs, retryAfterMs.
local function push(out, r)
  local n = #out
  if r[1] then out[n + 1] = 1 else out[n + 1] = 0 end
  out[n + 2] = r[2]
  out[n + 3] = r[3]
  out[n + 4] = r[4]
  if r[5] == NEVER then out[n + 5] = -1 else out[n + 5] = r[5] end
end
`

/** The meter shared by the three bucket algorithms (core: algorithms/meter.ts). */
const METER = `
local function drain(level, elapsed, rate)
  if level <= 0 or elapsed <= 0 then
    if level < 0 then return 0 end
    return level
  end
  if elapsed >= ceil_div(level, rate) then return 0 end
  return level - elapsed * rate
end

local function charge(level, t, L, W, B, cost)
  local cap = B * W
  if cost > 0 and cost <= B and level + cost * W <= cap then
    local after = level + cost * W
    return after, { true, B, floor((cap - after) / W), t + ceil_div(after, L), 0 }
  end
  local want = cost
  if cost == 0 then want = 1 end
  local retry = 0
  if cost > B then
    retry = NEVER
  elseif level + want * W > cap then
    retry = ceil_div(level + want * W - cap, L)
  end
  return level, { cost == 0 and level + W <= cap, B, floor((cap - level) / W), t + ceil_div(level, L), retry }
end

local function drain_ms(level, rate)
  local ms = ceil_div(level, rate)
  if ms > 0 then return ms end
  return 1
end
`

/**
 * Each step has the signature of the TypeScript one: (state, now, limit, windowMs, burst, cost) ->
 * (state, { allowed, limit, remaining, resetMs, retryAfterMs }, ttlMs).
 */
const STEPS: Readonly<Record<Algorithm, { name: string; meter: boolean; lua: string }>> = {
  'fixed-window': {
    name: 'fixed_window',
    meter: false,
    lua: `
local function fixed_window(s, now, L, W, B, cost)
  local start = floor(now / W) * W
  local count = 0
  if s and #s == 2 then
    -- The same window, or a later one when this clock runs behind the last writer's.
    if s[1] >= start then
      start = s[1]
      count = s[2]
    end
  end
  local t = now
  if now < start then t = start end
  local fin = start + W
  local ttl = fin - t
  if cost == 0 then
    local allowed = count + 1 <= L
    local reset = t
    if count > 0 then reset = fin end
    local retry = 0
    if not allowed then retry = fin - t end
    return { start, count }, { allowed, L, L - count, reset, retry }, ttl
  end
  if cost > L then
    local reset = t
    if count > 0 then reset = fin end
    return { start, count }, { false, L, L - count, reset, NEVER }, ttl
  end
  if count + cost <= L then
    count = count + cost
    return { start, count }, { true, L, L - count, fin, 0 }, ttl
  end
  return { start, count }, { false, L, L - count, fin, fin - t }, ttl
end
`,
  },
  'sliding-window': {
    name: 'sliding_window',
    meter: false,
    lua: `
local function sliding_window(s, now, L, W, B, cost)
  local start = floor(now / W) * W
  local prev, curr = 0, 0
  if s and #s == 3 then
    if s[1] >= start then
      start = s[1]
      prev = s[2]
      curr = s[3]
    elseif s[1] == start - W then
      prev = s[3]
    end
  end
  local t = now
  if now < start then t = start end
  local elapsed = t - start
  local weighted = 0
  if prev ~= 0 then weighted = ceil_div(prev * (W - elapsed), W) end
  local used = weighted + curr
  if used > L then used = L end
  if cost > 0 and cost <= L and used + cost <= L then
    curr = curr + cost
    used = used + cost
    return { start, prev, curr }, { true, L, L - used, start + 2 * W, 0 }, start + 2 * W - t
  end
  local reset = t
  if curr > 0 then reset = start + 2 * W elseif weighted > 0 then reset = start + W end
  local ttl = W
  if reset > t then ttl = reset - t end
  local want = cost
  if cost == 0 then want = 1 end
  local retry = 0
  if cost > L then
    retry = NEVER
  elseif used + want > L then
    retry = -1
    local room = L - want - curr
    if room >= 0 and prev > 0 then
      local at = W - floor((room * W) / prev)
      if at < W then retry = start + at - t end
    end
    if retry < 0 then
      local at = 0
      if curr > 0 then
        at = W - floor(((L - want) * W) / curr)
        if at < 0 then at = 0 end
      end
      retry = start + W + at - t
    end
  end
  return { start, prev, curr }, { cost == 0 and used + 1 <= L, L, L - used, reset, retry }, ttl
end
`,
  },
  'sliding-log': {
    name: 'sliding_log',
    meter: false,
    lua: `
local function sliding_log(s, now, L, W, B, cost)
  local n = 0
  if s and #s % 2 == 0 then n = #s end
  local t = now
  if n > 0 then
    -- Never let time go backwards inside one log.
    if s[n - 1] > t then t = s[n - 1] end
  end
  local cutoff = t - W
  local first = 0
  while first < n and s[first + 1] <= cutoff do first = first + 2 end
  local used = 0
  for i = first + 2, n, 2 do used = used + s[i] end
  local kept, m = {}, 0
  for i = first + 1, n do
    m = m + 1
    kept[m] = s[i]
  end
  local newest = t
  if m > 0 then newest = kept[m - 1] end
  if cost > 0 and cost <= L and used + cost <= L then
    if m > 0 and newest == t then
      kept[m] = kept[m] + cost
    else
      kept[m + 1] = t
      kept[m + 2] = cost
    end
    used = used + cost
    return kept, { true, L, L - used, t + W, 0 }, W
  end
  local reset, ttl = t, W
  if m > 0 then
    reset = newest + W
    ttl = newest + W - t
  end
  local want = cost
  if cost == 0 then want = 1 end
  local retry = 0
  if cost > L then
    retry = NEVER
  elseif used + want > L then
    -- Drop the oldest entries until the cost fits; it fits once the last dropped one expires.
    local left, i = used, 0
    while left + want > L do
      left = left - kept[i + 2]
      i = i + 2
    end
    retry = kept[i - 1] + W - t
  end
  return kept, { cost == 0 and used + 1 <= L, L, L - used, reset, retry }, ttl
end
`,
  },
  'token-bucket': {
    name: 'token_bucket',
    meter: true,
    lua: `
local function token_bucket(s, now, L, W, B, cost)
  local cap = B * W
  local missing = 0
  local t = now
  if s and #s == 2 then
    local last = s[2]
    if last > t then t = last end
    local tokens = s[1]
    local empty = 0
    if tokens < cap then empty = cap - tokens end
    missing = drain(empty, t - last, L)
  end
  local level, r = charge(missing, t, L, W, B, cost)
  return { cap - level, t }, r, drain_ms(level, L)
end
`,
  },
  'leaky-bucket': {
    name: 'leaky_bucket',
    meter: true,
    lua: `
local function leaky_bucket(s, now, L, W, B, cost)
  local level = 0
  local t = now
  if s and #s == 2 then
    local last = s[2]
    if last > t then t = last end
    level = drain(s[1], t - last, L)
  end
  local after, r = charge(level, t, L, W, B, cost)
  return { after, t }, r, drain_ms(after, L)
end
`,
  },
  gcra: {
    name: 'gcra',
    meter: true,
    lua: `
local function gcra(s, now, L, W, B, cost)
  local cap = B * W
  local level = 0
  if s and #s == 2 then
    local ahead = s[1] - now
    if ahead >= 0 then
      if ahead > floor(cap / L) then level = cap else level = ahead * L + s[2] end
      if level > cap then level = cap end
    end
  end
  local after, r = charge(level, now, L, W, B, cost)
  local whole = floor(after / L)
  return { now + whole, after - whole * L }, r, drain_ms(after, L)
end
`,
  },
}

/**
 * One bucket: KEYS[1] is the hash of the key; ARGV = now ('' for server time), field (bucketId),
 * limit, windowMs, burst, cost (0 peeks), expiry margin in ms. Returns the 5 integers of the result.
 */
const SINGLE_MAIN = (fn: string) => `
local now = clock(ARGV[1])
local field = ARGV[2]
local cost = tonumber(ARGV[6])
local state, r, ttl = ${fn}(decode(redis.call('HGET', KEYS[1], field)), now,
  tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), cost)
if r[1] and cost > 0 then
  redis.call('HSET', KEYS[1], field, encode(state))
  extend(KEYS[1], ttl + tonumber(ARGV[7]))
end
local out = {}
push(out, r)
return out
`

/**
 * Several buckets, all or nothing: KEYS[1] is the hash; ARGV = now, cost, expiry margin, count, then
 * per bucket algorithm, field, limit, windowMs, burst. Returns 5 integers per bucket. Mirrors core's stepAll.
 */
const ALL_MAIN = `
local STEP = {
  ['fixed-window'] = fixed_window, ['sliding-window'] = sliding_window, ['sliding-log'] = sliding_log,
  ['token-bucket'] = token_bucket, ['leaky-bucket'] = leaky_bucket, ['gcra'] = gcra,
}
local now = clock(ARGV[1])
local cost = tonumber(ARGV[2])
local margin = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local fields = {}
for i = 1, n do fields[i] = ARGV[4 + (i - 1) * 5 + 2] end
local stored = redis.call('HMGET', KEYS[1], unpack(fields))
local runs = {}
local allowed = true
for i = 1, n do
  local a = 4 + (i - 1) * 5
  local step = STEP[ARGV[a + 1]]
  if not step then return redis.error_reply('ERR fastlimit: unknown algorithm ' .. ARGV[a + 1]) end
  local s = decode(stored[i])
  local L, W, B = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local state, r, ttl = step(s, now, L, W, B, cost)
  runs[i] = { step, s, L, W, B, state, r, ttl }
  if not r[1] then allowed = false end
end
local out = {}
if allowed then
  local pairs_, longest = {}, 0
  for i = 1, n do
    pairs_[2 * i - 1] = fields[i]
    pairs_[2 * i] = encode(runs[i][6])
    if runs[i][8] > longest then longest = runs[i][8] end
  end
  if cost > 0 then
    redis.call('HSET', KEYS[1], unpack(pairs_))
    extend(KEYS[1], longest + margin)
  end
  for i = 1, n do push(out, runs[i][7]) end
  return out
end
for i = 1, n do
  local run = runs[i]
  if run[7][1] then
    -- Nothing is charged: a bucket that would have admitted reports its uncharged state.
    local _, p = run[1](run[2], now, run[3], run[4], run[5], 0)
    push(out, { true, p[2], p[3], p[4], 0 })
  else
    push(out, run[7])
  end
end
return out
`

/** A script as RedisBackend registers it with ioredis `defineCommand`. */
export interface ScriptDefinition {
  /** The command name on the ioredis client, unique per script text (so two versions never clash). */
  readonly name: string
  /** The Lua source. */
  readonly lua: string
  /** SHA-1 of the source, as EVALSHA uses it. */
  readonly sha: string
}

function define(prefix: string, lua: string): ScriptDefinition {
  const sha = createHash('sha1').update(lua).digest('hex')
  return { name: `${prefix}_${sha.slice(0, 12)}`, lua, sha }
}

function single(algorithm: Algorithm): ScriptDefinition {
  const step = STEPS[algorithm]
  const lua = `-- fastlimit ${algorithm}\n${PRELUDE}${step.meter ? METER : ''}${step.lua}${SINGLE_MAIN(step.name)}`
  return define(`fastlimit_${step.name}`, lua)
}

/** The script of each algorithm: checkAndIncrement, and peek (cost 0). */
export const SCRIPTS: Readonly<Record<Algorithm, ScriptDefinition>> = Object.freeze({
  'fixed-window': single('fixed-window'),
  'sliding-window': single('sliding-window'),
  'sliding-log': single('sliding-log'),
  'token-bucket': single('token-bucket'),
  'leaky-bucket': single('leaky-bucket'),
  gcra: single('gcra'),
})

/** The all-or-nothing script of checkAndIncrementAll: every algorithm, several buckets of one key. */
export const ALL_SCRIPT: ScriptDefinition = define(
  'fastlimit_all',
  `-- fastlimit all-or-nothing\n${PRELUDE}${METER}${Object.values(STEPS)
    .map((s) => s.lua)
    .join('')}${ALL_MAIN}`,
)
