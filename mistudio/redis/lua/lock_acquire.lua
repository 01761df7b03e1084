-- Acquire an exclusive lease and number its holder (GPU locks, leader election; coord/lease.py).
--
-- KEYS[1]  the lock, value "{n}|{owner}"      (keys.gpu_lock / keys.cluster_leader)
-- KEYS[2]  its counter, never expires          (keys.gpu_fence / keys.cluster_term)
-- ARGV[1]  owner (unique per holder)
-- ARGV[2]  lease length in milliseconds
--
-- SET NX and the counter in one step: every new holder gets the next number (a GPU
-- lock's fencing token, a leader's term), so no two holders ever share a number.
-- Returns {1, value} when acquired, {0, current value, its PTTL} when held.
local current = redis.call('GET', KEYS[1])
if current then
  return {0, current, redis.call('PTTL', KEYS[1])}
end
local n = redis.call('INCR', KEYS[2])
local value = n .. '|' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', tonumber(ARGV[2]))
return {1, value}
