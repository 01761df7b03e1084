-- Record which worker runs a job, or the job's new status (the seed's job assignment).
--
-- KEYS[1]  the job's assignment hash  (keys.job_assignment)
-- KEYS[2]  the worker's job set       (keys.worker_jobs)
-- ARGV[1]  job id
-- ARGV[2]  worker id
-- ARGV[3]  device id
-- ARGV[4]  status ("waiting for ...", "running")
-- ARGV[5]  holder token (unique per delivery of the job: coord.jobguard)
-- ARGV[6]  assigned_at (seconds since the epoch)
-- ARGV[7]  TTL in seconds
--
-- The first holder keeps the assignment until it removes it (assignment_delete) or its
-- worker is forgotten (heartbeat lapsed): another delivery of the same job, a stale one
-- or a newer one, is refused and tries again later, so neither can overwrite the other.
-- Returns 1 if written, 0 if another holder has the assignment.
local holder = redis.call('HGET', KEYS[1], 'holder')
if holder and holder ~= ARGV[5] then
  return 0
end
redis.call('HSET', KEYS[1], 'job_id', ARGV[1], 'worker_id', ARGV[2], 'device', ARGV[3], 'status', ARGV[4],
  'holder', ARGV[5], 'assigned_at', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return 1
