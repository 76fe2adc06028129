package redisstore

import (
	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/limiter"
)

// The script starts with a prelude: the time (the server's, or the
// caller's when it passes one) and the UTC calendar arithmetic of quota
// periods, so the period a charge lands in is decided where the charge is
// made.
const luaPrelude = `
local function now_ms(arg)
  local n = tonumber(arg)
  if n < 0 then
    -- -1 is the server's time, -1-d that less d ms (a settle sent d ms
    -- after its response).
    local t = redis.call('TIME')
    n = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + n + 1
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

// luaCharge is the charge of a settle, which decideScript's settles and
// settleBatchScript share.
const luaCharge = `
-- charge_limit adds used to a limit's state at now (ms). A hash of
-- another shape than the limit (see decideScript's comment) is deleted, and
-- the charge made afresh. A window's charge to a bucket that already
-- holds some is one command: the shape was read when the bucket started,
-- and no bucket of a window of another span can bear its number while
-- span*span < now (bucket numbers, now*60/span, of two spans a
-- millisecond apart then lie more than a window's 60 buckets apart):
-- windows up to 22 minutes. A bucket or a period that starts is where the
-- shape is read and the expiry set, the newest of them deciding when the
-- key can go.
local function charge_limit(key, kind, span, used, implicit, now)
  if kind == 0 then
    local bucket = string.format('%d', math.floor(now * 60 / span))
    if redis.call('HINCRBY', key, bucket, used) ~= used and span * span < now then return end
    local f = redis.call('HMGET', key, 'span', 'start')
    local stale
    if f[1] == false and f[2] == false then
      -- Buckets without a span: the minute window of the Limits calls;
      -- anything else's only when this charge is all the hash holds.
      stale = not (implicit and span == 60000) and redis.call('HLEN', key) > 1
    else
      stale = f[2] ~= false or tonumber(f[1]) ~= span
    end
    if stale then
      redis.call('DEL', key)
      redis.call('HINCRBY', key, bucket, used)
      f = {false, false}
    end
    redis.call('PEXPIRE', key, math.max(span, 60000) + 1000)
    if f[1] == false and not (implicit and span == 60000) then redis.call('HSET', key, 'span', span) end
    return
  end
  -- A period's hash without a start holds something else (or nothing:
  -- DEL is then a no-op), and its period starts now.
  local f = redis.call('HMGET', key, 'span', 'start')
  if f[2] == false then redis.call('DEL', key) end
  local sec = math.floor(now / 1000)
  local start, stop = period(kind, sec)
  if tonumber(f[2]) == start then
    redis.call('HINCRBY', key, 'used', used)
    return
  end
  redis.call('HSET', key, 'start', start, 'used', used)
  -- Relative, not EXPIREAT: the time may be a caller's, not the server's.
  redis.call('EXPIRE', key, stop - sec + 3600)
end
`

// decideScript is every call: one round trip, atomic, for all the limits
// of a Budget, so that concurrent replicas cannot admit together past any
// of them.
//
// KEYS[1] is the key's holds, a sorted set: member "id|amounts", score the
// hold's expiry in ms. Amounts are "name=n,name=n" for a Budget's hold, or
// a bare "n", which a hold of the Limits calls holds in the limits named
// limiter.WindowLimitName and limiter.QuotaLimitName alike (as every hold
// did before Budgets).
//
// KEYS[1+i] is the state of limit i, a hash. A window's: field the bucket
// (floor(ms*60/span)), value the units charged in it, and field "span"
// unless the key is the minute window of the Limits calls (which never had
// one). A period's: fields "start" (of the period counted) and "used". A
// hash of another shape than its limit (a window of another span, a
// period become a window) counts as empty, and a call that charges or
// reserves deletes it first.
//
// ARGV: now_ms (-1: server time), mode ("r" reserve, "s" status, "c"
// settle, "p" a replayed settle), the hold's member ("" for none: reserve
// adds it when it admits, settle removes it), the hold's lease in ms (its
// expiry until renewScript renews it), the grace in ms (how long an
// expired hold is kept as a replay's proof: the hold TTL less the lease),
// the number of limits, then per limit: name, kind (0 a window, else the
// period: 1 hourly ... 5 yearly), span in ms, max, amount (n to reserve,
// or used to charge), and "1" when a missing span means a minute.
//
// A replay is a settle sent again after the first one failed on the
// client's side: the first may still have run (a reply slower than the
// timeout; a stalled server that ran its queued input when it woke). The
// hold is the proof: a replay charges only when its ZREM removed the hold,
// that is when no settle of that hold has run. An expired hold holds
// nothing, but stays in the set for the grace, so that the replay of a
// settle that failed during an outage longer than a lease (renewals
// failed too) still finds it, and charges, up to the hold TTL as before
// leases. A hold gone for another reason (the hold TTL passed, a restart
// without persistence lost it) loses the charge, as the budget it held
// was lost to everyone.
//
// It returns {refused, now_ms, {held, used, newest, {bucket, units, ...}}
// per limit}: the index (from 0) of the first limit that refuses, -1 when
// all admit; per limit, the units held (a hold just made included), what
// is charged (a window's sum, a period's count), a window's newest bucket
// and, only when that window alone refuses the request, its live buckets,
// which the wait is worked out from (see counter.ExplainWindow). Keys
// expire once nothing in them can count any more.
var decideScript = redis.NewScript(luaPrelude + luaCharge + `
local now = now_ms(ARGV[1])
local sec = math.floor(now / 1000)
local mode, member, ttl, grace, count = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

local function limit(i)
  local b = 6 + (i - 1) * 6
  return ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]),
    tonumber(ARGV[b + 5]), ARGV[b + 6] == '1'
