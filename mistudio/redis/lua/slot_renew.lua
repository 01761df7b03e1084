-- Extend a concurrency slot's lease if the holder still has it (compare-and-extend).
--
-- KEYS[1]  sorted set holder token -> lease expiry (keys.concurrency_slots)
-- ARGV[1]  holder token
-- ARGV[2]  lease length in seconds
--
-- Returns the new expiry, or 0 if the lease had expired or was released: the
-- holder has lost the slot (someone else may have it) and must stop.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[2])
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl * 1000 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000))
end
return tostring(now + ttl)
