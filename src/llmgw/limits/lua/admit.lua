-- Take every charge or none, atomically.
--
-- KEYS[i]: the hash of bucket i, with fields "tokens" and "ts".
-- ARGV, three per bucket: capacity, refill per second, amount.
-- Returns {admitted (1 or 0), tokens_1, ..., tokens_n}: each bucket's tokens
-- after refill and before the charge, as strings, because Redis truncates a
-- Lua number reply to an integer.
--
-- The arithmetic repeats refill and is_admitted in llmgw/limits/buckets.py.

local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000

local function refill(key, capacity, rate)
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  if not state[1] or not state[2] then
    return capacity
  end
  local elapsed = math.max(0, now - tonumber(state[2]))
  return math.min(capacity, tonumber(state[1]) + elapsed * rate)
end

local capacities, rates, amounts, levels = {}, {}, {}, {}
local admitted = 1
for i = 1, #KEYS do
  local base = (i - 1) * 3
  capacities[i] = tonumber(ARGV[base + 1])
  rates[i] = tonumber(ARGV[base + 2])
  amounts[i] = tonumber(ARGV[base + 3])
  levels[i] = refill(KEYS[i], capacities[i], rates[i])
  if levels[i] < amounts[i] then
    admitted = 0
  end
end

if admitted == 1 then
  for i = 1, #KEYS do
    if amounts[i] ~= 0 then
      local tokens = levels[i] - amounts[i]
      redis.call('HSET', KEYS[i],
        'tokens', string.format('%.17g', tokens),
        'ts', string.format('%.17g', now))
      -- The key expires once the bucket would be full again, because a
      -- missing bucket starts full: expiry never changes the outcome.
      local full_after_ms = math.ceil((capacities[i] - tokens) / rates[i] * 1000)
      redis.call('PEXPIRE', KEYS[i], full_after_ms + 1000)
    end
  end
end

local reply = {admitted}
for i = 1, #KEYS do
  reply[i + 1] = string.format('%.17g', levels[i])
end
return reply
