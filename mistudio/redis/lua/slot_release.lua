-- Give up a concurrency slot (compare-and-delete: only the holder's own token goes).
--
-- KEYS[1]  sorted set holder token -> lease expiry (keys.concurrency_slots)
-- ARGV[1]  holder token
--
-- Returns 1 if the token held a slot whose lease had not run out (Redis TIME), else 0.
-- Either way the token is gone afterwards; another holder's never is.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) > now then
  return 1
end
return 0
