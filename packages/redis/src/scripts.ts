// The one Lua script of RedisBackend: every algorithm (a port of its TypeScript step), for one bucket or
// for several buckets of one key all or nothing, dispatching on the bucket's id; and every algorithm's
// adjustment (a port of its TypeScript adjust step: the refund or extra charge of a reservation), for
// one or more buckets of one key at once, told apart by its even number of arguments.
//
// The ports repeat the TypeScript integer arithmetic operation for operation, in the same order. Lua 5.1
// numbers are IEEE doubles, as in JavaScript, and rules keep every operand below 2^53, so the results are
// bit-for-bit equal; a differential test checks it. Notes on the few places where the languages differ:
// - Window starts are `floor(now / W) * W` on both sides (no `%`, whose meaning differs between the two).
// - `tostring` prints 1.7e+12; states and replies are written with `string.format('%d', n)` (a 64-bit
//   integer cast).
// - Infinity (`RETRY_NEVER`) leaves the script as -1; `retryAfterMs` is otherwise never negative.
// - Lua arrays start at 1: `state[i]` in TypeScript is `s[i + 1]` here.
//
// Written for the Redis server's time per call (callgrind: ~65k instructions per gcra call, 68k with a
// deadline, from 112k with a script per algorithm; an EVALSHA of `return 1` costs ~15k): straight-line
// code (no closure is created per run, the per-bucket code is inlined), the configuration read from the
// bucket id with one `string.match`, a state read with one `string.match` and written with one
// `string.format`, digits converted with `s + 0` (`tonumber` converts twice), the reply as one string (a
// Lua table reply costs more than formatting it), and as few `redis.call`s as the job allows, each
// costing more than the whole step: `TIME`, `HGET` (`HMGET`), and when something is charged `HSET` and
// `PTTL`, with `PEXPIRE` only when the expiry must grow (then to twice the margin, so that it rarely
// must). `PEXPIRE ... GT` (Redis 7) would replace the `PTTL`, but costs more than it even when it
// changes nothing. The deadline check compares with the `TIME` already read, before any other call.
// With the server's TIME, a window charged again in the window its state was written in skips the
// `PTTL` (`kept`: that write kept the key past the window's end, which has not moved). Every number
// printed costs ~1-1.5k instructions (`sprintf`; 13-digit epoch ms the most), every number read ~1k
// (`strtod`), each `redis.call` 3-7k (`TIME` the most: a table of two strings): so a charge's reply
// gives its resetMs less its time, and the flag is part of the format string. (A binary state, with
// `struct.pack`, would read and write a meter's state ~4.5k cheaper and could carry the key's expiry to
// skip the `PTTL` of meters too, but servers of the release before would read it as no state during a
// rolling upgrade; the state stays core's text.)

import { createHash } from 'node:crypto'
import { SLIDING_LOG_SLOTS } from '@fastlimit/core'

// The step is assembled from one reading part and one charging part per algorithm; the adjustment
// (ADJUST, below) shares the reading parts, so both read a state exactly alike.

/** The bucket's configuration, parsed from `conf`: `alg`, `L`, `W`, `B`. */
const CONF = `
local alg, L, W, B = match(conf, '^(%l[%l-]*):(%d+):(%d+):(%d+)$')
if not alg then return redis.error_reply('ERR fastlimit: bad bucket ' .. conf) end
-- Digits only, so \`s + 0\` converts (once; tonumber converts twice). Strings are interned: a burst
-- equal to the limit (the usual case) is converted once.
if B == L then
  L = L + 0
  B = L
else
  L, B = L + 0, B + 0
end
W = W + 0`

