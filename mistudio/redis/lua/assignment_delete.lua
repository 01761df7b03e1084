-- Remove a job's assignment at the end of the job, only if it is ours (compare-and-delete).
--
-- KEYS[1]  the job's assignment hash  (keys.job_assignment)
-- KEYS[2]  our worker's job set       (keys.worker_jobs)
-- ARGV[1]  job id
-- ARGV[2]  our worker id
-- ARGV[3]  our holder token (the one assignment_set wrote)
--
-- Another delivery's assignment (a newer attempt, perhaps on this same worker) is kept,
-- and so is our worker set's entry when that delivery runs on this worker.
-- Returns 1 if our assignment was removed, 0 if it was not there.
local holder, worker = unpack(redis.call('HMGET', KEYS[1], 'holder', 'worker_id'))
if holder == ARGV[3] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[1])
  return 1
end
if worker ~= ARGV[2] then
  redis.call('SREM', KEYS[2], ARGV[1])
end
return 0
