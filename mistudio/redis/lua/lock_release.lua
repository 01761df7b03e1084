-- Release an exclusive lease only if we still hold it (compare-and-delete; coord/lease.py).
--
-- KEYS[1]  the lock               (keys.gpu_lock / keys.cluster_leader)
-- ARGV[1]  the value we set       ("{n}|{owner}", from lock_acquire)
--
-- Returns 1 if released, 0 if it had expired (and perhaps been taken by another).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