/** The meters' reading of `text` at `now`: `cap`, `level`, `t`, `rebased` (core: levelAhead, drain). */
const METER_READ = `
  -- The three meters (core: algorithms/meter.ts): a level in scaled units; capacity B * W.
  local cap = B * W
  local level, t, rebased = 0, now, false
  local s1, s2
  if text then
    s1, s2 = match(text, '^(%-?%d+),(%-?%d+)$')
    if s2 then
      s1, s2 = s1 + 0, s2 + 0
      if s1 > MAX or s1 < -MAX or s2 > MAX or s2 < -MAX then s2 = nil end
    end
  end
  if s2 then
    -- The level of a state lying \`ahead\` ms in the future (core: levelAhead): \`ahead * L\` fuller; kept
    -- within SKEW of a full bucket (another clock's), else -1: this clock stepped back.
    local ahead, stored = -1, s2
    if alg == 'gcra' then
      ahead = s1 - now
    else
      -- [tokens, last] or [level, last].
      if alg == 'token-bucket' then
        stored = 0
        if s1 < cap then stored = cap - s1 end
      else
        stored = s1
      end
      if s2 > t then
        ahead = s2 - t
        if stored < 0 then stored = 0 end
      else
        -- drain(stored, t - last, L)
        local elapsed = t - s2
        level = stored
        if level <= 0 or elapsed <= 0 then
          if level < 0 then level = 0 end
        else
          local q = floor(level / L)
          if q * L < level then q = q + 1 end
          if elapsed >= q then level = 0 else level = level - elapsed * L end
        end
      end
    end
    if ahead >= 0 then
      if ahead > floor(cap / L) + SKEW then
        level = -1
      else
        level = ahead * L + stored
        if level > cap + SKEW * L then level = -1 end
      end
      if level < 0 then
        -- Only a clock that stepped back puts the state this far ahead: back to now, full.
        level = cap
        rebased = true
      end
    end
  end`

/** The meters' charge of `c` at `level` (core: charge), and the state written. */
const METER_CHARGE = `
  -- charge(level, t, L, W, B, c)
  local after = level
  if c > 0 and c <= B and level + c * W <= cap then
    after = level + c * W
    ok, rem, retry = true, floor((cap - after) / W), 0
  else
    local want = c
    if c == 0 then want = 1 end
    retry = 0
    if c > B then
      retry = -1
    elseif level + want * W > cap then
      local over = level + want * W - cap
      retry = floor(over / L)
      if retry * L < over then retry = retry + 1 end
    end
    ok, rem = c == 0 and level + W <= cap, 0
    if level <= cap then rem = floor((cap - level) / W) end
  end
  -- resetMs = t + ceilDiv(after, L); ttl = drainMs(after, L)
  local whole = floor(after / L)
  local q = whole
  if q * L < after then q = q + 1 end
  reset = t + q
  ttl = q
  if ttl < 1 then ttl = 1 end
  if (ok and c > 0) or rebased then
    local e
    if alg == 'gcra' then
      e = fmt('%d,%d', now + whole, after - whole * L)
    elseif alg == 'token-bucket' then
      e = fmt('%d,%d', cap - after, t)
    else
      e = fmt('%d,%d', after, t)
    end
    if ok and c > 0 then enc = e else norm = e end
  end`

/** Fixed window's reading: `start`, `count` (and `norm` when moved back). */
const FW_READ = `
  local start = floor(now / W) * W
  local count = 0
  if text then
    local s1, s2 = match(text, '^(%-?%d+),(%-?%d+)$')
    if s2 then
      s1, s2 = s1 + 0, s2 + 0
      -- The same window; or a later one: another clock's (counted in), or this clock stepped back (the
      -- count moves to this window).
      if s1 <= MAX and s1 >= -MAX and s2 <= MAX and s2 >= -MAX and s1 >= start then
        count = s2
        -- Written in this window: its write kept the key until the window's end + MARGIN (see EXPIRE).
        kept = s1 == start
        if s1 > start then
          if s1 - now > SKEW then norm = fmt('%d,%d', start, count) else start = s1 end
        end
      end
    end
  end`

