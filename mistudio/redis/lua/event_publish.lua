-- Publish one event: number it, keep it in the channel's capped history, keep it as
-- the latest snapshot, and PUBLISH it, in one step so that seq order = delivery order.
--
-- KEYS[1]  sequence counter        (keys.event_seq)
-- KEYS[2]  history stream          (keys.event_history)   entries id "0-{seq}", field m
-- KEYS[3]  latest snapshot         (keys.event_latest)
-- ARGV[1]  channel
-- ARGV[2]  event type, JSON-encoded string
-- ARGV[3]  data, JSON
-- ARGV[4]  timestamp, JSON number
-- ARGV[5]  history length to keep (approximate, MAXLEN ~)
-- ARGV[6]  seconds the history, snapshot and counter live after the last event
--
-- The data JSON is spliced in as is (not re-encoded: Lua's cjson would round floats).
-- Stream ids are "0-{seq}", so "everything after seq N" is XRANGE (0-N +.
-- Returns the message as published.
local seq = redis.call('INCR', KEYS[1])
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last > 0 then
  local last_seq = tonumber(string.match(last[1][1], '%-(%d+)$'))
  if last_seq >= seq then
    seq = last_seq + 1
    redis.call('SET', KEYS[1], seq)
  end
end
local message = '{"type":' .. ARGV[2] .. ',"data":' .. ARGV[3] .. ',"timestamp":' .. ARGV[4] .. ',"seq":' .. seq .. '}'
redis.call('XADD', KEYS[2], 'MAXLEN', '~', tonumber(ARGV[5]), '0-' .. seq, 'm', message)
redis.call('SET', KEYS[3], message)
local ttl = tonumber(ARGV[6])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('PUBLISH', ARGV[1], message)
return message
