-- Extend a lease that is still held (compare-and-extend).
--
-- KEYS[1]  lease deadlines         (keys.queue_leases)
-- ARGV[1]  lease id
-- ARGV[2]  lease length in seconds
--
-- Returns the new deadline, or 0 if the lease is gone (expired and reaped,
-- released, or acknowledged): the holder must stop and commit nothing.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
local t = redis.call('TIME')
local deadline = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], deadline, ARGV[1])
return tostring(deadline)
