-- Give an admitted request back: remove its entry from every window it was counted in.
--
-- KEYS[i]   window i: sorted set of admitted requests (keys.ratelimit_window)
-- ARGV[1]   the request's member (the unique id ratelimit_hit was given)
--
-- A script rather than MULTI: at maxmemory Redis refuses to queue any command inside MULTI,
-- but runs a script whose calls only free memory (ZREM). Returns how many entries it removed.
local removed = 0
for i = 1, #KEYS do
  removed = removed + redis.call('ZREM', KEYS[i], ARGV[1])
end
return removed
