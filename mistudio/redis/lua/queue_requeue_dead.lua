-- Put a dead-lettered job back on its queue with a fresh attempt count.
--
-- KEYS[1]  dead-letter hash        (keys.queue_dead)
-- KEYS[2]  pending sorted set      (keys.queue_pending)
-- KEYS[3]  sequence counter        (keys.queue_seq)
-- KEYS[4]  attempts hash           (keys.queue_attempts)
-- KEYS[5]  wake-up list            (keys.queue_notify)
-- KEYS[6]  dead-letter reasons     (keys.queue_dead_info)
-- ARGV[1]  job id
-- ARGV[2]  priority
--
-- Returns 1 if the job was dead and is queued again, 0 if it was not dead.
local message = redis.call('HGET', KEYS[1], ARGV[1])
if not message then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
local seq = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[2], -tonumber(ARGV[2]) * 4294967296 + seq, message)
redis.call('LPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], 0, 63)
return 1
