-- Move a job to a final state and store its result, atomically: whoever sees the
-- final state also finds the result (and a job already final is left alone). A running
-- job is finished only by its current delivery (its lease id), so a stale attempt's
-- outcome never replaces the newer one's.
--
-- KEYS[1]  job record hash         (keys.job)
-- KEYS[2]  result                  (keys.job_result)
-- KEYS[3]  cancel flag             (keys.job_cancel)
-- ARGV[1]  allowed current states, comma-separated
-- ARGV[2]  final state
-- ARGV[3]  result JSON
-- ARGV[4]  seconds the record and result live on (24 h)
-- ARGV[5]  finished_at
-- ARGV[6]  error summary ("" for none)
-- ARGV[7]  channel to publish the job id on (wakes waiters)
-- ARGV[8]  job id
-- ARGV[9]  lease id a running record must carry ("" = any)
--
-- Returns 1 if the job was moved to the final state, 0 otherwise.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return 0
end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do
  if s == state then
    allowed = true
  end
end
if not allowed then
  return 0
end
if ARGV[9] ~= '' and state == 'running' and redis.call('HGET', KEYS[1], 'lease') ~= ARGV[9] then
  return 0
end
local ttl = tonumber(ARGV[4])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ttl)
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'finished_at', ARGV[5], 'updated_at', ARGV[5], 'error', ARGV[6], 'lease', '')
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('DEL', KEYS[3])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return 1
