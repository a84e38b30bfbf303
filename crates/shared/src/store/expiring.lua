-- Expiring sorted sets: each member's score is the Redis time (ms) at which it stops
-- counting, and the key itself expires with its last member. Used for the slots of
-- shared counts and for membership lists. ARGV[1] names the operation:
--
--   add KEYS[1] ARGV: member, ttl_ms, cap (0: none)
--       -> 1 if the member is in the set now (added, or renewed if it was there), 0 if
--          the set already had `cap` live members
--   live KEYS[1] -> the live members
--   renew KEYS[1..n] ARGV: ttl_ms, member_1..member_n (member i in KEYS[i])
--       -> the indices i of the members that had expired or were gone (not renewed)
--
-- Integers are written with %.0f: Lua 5.1's tostring would print 1.7e+12.

local function int(x)
  return string.format('%.0f', x)
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function expire_with_last(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIREAT', key, int(tonumber(last[2])))
  end
end

local op = ARGV[1]

if op == 'add' then
  local key, member, ttl, cap = KEYS[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now))
  if cap > 0 and not redis.call('ZSCORE', key, member) and redis.call('ZCARD', key) >= cap then
    return 0
  end
  redis.call('ZADD', key, int(now + ttl), member)
  expire_with_last(key)
  return 1
elseif op == 'live' then
  return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. int(now), '+inf')
elseif op == 'renew' then
  local ttl = tonumber(ARGV[2])
  local lost = {}
  for i, key in ipairs(KEYS) do
    local member = ARGV[i + 2]
    local score = redis.call('ZSCORE', key, member)
    if score and tonumber(score) > now then
      redis.call('ZADD', key, int(now + ttl), member)
      expire_with_last(key)
    else
      -- Expired: another replica may already hold its place; it must not come back.
      redis.call('ZREM', key, member)
      lost[#lost + 1] = i
    end
  end
  return lost
end
return redis.error_reply('expiring.lua: unknown operation ' .. tostring(op))
