// Concurrency leases on Redis: a sorted set per key (member: the lease's token, score: its expiry in epoch
// ms), taken and given back by two small Lua scripts of their own, so the check script stays as it is.
//
// The set lives at `namespace + "\0L" + key`: the bucket hash of the same key is at `namespace + key`, so
// the two never meet (a key FastLimit builds never starts with NUL), and both carry the key's hash tag
// (`prefix:{identity}`): on a Cluster each script touches one key, in the slot of the identity. The set
// expires (PEXPIRE) with its latest lease plus the expiry margin, and Redis drops it when it empties.
import { createHash } from 'node:crypto'
import { type AcquireResult, FastlimitError, RETRY_NEVER } from '@fastlimit/core'
import { hasLoneSurrogate, wtf8 } from './keys'
import type { ScriptDefinition } from './scripts'

/** What separates a lease set's key from the namespace (bucket hashes never have it). */
const LEASE_TAG = '\u0000L'

/** The Redis key of a backend key's lease set. */
export function leaseKey(prefix: string, key: string): string | Buffer {
  const full = prefix + LEASE_TAG + key
  return hasLoneSurrogate(key) ? wtf8(full) : full
}

/**
 * The clock and the deadline, as the check script reads them: `now` is ARGV[4] ('' for the server's
 * TIME); past `deadline` (ARGV[3], '' for none) nothing is read or written and the reply is
 * `late:<now>:<deadline>`.
 */
const CLOCK = `
local floor, fmt, call = math.floor, string.format, redis.call
local deadline, now = ARGV[3], ARGV[4]
if now == nil or now == '' then
  local time = call('TIME')
  now = time[1] * 1000 + floor(time[2] / 1000)
  if deadline ~= '' and now >= deadline + 0 then return fmt('late:%d:%d', now, deadline) end
else
  now = now + 0
  if deadline ~= '' then
    local time = redis.pcall('TIME')
    if time[2] then
      local t = time[1] * 1000 + floor(time[2] / 1000)
      if t >= deadline + 0 then return fmt('late:%d:%d', t, deadline) end
    end
  end
end
local key = KEYS[1]
`

/**
 * Acquire. KEYS[1]: the lease set. ARGV: token, `limit:leaseMs`, deadline, now. Drops the expired leases,
 * counts, and adds the token if there is room. Reply: `1,<holders>,<expiresMs>` or
 * `0,<holders>,<ms until the earliest expiry>`.
 */
function acquireLua(marginMs: number): string {
  return `${CLOCK}
local L, T = string.match(ARGV[2], '^(%d+):(%d+)$')
if not T then return redis.error_reply('ERR fastlimit: bad lease config ' .. ARGV[2]) end
L, T = L + 0, T + 0
call('ZREMRANGEBYSCORE', key, '-inf', now)
local n = call('ZCARD', key)
if n >= L then
  local first = call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return fmt('0,%d,%d', n, first[2] - now)
end
local exp = now + T
call('ZADD', key, exp, ARGV[1])
local last = call('ZRANGE', key, -1, -1, 'WITHSCORES')
call('PEXPIRE', key, last[2] - now + ${marginMs})
return fmt('1,%d,%d', n + 1, exp)
`
}

/** Release. KEYS[1]: the lease set. ARGV: token, '', deadline, now. Reply: 1 if the lease was live, else 0. */
const RELEASE_LUA = `${CLOCK}
local score = call('ZSCORE', key, ARGV[1])
if not score then return 0 end
call('ZREM', key, ARGV[1])
if score + 0 > now then return 1 end
return 0
`

function define(name: string, lua: string): ScriptDefinition {
  const sha = createHash('sha1').update(lua).digest('hex')
  return { name: `${name}_${sha.slice(0, 12)}`, lua, sha }
}

const acquireScripts = new Map<number, ScriptDefinition>()

/** The acquire script of an expiry margin (part of its text). */
export function acquireScript(marginMs: number): ScriptDefinition {
  let script = acquireScripts.get(marginMs)
  if (script === undefined) {
    script = define('fastlimit_acquire', acquireLua(marginMs))
    acquireScripts.set(marginMs, script)
  }
  return script
}

/** The release script. */
export const RELEASE_SCRIPT: ScriptDefinition = define('fastlimit_release', RELEASE_LUA)

const LATE = /^late:(\d+):(-?\d+)$/
const ACQUIRED = /^([01]),(\d+),(-?\d+)$/

/** The error of a reply that is no answer: a call that reached Redis past its deadline, or something else. */
function notAnAnswer(reply: unknown, what: string): FastlimitError {
  const late = typeof reply === 'string' ? LATE.exec(reply) : null
  if (late !== null) {
    const by = Number(late[1]) - Number(late[2])
    return new FastlimitError(
      'ERR_FASTLIMIT_TIMEOUT',
      `[fastlimit] [redis] ${what} reached Redis ${by} ms past its deadline; nothing was changed. The limiter ` +
        'had already given up on it (timeoutMs) and applied its onBackendError policy.',
    )
  }
  return new FastlimitError(
    'ERR_FASTLIMIT_BACKEND',
    `[fastlimit] [redis] Unexpected ${what} reply ${JSON.stringify(String(reply)).slice(0, 80)}: is the client ` +
      'in a special mode (subscriber, MULTI)? Give RedisBackend a client of its own.',
  )
}

/** Reads the acquire script's reply. */
export function readAcquire(reply: unknown, limit: number): AcquireResult {
  const m = typeof reply === 'string' ? ACQUIRED.exec(reply) : null
  if (m === null) throw notAnAnswer(reply, 'acquire')
  const holders = Number(m[2])
  const x = Number(m[3])
  if (m[1] === '1') return { acquired: true, limit, holders, expiresMs: x, retryAfterMs: 0 }
  return { acquired: false, limit, holders, expiresMs: 0, retryAfterMs: Number.isFinite(x) ? x : RETRY_NEVER }
}

/** Reads the release script's reply. */
export function readRelease(reply: unknown): boolean {
  if (reply === 1 || reply === 0) return reply === 1
  throw notAnAnswer(reply, 'release')
}
