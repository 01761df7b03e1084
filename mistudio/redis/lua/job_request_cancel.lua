-- Ask a running job to stop: set the flag its worker polls, only while it runs (so a
-- job that ended meanwhile is reported as ended, not as "cancel requested").
--
-- KEYS[1]  job record hash         (keys.job)
-- KEYS[2]  cancel flag             (keys.job_cancel)
-- ARGV[1]  seconds the flag lives (the result TTL)
--
-- Returns 1 if the flag was set, 0 if the job is not running.
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
return 1
