-- Give back unused reservations and append the usage record, atomically.
--
-- KEYS[1..n]: the hashes of the refunded buckets; KEYS[n + 1]: the ledger
-- stream.
-- ARGV[1]: n. Then three per bucket: capacity, refill per second, amount
-- (negative takes more and may leave the bucket below zero, down to minus
-- its capacity). Then the record
-- as field, value pairs for XADD.
-- Returns the stream entry id.
--
-- The arithmetic repeats refill and refund in llmgw/limits/buckets.py.

local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local n = tonumber(ARGV[1])

for i = 1, n do
  local base = 1 + (i - 1) * 3
  local capacity = tonumber(ARGV[base + 1])
  local rate = tonumber(ARGV[base + 2])
  local amount = tonumber(ARGV[base + 3])
  if amount ~= 0 then
    local tokens = capacity
    local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
    if state[1] and state[2] then
      local elapsed = math.max(0, now - tonumber(state[2]))
      tokens = math.min(capacity, tonumber(state[1]) + elapsed * rate)
    end
    -- The debt stops at one capacity, as in buckets.refund.
    tokens = math.max(-capacity, math.min(capacity, tokens + amount))
    redis.call('HSET', KEYS[i],
      'tokens', string.format('%.17g', tokens),
      'ts', string.format('%.17g', now))
    -- Same expiry rule as admit.lua: gone only once it would be full.
    local full_after_ms = math.ceil((capacity - tokens) / rate * 1000)
    redis.call('PEXPIRE', KEYS[i], full_after_ms + 1000)
  end
end

-- No MAXLEN: trimming could drop records that no drainer has acknowledged.
-- Acknowledged entries are deleted by the drainer instead.
return redis.call('XADD', KEYS[n + 1], '*', unpack(ARGV, 2 + n * 3))
