-- Move a claimed message to the dead letters with the reason (undecodable, an invalid
-- job id or task, a job that keeps killing its process): it never runs again by itself.
--
-- KEYS[1]  in-flight hash          (keys.queue_inflight)
-- KEYS[2]  lease deadlines         (keys.queue_leases)
-- KEYS[3]  lease info hash         (keys.queue_lease_info)
-- KEYS[4]  attempts hash           (keys.queue_attempts)
-- KEYS[5]  dead-letter hash        (keys.queue_dead)        key -> message
-- KEYS[6]  dead-letter reasons     (keys.queue_dead_info)   key -> JSON {reason, job_id, at}
-- ARGV[1]  lease id
-- ARGV[2]  dead-letter key (the job id; unique per message for one without a valid id)
-- ARGV[3]  reason
-- ARGV[4]  job id as read from the message ("" if none)
--
-- Returns 1 if the message was buried, 0 if the lease was no longer held.
local message = redis.call('HGET', KEYS[1], ARGV[1])
if not message then
  return 0
end
local info = cjson.decode(redis.call('HGET', KEYS[3], ARGV[1]) or '{}')
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
local counter = info['counter'] or info['job_id'] or ''
if counter ~= '' then
  redis.call('HDEL', KEYS[4], counter)
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[5], ARGV[2], message)
redis.call('HSET', KEYS[6], ARGV[2], cjson.encode({reason = ARGV[3], job_id = ARGV[4], at = tonumber(t[1])}))
return 1