const FW_CHARGE = `
  local t = now
  local fin = start + W
  ttl = fin - t
  rem = L - count
  if c == 0 then
    ok = count + 1 <= L
    reset, retry = t, 0
    if count > 0 then reset = fin end
    if not ok then retry = fin - t end
  elseif c > L then
    ok, reset, retry = false, t, -1
    if count > 0 then reset = fin end
  elseif count + c <= L then
    count = count + c
    ok, rem, reset, retry = true, L - count, fin, 0
    enc = fmt('%d,%d', start, count)
  else
    ok, reset, retry = false, fin, fin - t
  end`

/** Sliding window's reading: `start`, `prev`, `curr` (and `norm` when moved back). */
const SW_READ = `
  local start = floor(now / W) * W
  local prev, curr = 0, 0
  if text then
    local s1, s2, s3 = match(text, '^(%-?%d+),(%-?%d+),(%-?%d+)$')
    if s3 then s1, s2, s3 = s1 + 0, s2 + 0, s3 + 0 end
    if s3 and s1 <= MAX and s1 >= -MAX and s2 <= MAX and s2 >= -MAX and s3 <= MAX and s3 >= -MAX then
      if s1 >= start then
        -- The same window; or a later one: another clock's (counted in), or this clock stepped back (the
        -- counts move to this window).
        prev, curr = s2, s3
        -- Written in this window with a count: its write kept the key until start + 2W + MARGIN.
        kept = s1 == start and s3 > 0
        if s1 > start then
          if s1 - now > SKEW then norm = fmt('%d,%d,%d', start, prev, curr) else start = s1 end
        end
      elseif s1 == start - W then
        prev = s3
      end
    end
  end`

const SW_CHARGE = `
  local t = now
  -- Before the start of another clock's window, estimate as at its start.
  local elapsed = 0
  if t >= start then elapsed = t - start end
  local weighted = 0
  if prev ~= 0 then
    local a = prev * (W - elapsed)
    weighted = floor(a / W)
    if weighted * W < a then weighted = weighted + 1 end
  end
  local used = weighted + curr
  if used > L then used = L end
  if c > 0 and c <= L and used + c <= L then
    curr = curr + c
    used = used + c
    ok, rem, reset, retry, ttl = true, L - used, start + 2 * W, 0, start + 2 * W - t
    enc = fmt('%d,%d,%d', start, prev, curr)
  else
    reset = t
    if curr > 0 then reset = start + 2 * W elseif weighted > 0 then reset = start + W end
    ttl = W
    if reset > t then ttl = reset - t end
    local want = c
    if c == 0 then want = 1 end
    retry = 0
    if c > L then
      retry = -1
    elseif used + want > L then
      local r = -1
      local room = L - want - curr
      if room >= 0 and prev > 0 then
        -- Still in this window: wait until the previous window's weight has decayed enough.
        local at = W - floor((room * W) / prev)
        if at < W then r = start + at - t end
      end
      if r < 0 then
        -- In the next window the current count becomes the previous one.
        local at = 0
        if curr > 0 then
          at = W - floor(((L - want) * W) / curr)
          if at < 0 then at = 0 end
        end
        r = start + W + at - t
      end
      retry = r
    end
    ok, rem = c == 0 and used + 1 <= L, L - used
  end`

/**
 * Sliding log's reading: `s` (the entries in the window, `m` integers), `used`, `shift` (> 0 when moved
 * back, then `norm`), `e` (where a check reads and writes), `newest`.
 */
