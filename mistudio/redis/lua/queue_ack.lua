-- Acknowledge a message: the job ended (any final state) and is not to run again.
--
-- KEYS[1]  in-flight hash          (keys.queue_inflight)
-- KEYS[2]  lease deadlines         (keys.queue_leases)
-- KEYS[3]  lease info hash         (keys.queue_lease_info)
-- KEYS[4]  attempts hash           (keys.queue_attempts)
-- ARGV[1]  lease id
-- ARGV[2]  job id
--
-- Returns 1 if the lease was held, 0 if it had already been lost.
local held = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if held == 1 and ARGV[2] ~= '' then
  redis.call('HDEL', KEYS[4], ARGV[2])
end
return held
