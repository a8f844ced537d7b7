-- wrk script: POST one chat completion body and check every response.
--
--   wrk ... -s wrk_chat.lua URL -- BODY_FILE EXPECTED "Name: value" ...
--
-- Each thread sends the body in BODY_FILE with the given headers. A
-- response counts as bad when its status is not 200 and as incomplete when
-- its body lacks the string EXPECTED. done() prints one line that starts
-- with "wrk-result " and carries a JSON object: requests sent (written),
-- completed, bad and incomplete, and wrk's own error counts and latency.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  expected = args[2]
  local headers = { ["Content-Type"] = "application/json" }
  for index = 3, #args do
    local name, value = string.match(args[index], "^([^:]+):%s*(.*)$")
    headers[name] = value
  end
  prepared = wrk.format("POST", nil, headers, body)
  sent = 0
  bad_status = 0
  incomplete = 0
end

function request()
  sent = sent + 1
  return prepared
end

function response(status, headers, body)
  if status ~= 200 then
    bad_status = bad_status + 1
  elseif not string.find(body, expected, 1, true) then
    incomplete = incomplete + 1
  end
end

function done(summary, latency, requests)
  local totals = { sent = 0, bad_status = 0, incomplete = 0 }
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do
      totals[name] = totals[name] + thread:get(name)
    end
  end
  local errors = summary.errors
  io.write(string.format(
    'wrk-result {"sent":%d,"completed":%d,"bad_status":%d,"incomplete":%d,'
      .. '"duration_us":%d,"connect_errors":%d,"read_errors":%d,'
      .. '"write_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d}\n',
    totals.sent, summary.requests, totals.bad_status, totals.incomplete,
    summary.duration, errors.connect, errors.read, errors.write,
    errors.timeout, latency:percentile(50.0), latency:percentile(99.0)))
end
