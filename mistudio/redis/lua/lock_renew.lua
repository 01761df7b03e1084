-- Extend an exclusive lease only if we still hold it (compare-and-extend; coord/lease.py).
--
-- KEYS[1]  the lock               (keys.gpu_lock / keys.cluster_leader)
-- ARGV[1]  the value we set       ("{n}|{owner}", from lock_acquire)
-- ARGV[2]  lease length in milliseconds
--
-- A plain EXPIRE after a GET (the seed's leader renewal) can extend a lock that
-- expired and was taken by someone else in between. Returns 1 if extended, 0 if lost.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return 0
