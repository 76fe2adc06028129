package redisstore

import "github.com/redis/go-redis/v9"

// The scripts share a prelude: the time (the server's, or the caller's when
// it passes one) and the UTC calendar arithmetic of quota periods, so the
// period a charge lands in is decided where the charge is made.
//
// KEYS[1] window hash (field: Unix second, value: tokens charged in it)
// KEYS[2] holds sorted set (member: "id|tokens", score: expiry in ms)
// KEYS[3] quota hash (fields: start, used)
const luaPrelude = `
local function now_ms(arg)
  local n = tonumber(arg)
  if n < 0 then
    local t = redis.call('TIME')
    n = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return n
end

-- days_from_civil and civil_from_days: proleptic Gregorian, UTC.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp + 3
  if m > 12 then m = m - 12 end
  if m <= 2 then y = y + 1 end
  return y, m, d
end

-- period returns the [start, end) of the quota period containing sec, in
-- Unix seconds. Kinds: 1 hourly, 2 daily, 3 weekly (ISO, Monday), 4
-- monthly, 5 yearly.
local function period(kind, sec)
  if kind == 1 then
    local s = math.floor(sec / 3600) * 3600
    return s, s + 3600
  elseif kind == 2 then
    local s = math.floor(sec / 86400) * 86400
    return s, s + 86400
  elseif kind == 3 then
    -- 1970-01-05 was a Monday.
    local s = math.floor((sec - 4 * 86400) / 604800) * 604800 + 4 * 86400
    return s, s + 604800
  end
  local y, m = civil_from_days(math.floor(sec / 86400))
  if kind == 4 then
    local ny, nm = y, m + 1
    if nm > 12 then ny, nm = y + 1, 1 end
    return days_from_civil(y, m, 1) * 86400, days_from_civil(ny, nm, 1) * 86400
  end
  return days_from_civil(y, 1, 1) * 86400, days_from_civil(y + 1, 1, 1) * 86400
end
`

// luaState reads a key's state at now, dropping what has expired: the
// window's live buckets and their sum, the tokens held, and the quota used
// in now's period.
const luaState = `
local function state(now, quota, kind)
  local sec = math.floor(now / 1000)
  local w = redis.call('HGETALL', KEYS[1])
  local sum, buckets = 0, {}
  for i = 1, #w, 2 do
    local s, c = tonumber(w[i]), tonumber(w[i + 1])
    if s <= sec - 60 then
      redis.call('HDEL', KEYS[1], w[i])
    else
      sum = sum + c
      buckets[#buckets + 1] = s
      buckets[#buckets + 1] = c
    end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local held = 0
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    held = held + tonumber(string.match(m, '|(%d+)$'))
  end
  local qused = 0
  if quota > 0 then
    local start = period(kind, sec)
    local q = redis.call('HMGET', KEYS[3], 'start', 'used')
    if tonumber(q[1]) == start then qused = tonumber(q[2]) or 0 end
  end
  return sum, buckets, held, qused
end

-- verdict: 0 admitted, 1 the window refuses, 2 the quota does.
local function verdict(sum, held, qused, need, tpm, quota)
  if quota > 0 and qused + held + need > quota then return 2 end
  if tpm > 0 and sum + held + need > tpm then return 1 end
  return 0
end
`

// reserveScript checks the window and the quota and, when the request fits
// both, holds its tokens: one round trip, atomic, so concurrent replicas
// cannot admit together past a limit. It returns the state the caller
// needs to explain the decision: {reason, now_ms, held, quota_used,
// {second, tokens, ...}}.
//
// ARGV: now_ms (-1: server time), tokens_per_minute (0: none), quota (0:
// none), period kind, n, hold id, hold ttl ms.
var reserveScript = redis.NewScript(luaPrelude + luaState + `
local now = now_ms(ARGV[1])
local tpm, quota, kind, n = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local sum, buckets, held, qused = state(now, quota, kind)
local reason = verdict(sum, held, qused, math.max(n, 1), tpm, quota)
if reason == 0 and n > 0 then
  local ttl = tonumber(ARGV[7])
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[6] .. '|' .. n)
  redis.call('PEXPIRE', KEYS[2], ttl + 1000)
  held = held + n
end
return {reason, now, held, qused, buckets}
`)

// settleScript ends a hold and charges the tokens used to the window's
// second and the quota's period at the time of settling, then answers the
// state as reserveScript does with n = 0. Keys expire once nothing in them
// can count any more.
//
// A replay is a settle sent again after the first one failed on the
// client's side: the first may still have run (a reply slower than the
// timeout; a stalled server that ran its queued input when it woke). The
// hold is the proof: a replay charges only when its ZREM removed the hold,
// that is when no settle of that hold has run. A hold gone for another
// reason (its TTL passed, a restart without persistence lost it) loses
// the charge, as the budget it held was lost to everyone.
//
// ARGV: now_ms (-1: server time), hold member ("" for none), used,
// tokens_per_minute, quota (0: none), period kind, replay ("1" or "0").
var settleScript = redis.NewScript(luaPrelude + luaState + `
local now = now_ms(ARGV[1])
local sec = math.floor(now / 1000)
local tpm, quota, kind = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local used = tonumber(ARGV[3])
if ARGV[2] ~= '' then
  local removed = redis.call('ZREM', KEYS[2], ARGV[2])
  if ARGV[7] == '1' and removed == 0 then used = 0 end
end
if used > 0 then
  redis.call('HINCRBY', KEYS[1], sec, used)
  redis.call('EXPIRE', KEYS[1], 61)
  if quota > 0 then
    local start, stop = period(kind, sec)
    if tonumber(redis.call('HGET', KEYS[3], 'start')) ~= start then
      redis.call('HSET', KEYS[3], 'start', start, 'used', 0)
    end
    redis.call('HINCRBY', KEYS[3], 'used', used)
    -- Relative, not EXPIREAT: the time may be a caller's, not the server's.
    redis.call('EXPIRE', KEYS[3], stop - sec + 3600)
  end
end
local sum, buckets, held, qused = state(now, quota, kind)
return {verdict(sum, held, qused, 1, tpm, quota), now, held, qused, buckets}
`)
