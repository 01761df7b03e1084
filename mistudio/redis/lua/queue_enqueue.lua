-- Enqueue one message: higher priority first, FIFO within a priority.
--
-- KEYS[1]  pending sorted set      (keys.queue_pending)
-- KEYS[2]  sequence counter        (keys.queue_seq)
-- KEYS[3]  wake-up list            (keys.queue_notify)
-- ARGV[1]  message (JSON)
-- ARGV[2]  priority (integer, 0..255)
--
-- The score is -priority * 2^32 + seq: ZPOPMIN then takes the highest priority,
-- and the oldest message within it. The member is the message itself, so the raw
-- value in Redis is plain JSON. Returns the score.
local seq = redis.call('INCR', KEYS[2])
local score = -tonumber(ARGV[2]) * 4294967296 + seq
redis.call('ZADD', KEYS[1], score, ARGV[1])
redis.call('LPUSH', KEYS[3], '1')
redis.call('LTRIM', KEYS[3], 0, 63)
return tostring(score)
