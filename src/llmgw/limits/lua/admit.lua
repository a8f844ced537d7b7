-- Take every item or none, atomically.
--
-- ARGV[1]: the request id that leases and reservations are held under.
-- ARGV[2]: the lease time in milliseconds.
-- Then one group per item: a type letter and its numbers. The keys of the
-- items follow the same order:
--   'b' capacity, refill per second, amount   KEYS: the bucket hash
--   'c' limit                                 KEYS: the lease sorted set
--   'q' limit, amount, expire-at (Unix s)     KEYS: the counter hash, the
--                                             reservation sorted set
-- A bucket hash has fields "tokens" and "ts". A lease sorted set scores
-- request ids by lease deadline (ms). A counter hash has fields "used",
-- "reserved" (the sum of live reservations) and one field per request id
-- with its reserved amount, whose deadline the reservation sorted set holds.
--
-- Returns {admitted (1 or 0), now, level_1, ..., level_n} as strings,
-- because Redis truncates a Lua number reply to an integer. A level is a
-- bucket's tokens after refill, the live leases, or used plus reserved,
-- each before this request.
--
-- The arithmetic repeats refill and fits in llmgw/limits/buckets.py.

local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local request_id = ARGV[1]
local deadline = now_ms + tonumber(ARGV[2])

local function refill(key, capacity, rate)
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  if not state[1] or not state[2] then
    return capacity
  end
  local elapsed = math.max(0, now - tonumber(state[2]))
  return math.min(capacity, tonumber(state[1]) + elapsed * rate)
end

-- Drop reservations whose deadline passed (a worker died before settling),
-- in batches so that unpack stays within Lua's stack limit.
local function drop_expired(counter, reservations)
  while true do
    local expired = redis.call('ZRANGEBYSCORE', reservations, '-inf', now_ms,
      'LIMIT', 0, 500)
    if #expired == 0 then
      return
    end
    local amounts = redis.call('HMGET', counter, unpack(expired))
    local total = 0
    for i = 1, #amounts do
      if amounts[i] then
        total = total + tonumber(amounts[i])
      end
    end
    redis.call('HDEL', counter, unpack(expired))
    redis.call('HINCRBY', counter, 'reserved', -total)
    redis.call('ZREM', reservations, unpack(expired))
  end
end

local function expire_later(key, ttl_ms)
  -- Only ever extend: a shorter lease must not drop a longer one's key.
  -- PTTL is -1 for a key without expiry, such as one ZADD just created.
  if redis.call('PTTL', key) < ttl_ms then
    redis.call('PEXPIRE', key, ttl_ms)
  end
end

local items = {}
local admitted = 1
local arg = 3
local key = 1
while arg <= #ARGV do
  local kind = ARGV[arg]
  local item = {kind = kind}
  if kind == 'b' then
    item.key = KEYS[key]
    item.capacity = tonumber(ARGV[arg + 1])
    item.rate = tonumber(ARGV[arg + 2])
    item.amount = tonumber(ARGV[arg + 3])
    item.level = refill(item.key, item.capacity, item.rate)
    if item.level < item.amount then
      admitted = 0
    end
    arg = arg + 4
    key = key + 1
  elseif kind == 'c' then
    item.key = KEYS[key]
    item.limit = tonumber(ARGV[arg + 1])
    redis.call('ZREMRANGEBYSCORE', item.key, '-inf', now_ms)
    item.level = redis.call('ZCARD', item.key)
    if item.limit - item.level < 1 then
      admitted = 0
    end
    arg = arg + 2
    key = key + 1
  elseif kind == 'q' then
    item.key = KEYS[key]
    item.reservations = KEYS[key + 1]
    item.limit = tonumber(ARGV[arg + 1])
    item.amount = tonumber(ARGV[arg + 2])
    item.expire_at = ARGV[arg + 3]
    drop_expired(item.key, item.reservations)
    local state = redis.call('HMGET', item.key, 'used', 'reserved')
    item.level = (tonumber(state[1]) or 0) + (tonumber(state[2]) or 0)
    if item.limit - item.level < item.amount then
      admitted = 0
    end
    arg = arg + 4
    key = key + 2
  else
    return redis.error_reply('admit.lua: unknown item type ' .. tostring(kind))
  end
  items[#items + 1] = item
end

if admitted == 1 then
  for _, item in ipairs(items) do
    if item.kind == 'b' and item.amount ~= 0 then
      local tokens = item.level - item.amount
      redis.call('HSET', item.key,
        'tokens', string.format('%.17g', tokens),
        'ts', string.format('%.17g', now))
      -- The key expires once the bucket would be full again, because a
      -- missing bucket starts full: expiry never changes the outcome.
      local full_after_ms = math.ceil((item.capacity - tokens) / item.rate * 1000)
      redis.call('PEXPIRE', item.key, full_after_ms + 1000)
    elseif item.kind == 'c' then
      redis.call('ZADD', item.key, string.format('%.17g', deadline), request_id)
      expire_later(item.key, deadline - now_ms + 1000)
    elseif item.kind == 'q' and item.amount ~= 0 then
      redis.call('HINCRBY', item.key, 'reserved', item.amount)
      redis.call('HSET', item.key, request_id, item.amount)
      redis.call('ZADD', item.reservations, string.format('%.17g', deadline),
        request_id)
      redis.call('EXPIREAT', item.key, item.expire_at)
      redis.call('EXPIREAT', item.reservations, item.expire_at)
    end
  end
end

local reply = {admitted, string.format('%.17g', now)}
for i, item in ipairs(items) do
  reply[i + 2] = string.format('%.17g', item.level)
end
return reply
