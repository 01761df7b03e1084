-- A worker starts a job: mark it running if it is still queued (or running under a
-- lease that was lost), in the same round trip that reads the record.
--
-- KEYS[1]  job record hash         (keys.job)
-- ARGV[1]  worker id
-- ARGV[2]  lease id
-- ARGV[3]  attempt
-- ARGV[4]  started_at
-- ARGV[5]  the lease's deadline (Redis TIME seconds)
--
-- A start past its lease's deadline is refused: that delivery may already have been
-- reaped and handed to another worker, whose start must not be overwritten. So the
-- record always names the newest delivery (a delivery is claimed only after the one
-- before it was acknowledged, released or reaped, i.e. after its deadline).
-- Returns {1, field, value, ...} (the updated record) when the job may run,
-- {0, state} when it is already final (cancelled while queued, duplicate delivery),
-- {-1} when there is no record, {-2} when the lease has expired (do not run, do not ack).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return {-1}
end
if state ~= 'queued' and state ~= 'running' then
  return {0, state}
end
local t = redis.call('TIME')
if tonumber(t[1]) + tonumber(t[2]) / 1000000 >= tonumber(ARGV[5]) then
  return {-2}
end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[1], 'lease', ARGV[2], 'attempts', ARGV[3],
  'started_at', ARGV[4], 'updated_at', ARGV[4], 'note', '')
local out = redis.call('HGETALL', KEYS[1])
table.insert(out, 1, 1)
return out