const SL_READ = `
  -- Core: algorithms/sliding-log.ts. At most SLOTS entries; a 65th merges the oldest two of one slot.
  local SLOTS = ${SLIDING_LOG_SLOTS}
  local find, byte = string.find, string.byte
  -- decodeState: integers joined by commas, each safe; anything malformed reads as no state.
  local s, n = {}, 0
  if text and text ~= '' then
    local pos, len = 1, #text
    while true do
      local _, e, digits = find(text, '^(%-?%d+)', pos)
      if not e then n = 0 break end
      local v = digits + 0
      if v > MAX or v < -MAX then n = 0 break end
      n = n + 1
      s[n] = v
      if e == len then break end
      if byte(text, e + 1) ~= 44 then n = 0 break end
      pos = e + 2
    end
    if n % 2 ~= 0 then n = 0 end
  end
  local t = now
  -- A log whose newest entry lies further ahead of now than SKEW (the clock stepped back) moves back
  -- whole; one ahead by no more is another clock's: read and written at that newest time, e.
  local shift, e = 0, now
  if n > 0 and s[n - 1] > t then
    if s[n - 1] - t > SKEW then shift = s[n - 1] - t else e = s[n - 1] end
  end
  local cutoff = e - W
  local first = 0
  while first < n and s[first + 1] - shift <= cutoff do first = first + 2 end
  -- Drop what left the window, in place.
  local used, m = 0, 0
  for i = first + 1, n, 2 do
    local v = s[i + 1]
    s[m + 1] = s[i] - shift
    s[m + 2] = v
    used = used + v
    m = m + 2
  end
  if shift > 0 then norm = fmt(string.rep('%d,', m - 1) .. '%d', unpack(s, 1, m)) end
  local newest = t
  if m > 0 then newest = s[m - 1] end`

/** Core's merge(): brings the `m / 2` entries of `s` down to SLOTS. */
const MERGE = `
      -- merge(): one pass from the oldest; an entry in the slot of the one before joins it.
      local g = floor(W / (SLOTS - 1))
      if g * (SLOTS - 1) < W then g = g + 1 end
      local excess = m / 2 - SLOTS
      local w = 1
      local prev = floor(s[1] / g)
      for r = 3, m, 2 do
        local slot = floor(s[r] / g)
        if excess > 0 and slot == prev then
          s[w] = s[r]
          s[w + 1] = s[w + 1] + s[r + 1]
          excess = excess - 1
        else
          w = w + 2
          s[w] = s[r]
          s[w + 1] = s[r + 1]
          prev = slot
        end
      end
      m = w + 1`

const SL_CHARGE = `
  if c > 0 and c <= L and used + c <= L then
    if m > 0 and newest == e then
      s[m] = s[m] + c
    else
      s[m + 1] = e
      s[m + 2] = c
      m = m + 2
    end
    if m > 2 * SLOTS then${MERGE}
    end
    used = used + c
    ok, rem, reset, retry, ttl = true, L - used, e + W, 0, e + W - t
    enc = fmt(string.rep('%d,', m - 1) .. '%d', unpack(s, 1, m))
  else
    reset, ttl = t, W
    if m > 0 then
      reset = newest + W
      ttl = newest + W - t
    end
    local want = c
    if c == 0 then want = 1 end
    retry = 0
    if c > L then
      retry = -1
    elseif used + want > L then
      -- Drop the oldest entries until the cost fits; it fits once the last dropped one expires.
      local left, i = used, 0
      while left + want > L do
        left = left - s[i + 2]
        i = i + 2
      end
      retry = s[i - 1] + W - t
    end
    ok, rem = c == 0 and used + 1 <= L, L - used
  end`

/**
 * The step of one bucket. In: `conf` (`algorithm:limit:windowMs:burst`), `text` (the stored state, or
 * false), `c` (the cost, 0 peeks), `now`. Out: `ok`, `rem`, `reset`, `retry` (-1 for never), `ttl`, `enc`
 * (the new state as text, set only when `ok` and `c > 0`), and `norm` (set only when the stored state lay
 * further ahead of now than SKEW allows, core's `rebased`: the uncharged state moved back to now, as text).
 * A state ahead by no more than SKEW is another clock's and is counted from as it lies (core's `skewMs`).
 */
const STEP = `${CONF}
if alg == 'gcra' or alg == 'token-bucket' or alg == 'leaky-bucket' then${METER_READ}${METER_CHARGE}
elseif alg == 'fixed-window' then${FW_READ}${FW_CHARGE}
elseif alg == 'sliding-window' then${SW_READ}${SW_CHARGE}
elseif alg == 'sliding-log' then${SL_READ}${SL_CHARGE}
else
  return redis.error_reply('ERR fastlimit: unknown bucket ' .. conf)
end
`

