-- Give a message back at once (worker stopping on SIGTERM/SIGINT, or a crashed
-- child process): it returns to its original place in the pending set.
--
-- KEYS[1]  pending sorted set      (keys.queue_pending)
-- KEYS[2]  in-flight hash          (keys.queue_inflight)
-- KEYS[3]  lease deadlines         (keys.queue_leases)
-- KEYS[4]  lease info hash         (keys.queue_lease_info)
-- KEYS[5]  wake-up list            (keys.queue_notify)
-- ARGV[1]  lease id
--
-- Returns 1 if the message was requeued, 0 if the lease was no longer held.
local message = redis.call('HGET', KEYS[2], ARGV[1])
if not message then
  return 0
end
local info = cjson.decode(redis.call('HGET', KEYS[4], ARGV[1]) or '{}')
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[1], tonumber(info['score'] or 0), message)
redis.call('LPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], 0, 63)
return 1
