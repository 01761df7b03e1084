-- Extend a lease that is still held and has not expired (compare-and-extend).
--
-- KEYS[1]  lease deadlines         (keys.queue_leases)
-- ARGV[1]  lease id
-- ARGV[2]  lease length in seconds
--
-- Returns the new deadline, or 0 if the lease is gone (reaped, released, acknowledged)
-- or past its deadline (the reaper may hand the job out again any moment): the holder
-- must stop and commit nothing.
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not current then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if tonumber(current) <= now then
  return 0
end
local deadline = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], deadline, ARGV[1])
return tostring(deadline)
