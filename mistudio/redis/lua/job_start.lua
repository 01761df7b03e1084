-- A worker starts a job: mark it running if it is still queued (or running under a
-- lease that was lost), in the same round trip that reads the record.
--
-- KEYS[1]  job record hash         (keys.job)
-- ARGV[1]  worker id
-- ARGV[2]  lease id
-- ARGV[3]  attempt
-- ARGV[4]  started_at
--
-- Returns {1, field, value, ...} (the updated record) when the job may run,
-- {0, state} when it is already final (cancelled while queued, duplicate delivery),
-- {-1} when there is no record.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return {-1}
end
if state ~= 'queued' and state ~= 'running' then
  return {0, state}
end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[1], 'lease', ARGV[2], 'attempts', ARGV[3],
  'started_at', ARGV[4], 'updated_at', ARGV[4], 'note', '')
local out = redis.call('HGETALL', KEYS[1])
table.insert(out, 1, 1)
return out
