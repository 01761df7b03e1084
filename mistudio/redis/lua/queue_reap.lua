-- Requeue messages whose lease expired (their worker died or hung), or move them
-- to the dead letters once they have been delivered max_attempts times.
--
-- KEYS[1]  pending sorted set      (keys.queue_pending)
-- KEYS[2]  in-flight hash          (keys.queue_inflight)
-- KEYS[3]  lease deadlines         (keys.queue_leases)
-- KEYS[4]  lease info hash         (keys.queue_lease_info)
-- KEYS[5]  attempts hash           (keys.queue_attempts)
-- KEYS[6]  dead-letter hash        (keys.queue_dead)         key -> message
-- KEYS[7]  wake-up list            (keys.queue_notify)
-- KEYS[8]  dead-letter reasons     (keys.queue_dead_info)    key -> JSON {reason, job_id, at}
-- ARGV[1]  max attempts
-- ARGV[2]  most leases to reap in one call
--
-- Safe to run from several processes at once: each expired lease is moved once.
-- A dead letter is keyed by its job id; one without an id by its attempt counter
-- and lease id, so two such messages never overwrite each other.
-- Returns a flat list {lease_id, job_id, outcome, attempts, ...} (outcome: requeued|dead).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, lease_id in ipairs(expired) do
  local message = redis.call('HGET', KEYS[2], lease_id)
  local info = cjson.decode(redis.call('HGET', KEYS[4], lease_id) or '{}')
  redis.call('HDEL', KEYS[2], lease_id)
  redis.call('ZREM', KEYS[3], lease_id)
  redis.call('HDEL', KEYS[4], lease_id)
  if message then
    local job_id = info['job_id'] or ''
    local counter = info['counter'] or job_id
    local attempts = tonumber(redis.call('HGET', KEYS[5], counter) or '0')
    local outcome = 'requeued'
    if attempts >= tonumber(ARGV[1]) then
      outcome = 'dead'
      local key = job_id
      if key == '' then
        key = counter .. ':' .. lease_id
      end
      redis.call('HSET', KEYS[6], key, message)
      redis.call('HSET', KEYS[8], key, cjson.encode({
        reason = 'delivered ' .. attempts .. ' times; its worker died or lost the lease each time',
        job_id = job_id, at = tonumber(t[1])}))
      redis.call('HDEL', KEYS[5], counter)
    else
      redis.call('ZADD', KEYS[1], tonumber(info['score'] or 0), message)
      redis.call('LPUSH', KEYS[7], '1')
      redis.call('LTRIM', KEYS[7], 0, 63)
    end
    table.insert(out, lease_id)
    table.insert(out, job_id)
    table.insert(out, outcome)
    table.insert(out, tostring(attempts))
  end
end
return out