/**
 * The adjustment of one bucket (core's adjustStep: a refund, delta < 0, or an extra charge, delta > 0),
 * ported operation for operation like the step. In: `conf`, `text`, `now`, `delta`, and the charge being
 * settled: `ccost`, `creset`, `cat` (`atMs`; nil when unknown), all nil when no charge is given. Out:
 * `newt`, the adjusted state as text, or nil when nothing changed. The bucket's result is then the step's
 * peek of `newt` (or of `text` when unchanged, which also gives `norm` when it lay too far ahead), as core
 * computes it. Each algorithm reads the state exactly as the step does (its reading part).
 */
const ADJUST = `${CONF}
if alg == 'gcra' or alg == 'token-bucket' or alg == 'leaky-bucket' then${METER_READ}
  -- adjustLevel: a refund takes back at most what the charge still holds; an extra charge fills up to cap.
  local lv = level
  if delta > 0 then
    if level < cap then
      local add = cap
      if delta < B then add = delta * W end
      if add >= cap - level then lv = cap else lv = level + add end
    end
  elseif delta < 0 and level > 0 then
    local r, bound = -delta, level
    if ccost then
      if ccost < r then r = ccost end
      -- resetMs = at + ceil(a / L), so a - e * L > (resetMs - now - 1) * L.
      local held, k = 0, creset - now - 1
      local q = floor(cap / L)
      if q * L < cap then q = q + 1 end
      if k >= q then held = cap elseif k >= 0 then held = k * L + 1 end
      if cat then
        -- a >= cost * W (the charge itself), less what drained since.
        local cw = cap
        if ccost < B then cw = ccost * W end
        local el, left = now - cat, 0
        local d = floor(cw / L)
        if d * L < cw then d = d + 1 end
        if el <= 0 then left = cw elseif el < d then left = cw - el * L end
        if left > held then held = left end
      end
      if held < bound then bound = held end
    end
    -- r * W only when r <= ceil(bound / W): below 2^53.
    local q = floor(bound / W)
    if q * W < bound then q = q + 1 end
    local back = bound
    if r <= q and r * W < bound then back = r * W end
    lv = level - back
  end
  if lv ~= level then
    if alg == 'gcra' then
      local whole = floor(lv / L)
      newt = fmt('%d,%d', now + whole, lv - whole * L)
    elseif alg == 'token-bucket' then
      newt = fmt('%d,%d', cap - lv, now)
    else
      newt = fmt('%d,%d', lv, now)
    end
  end
elseif alg == 'fixed-window' then${FW_READ}
  local lv = count
  if delta > 0 then
    if delta >= L - count then
      lv = L
      if count > L then lv = count end
    else
      lv = count + delta
    end
  elseif delta < 0 and count > 0 then
    local r, counted = -delta, true
    if ccost then
      if ccost < r then r = ccost end
      -- Only the window that counted the charge (the stored one: count > 0 means a valid state).
      counted = match(text, '^(%-?%d+),') + 0 == creset - W
    end
    if counted then
      if r >= count then lv = 0 else lv = count - r end
    end
  end
  if lv ~= count then newt = fmt('%d,%d', start, lv) end
elseif alg == 'sliding-window' then${SW_READ}
  local changed = false
  if delta > 0 then
    if curr < L then
      if delta >= L - curr then curr = L else curr = curr + delta end
      changed = true
    end
  elseif delta < 0 then
    local r, inCurr, inPrev = -delta, true, true
    if ccost then
      if ccost < r then r = ccost end
      -- Only the window that counted the charge, if it is one the counts were read from: the stored
      -- window and the one before it, or the stored window alone as the previous one.
      local counted = creset - 2 * W
      inCurr, inPrev = false, false
      local s0 = text and match(text, '^(%-?%d+),%-?%d+,%-?%d+$')
      if s0 then
        s0 = s0 + 0
        if s0 >= floor(now / W) * W then
          inCurr, inPrev = counted == s0, counted == s0 - W
        else
          inPrev = counted == s0
        end
      end
    end
    if inCurr and curr > 0 and r > 0 then
      local take = curr
      if r < curr then take = r end
      curr, r, changed = curr - take, r - take, true
    end
    if inPrev and prev > 0 and r > 0 then
      if r < prev then prev = prev - r else prev = 0 end
      changed = true
    end
  end
  if changed then newt = fmt('%d,%d,%d', start, prev, curr) end
elseif alg == 'sliding-log' then${SL_READ}
  local changed = false
  if delta > 0 then
    -- Logged where a check logs, up to limit in the window, merged as a check merges.
    if used < L then
      local add = delta
      if delta >= L - used then add = L - used end
      if m > 0 and s[m - 1] == e then
        s[m] = s[m] + add
      else
        s[m + 1] = e
        s[m + 2] = add
        m = m + 2
      end
      if m > 2 * SLOTS then${MERGE}
      end
      changed = true
    end
  elseif delta < 0 and m > 0 then
    local r = -delta
    if ccost then
      if ccost < r then r = ccost end
      -- The entry that counted the charge; above a limit of SLOTS, where entries merge, also the later
      -- one of its slot it may have been merged into (while its time is in the window). A log moved
      -- back moved every entry by shift.
      local at = creset - W - shift
      local i = 1
      while i < m and s[i] < at do i = i + 2 end
      if i < m then
        local ti = s[i]
        local g = floor(W / (SLOTS - 1))
        if g * (SLOTS - 1) < W then g = g + 1 end
        if ti == at or (L > SLOTS and shift == 0 and at > e - W and floor(ti / g) == floor(at / g)) then
          local k = s[i + 1]
          if r >= k then
            for j = i, m - 2 do s[j] = s[j + 2] end
            m = m - 2
          else
            s[i + 1] = k - r
          end
          changed = true
        end
      end
    else
      -- No charge given: the newest entries give back first.
      local i = m - 1
      while i >= 1 and r > 0 do
        local k = s[i + 1]
        if r >= k then
          r = r - k
          i = i - 2
        else
          s[i + 1] = k - r
          r = 0
        end
      end
      m = i + 1
      changed = true
    end
  end
  if changed then
    newt = ''
    if m > 0 then newt = fmt(string.rep('%d,', m - 1) .. '%d', unpack(s, 1, m)) end
  end
else
  return redis.error_reply('ERR fastlimit: unknown bucket ' .. conf)
end
`

