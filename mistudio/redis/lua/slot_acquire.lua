-- Take (or keep) one of N concurrency slots under a lease that expires with its holder (coord/lease.py).
--
-- KEYS[1]  sorted set holder token -> lease expiry, Redis TIME seconds (keys.concurrency_slots)
-- ARGV[1]  number of slots
-- ARGV[2]  holder token (unique per holder)
-- ARGV[3]  lease length in seconds
--
-- Expired holders are dropped first, so a crashed holder frees its slot after its
-- lease (an INCR/DECR counter would leak it forever). A holder already in the set
-- has its lease extended. Returns {1, expiry} when held, {0, earliest expiry among
-- the holders} when every slot is taken.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[2]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
  if redis.call('PTTL', KEYS[1]) < ttl * 1000 then
    redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000))
  end
  return {1, tostring(now + ttl)}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, first[2]}
