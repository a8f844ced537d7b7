-- Settle one request's limits, atomically.
--
-- ARGV[1]: the request id its leases and reservations are held under.
-- Then one group per item: a type letter and its numbers. The keys of the
-- items follow the same order, with the layouts of admit.lua:
--   'b' capacity, refill per second, amount   KEYS: the bucket hash
--   'c'                                       KEYS: the lease sorted set
--   'q' used, expire-at (Unix s)              KEYS: the counter hash, the
--                                             reservation sorted set
-- 'b' gives back the amount (negative takes more and may leave the bucket
-- below zero, down to minus its capacity). 'c' releases the lease. 'q'
-- drops the request's reservation, if it has not expired, and adds what
-- the request used.
--
-- The ledger record is not appended here: RedisBackend sends the XADD in
-- the same MULTI, because the stream lives in a slot of its own on Redis
-- Cluster. The arithmetic repeats refill and refund in
-- llmgw/limits/buckets.py.

local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local request_id = ARGV[1]

local arg = 2
local key = 1
while arg <= #ARGV do
  local kind = ARGV[arg]
  if kind == 'b' then
    local capacity = tonumber(ARGV[arg + 1])
    local rate = tonumber(ARGV[arg + 2])
    local amount = tonumber(ARGV[arg + 3])
    if amount ~= 0 then
      local tokens = capacity
      local state = redis.call('HMGET', KEYS[key], 'tokens', 'ts')
      if state[1] and state[2] then
        local elapsed = math.max(0, now - tonumber(state[2]))
        tokens = math.min(capacity, tonumber(state[1]) + elapsed * rate)
      end
      -- The debt stops at one capacity, as in buckets.refund.
      tokens = math.max(-capacity, math.min(capacity, tokens + amount))
      redis.call('HSET', KEYS[key],
        'tokens', string.format('%.17g', tokens),
        'ts', string.format('%.17g', now))
      -- Same expiry rule as admit.lua: gone only once it would be full.
      local full_after_ms = math.ceil((capacity - tokens) / rate * 1000)
      redis.call('PEXPIRE', KEYS[key], full_after_ms + 1000)
    end
    arg = arg + 4
    key = key + 1
  elseif kind == 'c' then
    redis.call('ZREM', KEYS[key], request_id)
    arg = arg + 1
    key = key + 1
  elseif kind == 'q' then
    local counter, reservations = KEYS[key], KEYS[key + 1]
    local used = tonumber(ARGV[arg + 1])
    local expire_at = ARGV[arg + 2]
    if redis.call('ZREM', reservations, request_id) == 1 then
      local reserved = tonumber(redis.call('HGET', counter, request_id) or '0')
      redis.call('HDEL', counter, request_id)
      redis.call('HINCRBY', counter, 'reserved', -reserved)
    end
    if used ~= 0 then
      redis.call('HINCRBY', counter, 'used', used)
      -- The request may settle after its period ended and the counter
      -- expired: the counter is created again and expires at the same time.
      redis.call('EXPIREAT', counter, expire_at)
    end
    arg = arg + 3
    key = key + 2
  else
    return redis.error_reply('settle.lua: unknown item type ' .. tostring(kind))
  end
end

return 1