/** Keeps the key at least MARGIN ms past its longest-lived bucket (`longest`), never shortening it. */
const EXPIRE = (longest: string) => `
local need = ${longest} + MARGIN
if call('PTTL', key) < need then call('PEXPIRE', key, need + MARGIN) end
`

/**
 * KEYS[1]: the key's hash. ARGV, for one bucket: field (bucket id), then as far as needed: deadline,
 * cost (1 when left out; 0 peeks), now ('' or left out reads the server's TIME), configuration
 * (`algorithm:limit:windowMs:burst`; '' or left out when the field is that). For several buckets:
 * deadline, cost, now, then the field and the configuration of each (an odd count of arguments). For an
 * adjustment (`RedisBackend.adjust`, core's adjustAll) of one or more buckets: deadline, delta (a refund
 * when negative), now, the charges ('' for none, else `cost,resetMs,atMs` of each bucket joined by
 * commas, atMs '' when unknown), then the field and the configuration of each (an even count of
 * arguments, so the checks of one bucket, 1 to 5 arguments, and of several never test for it).
 *
 * deadline: epoch ms on the server's clock ('' or left out for none). A call that runs at or after it
 * reads and writes nothing and returns `late:<server now>:<deadline>`. It is compared with the server's
 * TIME, also when `now` is given (then read with pcall: a server that refuses TIME in scripts cannot
 * drop late calls, and runs them).
 *
 * Returns a string of 4 integers per bucket, joined by commas: allowed (1/0), remaining, resetMs,
 * retryAfterMs (-1 for never); a check that charged puts the time it stepped with (core's `atMs`) in
 * place of its retryAfterMs, which is 0 (no argument more to format), and its resetMs less that time in
 * place of its resetMs (fewer digits to print: each costs the server time). Several buckets are all or
 * nothing, as core's stepAll. An adjustment returns each bucket's peek after it.
 */
