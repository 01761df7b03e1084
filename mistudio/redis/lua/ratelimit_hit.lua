-- Sliding-window rate limit over one or more windows, all or nothing.
--
-- KEYS[i]      window i: sorted set of admitted requests, member -> Redis TIME (keys.ratelimit_window)
-- ARGV[1]      member for this request (unique per request: equal timestamps never merge)
-- ARGV[2i]     limit of window i
-- ARGV[2i+1]   length of window i in seconds
--
-- Trims every window, counts, and only if every window has room adds the request to
-- all of them: a rejected request is counted nowhere. Time is Redis TIME (one clock
-- for every device). Returns {allowed 1|0, now, then per window: count, oldest,
-- frees_at}: frees_at is the entry whose expiry frees the next slot. Times are strings
-- (Lua numbers would be truncated to integers on the way out).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local counts = {}
local allowed = 1
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - tonumber(ARGV[2 * i + 1]))
  counts[i] = redis.call('ZCARD', KEYS[i])
  if counts[i] >= tonumber(ARGV[2 * i]) then
    allowed = 0
  end
end
local out = {allowed, tostring(now)}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  if allowed == 1 then
    redis.call('ZADD', KEYS[i], now, ARGV[1])
    redis.call('PEXPIRE', KEYS[i], math.ceil(window * 1000) + 1000)
    counts[i] = counts[i] + 1
  end
  local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  local frees = oldest
  if counts[i] > limit then
    frees = redis.call('ZRANGE', KEYS[i], counts[i] - limit, counts[i] - limit, 'WITHSCORES')
  end
  out[#out + 1] = counts[i]
  out[#out + 1] = oldest[2] or ''
  out[#out + 1] = frees[2] or ''
end
return out
