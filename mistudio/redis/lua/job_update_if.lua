-- Update a job record only if its state is one of the allowed ones (compare-and-set),
-- so that a late reaper never turns a finished job back into a queued one.
--
-- KEYS[1]  job record hash         (keys.job)
-- ARGV[1]  allowed current states, comma-separated ("" = any state)
-- ARGV[2]  seconds until the record expires (0 = keep it until it ends)
-- ARGV[3], ARGV[4], ...  field, value pairs to set
--
-- Returns 1 if the record was updated, 0 if it does not exist or its state was not allowed.
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
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
else
  redis.call('PERSIST', KEYS[1])
end
return 1
