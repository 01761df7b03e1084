-- Claim the next message under a lease (at-least-once delivery).
--
-- KEYS[1]  pending sorted set      (keys.queue_pending)
-- KEYS[2]  in-flight hash          (keys.queue_inflight)    lease_id -> message
-- KEYS[3]  lease deadlines         (keys.queue_leases)      lease_id -> deadline
-- KEYS[4]  lease info hash         (keys.queue_lease_info)  lease_id -> JSON
-- KEYS[5]  attempts hash           (keys.queue_attempts)    counter -> deliveries
-- ARGV[1]  lease length in seconds
-- ARGV[2]  worker id
-- ARGV[3]  lease id (unique per delivery)
--
-- Pop, record in flight, set the deadline from Redis TIME (one clock for every
-- device) and count the attempt, all in one step: a worker that dies right after
-- the pop still leaves the message in flight, where the reaper finds it.
-- Attempts are counted per job id, or per message digest ('#' .. sha1) when the
-- message has no string id: every message, even one nobody can decode, reaches the
-- dead letters after max attempts instead of looping forever.
-- Returns {message, attempt, deadline, score} or nil when the queue is empty.
local item = redis.call('ZPOPMIN', KEYS[1])
if #item == 0 then
  return nil
end
local message, score = item[1], item[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local deadline = now + tonumber(ARGV[1])
local ok, decoded = pcall(cjson.decode, message)
local job_id = ''
if ok and type(decoded) == 'table' and type(decoded['id']) == 'string' then
  job_id = decoded['id']
end
local counter = job_id
if counter == '' then
  counter = '#' .. redis.sha1hex(message)
end
local attempt = redis.call('HINCRBY', KEYS[5], counter, 1)
redis.call('HSET', KEYS[2], ARGV[3], message)
redis.call('ZADD', KEYS[3], deadline, ARGV[3])
redis.call('HSET', KEYS[4], ARGV[3],
  cjson.encode({job_id = job_id, counter = counter, worker = ARGV[2], score = score, claimed = now}))
return {message, attempt, tostring(deadline), score}
