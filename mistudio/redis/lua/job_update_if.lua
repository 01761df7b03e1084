-- Update a job record only if its state is one of the allowed ones (compare-and-set),
-- and, when it is running, only if it runs under the given lease: a late reaper or a
-- stale worker never overwrites what a newer delivery wrote.
--
-- KEYS[1]  job record hash         (keys.job)
-- ARGV[1]  allowed current states, comma-separated ("" = any state)
-- ARGV[2]  seconds until the record expires (0 = keep it until it ends)
-- ARGV[3]  lease id a running record must carry ("" = any)
-- ARGV[4], ARGV[5], ...  field, value pairs to set
--
-- Returns 1 if the record was updated, 0 if it does not exist or the condition failed.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return 0
end
if ARGV[1] ~= '' then
  local allowed = false
  for s in string.gmatch(ARGV[1], '[^,]+') do
    if s == state then
      allowed = true
    end
  end
  if not allowed then
    return 0
  end
end
if ARGV[3] ~= '' and state == 'running' and redis.call('HGET', KEYS[1], 'lease') ~= ARGV[3] then
  return 0
end
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
else
  redis.call('PERSIST', KEYS[1])
end
return 1