end

-- window returns the sum of the live buckets of a window at now and the
-- newest of them, dropping those that have left (one HDEL for them all),
-- and a function that lists them; a hash of another shape (a period's,
-- or a window of another span) is deleted when mutate is set, and counts
-- as empty either way. One pass over the hash: a busy key has 60 buckets.
local function window(key, span, implicit, mutate)
  local h = redis.call('HGETALL', key)
  local none = function() return {} end
  if #h == 0 then return 0, 0, none end
  local oldest = math.floor(now * 60 / span) - 59
  local was, period, sum, newest, old = nil, false, 0, 0, {}
  for j = 1, #h, 2 do
    local f = h[j]
    local b = tonumber(f)
    if b ~= nil then
      if b < oldest then
        old[#old + 1] = f
        h[j] = 'gone'
      else
        local c = tonumber(h[j + 1])
        sum = sum + c
        if c > 0 and b > newest then newest = b end
      end
    elseif f == 'span' then
      was = tonumber(h[j + 1])
    elseif f == 'start' or f == 'used' then
      period = true
    end
  end
  if was == nil and implicit then was = 60000 end
  if period or (was or 0) ~= span then
    if mutate then redis.call('DEL', key) end
    return 0, 0, none
  end
  for j = 1, #old, 1000 do
    redis.call('HDEL', key, unpack(old, j, math.min(j + 999, #old)))
  end
  local list = function()
    local out = {}
    for j = 1, #h, 2 do
      local b = tonumber(h[j])
      if b ~= nil then
        out[#out + 1] = b
        out[#out + 1] = tonumber(h[j + 1])
      end
    end
    return out
  end
  return sum, newest, list
end

-- quota returns what limit i's period counts at now: nothing from a
-- hash without a start (empty, or of another shape, which the next
-- charge deletes: charge_limit reads a period's shape at every charge).
local function quota(key, kind)
  local f = redis.call('HMGET', key, 'start', 'used')
  if f[1] == false or tonumber(f[1]) ~= period(kind, sec) then return 0 end
  return tonumber(f[2]) or 0
end

-- held adds up, per limit name, what the holds still alive hold.
local function held()
  local by = {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], string.format('(%d', now), '+inf')) do
    local body = string.match(m, '|(.*)$')
    local n = tonumber(body)
    if n ~= nil then
      by['` + limiter.WindowLimitName + `'] = (by['` + limiter.WindowLimitName + `'] or 0) + n
      by['` + limiter.QuotaLimitName + `'] = (by['` + limiter.QuotaLimitName + `'] or 0) + n
    elseif body ~= nil then
      for name, v in string.gmatch(body, '([^=,]+)=(%d+)') do
        by[name] = (by[name] or 0) + tonumber(v)
      end
    end
  end
  return by
end

-- Expired holds are dropped once past the grace, before a replay looks
-- for its own.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - grace))

-- 'b' is 'c' for a caller that does not read the answer (a settle sent
-- behind its response): it charges, whether or not it found the hold (a
-- failover may have lost it with the master), and returns at once.
local settle = mode == 'c' or mode == 'p' or mode == 'b'
if settle then
  local charge = true
  if member ~= '' then
    local removed = redis.call('ZREM', KEYS[1], member)
    if mode == 'p' and removed == 0 then charge = false end
  end
  for i = 1, count do
    local name, kind, span, max, used, implicit = limit(i)
    if charge and used > 0 then charge_limit(KEYS[1 + i], kind, span, used, implicit, now) end
  end
end
if mode == 'b' then return {1} end

local by = held()
local refused = -1
local out = {}
for i = 1, count do
  local name, kind, span, max, amount, implicit = limit(i)
  local key = KEYS[1 + i]
  local need = 1
  if mode == 'r' then need = math.max(amount, 1) end
  local used, newest, list = 0, 0, nil
  if kind == 0 then
    used, newest, list = window(key, span, implicit, mode == 'r')
  else
    used = quota(key, kind)
  end
  local h = by[name] or 0
  local fits = used + h + need <= max
  if refused < 0 and not fits then refused = i - 1 end
  -- A window's buckets matter only to the wait of a limit that refuses.
  local buckets = {}
  if not fits and list ~= nil then buckets = list() end
  out[i] = {h, used, newest, buckets}
end
if mode == 'r' and refused < 0 and member ~= '' then
  redis.call('ZADD', KEYS[1], now + ttl, member)
  -- The set outlives the hold's grace; never shorter than it was: another
  -- replica's holds may be configured to live longer.
  local keep = ttl + grace + 1000
  if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
  for i = 1, count do
    local name, kind, span, max, amount = limit(i)
    if amount > 0 then out[i][1] = out[i][1] + amount end
  end
end
return {refused, now, out}
`)

// settleBatchScript is a batch of settles sent behind their responses, in
// one script: what decideScript's mode "b" does for each, without the
// fixed cost of a script call per settle. Not in a Cluster, where the
// keys of one script must share a slot.
//
// ARGV: the grace in ms (as decideScript's), the number of settles, then
// per settle: now_ms (-1: server time, -1-d: d ms before it), the hold's member ("" for none),
// the number of limits, and per limit: kind, span in ms, used, and "1"
// when a missing span means a minute. KEYS: per settle, its holds, then
// the state of each of its limits.
//
// Each settle runs on its own: one that fails (a key of another type)
// does not stop the others. It returns per settle 1, or the error.
var settleBatchScript = redis.NewScript(luaPrelude + luaCharge + `
local grace, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local a, k = 3, 1
-- A script sees one server time (Redis freezes it while a script runs):
-- TIME once, not per settle.
local server = nil
local function at(arg)
  local n = tonumber(arg)
  if n >= 0 then return n end
  if server == nil then server = now_ms(-1) end
  return server + n + 1
end
local function one(now, member, holds, first, argv, count)
  if member ~= '' then
    redis.call('ZREMRANGEBYSCORE', holds, '-inf', string.format('%d', now - grace))
    redis.call('ZREM', holds, member)
  end
  for i = 0, count - 1 do
    local b = argv + i * 4
    local used = tonumber(ARGV[b + 2])
    if used > 0 then
      charge_limit(KEYS[first + i], tonumber(ARGV[b]), tonumber(ARGV[b + 1]), used, ARGV[b + 3] == '1', now)
    end
  end
end
local out = {}
for s = 1, n do
  local now, member, count = at(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2])
  local ok, err = pcall(one, now, member, KEYS[k], k + 1, a + 3, count)
  if ok then
    out[s] = 1
  else
    if type(err) == 'table' then err = err.err end
    out[s] = tostring(err)
  end
  a = a + 3 + count * 4
  k = k + 1 + count
end
return out
`)
