-- GCRA (the generic cell rate algorithm) over Redis's clock, one call per refill of a
-- replica's lease, shared by every replica.
--
-- KEYS[1]: the key's theoretical arrival time (TAT), in microseconds of Redis time.
-- ARGV[1]: the emission interval T, microseconds per token.
-- ARGV[2]: the tolerance, burst x T microseconds: at most `burst` tokens ahead of time.
-- ARGV[3]: k >= 1, the tokens wanted.
--
-- Grants g = as many of the k tokens as fit (0..k) and moves the TAT by g x T. The key
-- expires when its TAT is reached: by then it is equivalent to an absent key.
-- Returns { g, wait } where wait (microseconds) is how long until one more token fits
-- after this grant: the Retry-After when g is 0.
--
-- Integers are written with %.0f: Lua 5.1's tostring would print 1.7e+15.

local function int(x)
  return string.format('%.0f', x)
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])

local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
if tat < now then
  tat = now
end

local fit = math.floor((now + tolerance - tat) / interval)
local granted = math.max(0, math.min(wanted, fit))
if granted > 0 then
  tat = tat + granted * interval
  redis.call('SET', KEYS[1], int(tat), 'PX', int(math.ceil((tat - now) / 1000)))
end

local wait = math.max(0, tat + interval - tolerance - now)
return { granted, wait }
