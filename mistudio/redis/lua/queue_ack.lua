-- Acknowledge a message: the job ended (any final state) and is not to run again.
--
-- KEYS[1]  in-flight hash          (keys.queue_inflight)
-- KEYS[2]  lease deadlines         (keys.queue_leases)
-- KEYS[3]  lease info hash         (keys.queue_lease_info)
-- KEYS[4]  attempts hash           (keys.queue_attempts)
-- ARGV[1]  lease id
--
-- Returns 1 if the lease was held, 0 if it had already been lost.
local info = cjson.decode(redis.call('HGET', KEYS[3], ARGV[1]) or '{}')
local held = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
local counter = info['counter'] or info['job_id'] or ''
if held == 1 and counter ~= '' then
  redis.call('HDEL', KEYS[4], counter)
end
return held