const lua = (
  margin: number,
  skew: number,
) => `-- fastlimit: one atomic step of a rate limit (see @fastlimit/redis)
local call, floor, fmt, match = redis.call, math.floor, string.format, string.match
local MAX = 9007199254740991
local MARGIN = ${margin}
-- How far ahead of now a state may lie and be another clock's (core's skewMs); 0 with the server's TIME.
local SKEW = ${skew}
local key = KEYS[1]
local argc = #ARGV
local cost, deadline, now
-- Whether now is the server's TIME (then a window's key kept by an earlier write needs no PTTL).
local server = false
if argc <= 5 then deadline, cost, now = ARGV[2], ARGV[3], ARGV[4] else deadline, cost, now = ARGV[1], ARGV[2], ARGV[3] end
if cost == nil or cost == '1' then cost = 1 else cost = cost + 0 end
if now == nil or now == '' then
  local time = call('TIME')
  now = time[1] * 1000 + floor(time[2] / 1000)
  server = true
  -- Past its deadline the caller has given up on this call: nothing is read or written.
  if deadline and deadline ~= '' and now >= deadline + 0 then return fmt('late:%d:%d', now, deadline) end
else
  now = now + 0
  if deadline and deadline ~= '' then
    local time = redis.pcall('TIME')
    if time[2] then
      local t = time[1] * 1000 + floor(time[2] / 1000)
      if t >= deadline + 0 then return fmt('late:%d:%d', t, deadline) end
    end
  end
end
if argc <= 5 then
  local field = ARGV[1]
  local conf = ARGV[5]
  if conf == nil or conf == '' then conf = field end
  local text = call('HGET', key, field)
  local c = cost
  local ok, rem, reset, retry, ttl, enc, norm, kept
  ${STEP}
  -- Charged; or, when checking (not peeking), moved back to now after the clock stepped back.
  if not enc and c > 0 then enc = norm end
  if enc then
    call('HSET', key, field, enc)
    -- A window's state written in the same window already keeps the key long enough (no PTTL).
    if not (kept and server) then${EXPIRE('ttl')}    end
  end
  -- A charge answers with its time (core's atMs) where its retryAfterMs, 0, would be, and its resetMs as
  -- the time from then (fewer digits to print).
  if ok then
    if c > 0 then return fmt('1,%d,%d,%d', rem, reset - now, now) end
    return fmt('1,%d,%d,0', rem, reset)
  end
  return fmt('0,%d,%d,%d', rem, reset, retry)
end
if argc % 2 == 0 then
  -- An adjustment of one or more buckets (core's adjustAll): never denied, every bucket applied at once.
  local delta = cost
  local n = (argc - 4) / 2
  local fields, confs = {}, {}
  for i = 1, n do
    local field = ARGV[3 + 2 * i]
    fields[i] = field
    local conf = ARGV[4 + 2 * i]
    if conf == '' then conf = field end
    confs[i] = conf
  end
  -- The charges: cost, resetMs and atMs ('' when unknown) of each bucket, or '' for none.
  local cs = {}
  if ARGV[4] ~= '' then
    for v in string.gmatch(ARGV[4] .. ',', '([^,]*),') do cs[#cs + 1] = v end
  end
  local texts = call('HMGET', key, unpack(fields))
  local out, writes, longest = {}, {}, 0
  for i = 1, n do
    local conf, text = confs[i], texts[i]
    local ccost, creset, cat
    if cs[3 * i] then
      ccost, creset = cs[3 * i - 2] + 0, cs[3 * i - 1] + 0
      if cs[3 * i] ~= '' then cat = cs[3 * i] + 0 end
    end
    local newt
    do
      local norm, kept
      ${ADJUST}
    end
    if newt then text = newt end
    local c = 0
    local ok, rem, reset, retry, ttl, enc, norm, kept
    ${STEP}
    -- The adjusted state; or, unchanged, moved back to now after the clock stepped back.
    local w = newt or norm
    if w then
      writes[#writes + 1] = fields[i]
      writes[#writes + 1] = w
      if ttl > longest then longest = ttl end
    end
    if ok then out[i] = fmt('1,%d,%d,%d', rem, reset, retry) else out[i] = fmt('0,%d,%d,%d', rem, reset, retry) end
  end
  if #writes > 0 then
    call('HSET', key, unpack(writes))
    ${EXPIRE('longest')}
  end
  return table.concat(out, ',')
end
-- Several buckets, all or nothing (core's stepAll).
local n = (argc - 3) / 2
local fields = {}
for i = 1, n do fields[i] = ARGV[2 + 2 * i] end
local texts = call('HMGET', key, unpack(fields))
-- writes: field, state, ... of the charges; norms[i] and norms[n + i]: a state moved back and its ttl.
local out, writes, norms = {}, {}, nil
local all, longest, keptAll = true, 0, server
for i = 1, n do
  local field, conf, text, c = fields[i], ARGV[3 + 2 * i], texts[i], cost
  if conf == '' then conf = field end
  local ok, rem, reset, retry, ttl, enc, norm, kept
  ${STEP}
  -- Admitted: the time where retryAfterMs (0) would be, as for one bucket (replaced below if denied).
  if ok then
    out[i] = fmt('1,%d,%d,%d', rem, reset - now, now)
    writes[2 * i - 1] = field
    writes[2 * i] = enc
  else
    out[i] = fmt('0,%d,%d,%d', rem, reset, retry)
    all = false
  end
  if norm then
    if not norms then norms = {} end
    norms[i] = norm
    norms[n + i] = ttl
  end
  if not kept then keptAll = false end
  if ttl > longest then longest = ttl end
end
if all then
  if cost > 0 then
    call('HSET', key, unpack(writes))
    if not keptAll then${EXPIRE('longest')}    end
  end
  return table.concat(out, ',')
end
-- Nothing is charged: a bucket that would have admitted reports its uncharged state. A state that lay
-- ahead of now (the clock stepped back) is still moved back to now, as core's stepAll says.
local moved, movedLongest = nil, 0
for i = 1, n do
  local mn, mt
  if writes[2 * i - 1] then
    local field, conf, text, c = fields[i], ARGV[3 + 2 * i], texts[i], 0
    if conf == '' then conf = field end
    local ok, rem, reset, retry, ttl, enc, norm, kept
    ${STEP}
    out[i] = fmt('1,%d,%d,0', rem, reset)
    mn, mt = norm, ttl
  elseif norms then
    mn, mt = norms[i], norms[n + i]
  end
  if mn then
    if not moved then moved = {} end
    moved[#moved + 1] = fields[i]
    moved[#moved + 1] = mn
    if mt > movedLongest then movedLongest = mt end
  end
end
if moved then
  call('HSET', key, unpack(moved))
  ${EXPIRE('movedLongest')}
end
return table.concat(out, ',')
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

const scripts = new Map<string, ScriptDefinition>()

/**
 * The script of every call (checkAndIncrement, checkAndIncrementAll, peek with cost 0, and adjust) for an
 * expiry margin and a clock skew tolerance (core's `skewMs`; 0 for the server's TIME), which are part
 * of its text: no argument more per call.
 */
export function scriptFor(expiryMarginMs: number, skewMs = 0): ScriptDefinition {
  const id = `${expiryMarginMs}:${skewMs}`
  let script = scripts.get(id)
  if (script === undefined) {
    script = define('fastlimit', lua(expiryMarginMs, skewMs))
    scripts.set(id, script)
  }
  return script
}

/** The script of the default expiry margin (1000 ms). */
export const SCRIPT: ScriptDefinition = scriptFor(1000)
