-- POST one body again and again, for `wrk -s bench/wrk/post_charge.lua URL -- KEY BODY KEYMODE NONCE`.
-- KEYMODE: "unique" sends a fresh Idempotency-Key on every request (NONCE-thread-counter),
-- "none" sends none, anything else is sent as the one Idempotency-Key of every request (a replay).
local counter = 0

local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
end

function init(args)
  api_key, body, keymode, nonce = args[1], args[2], args[3] or "unique", args[4] or "n"
  headers = {["Authorization"] = "Bearer " .. api_key, ["Content-Type"] = "application/json"}
end

function request()
  counter = counter + 1
  if keymode == "unique" then
    -- Letters between the numbers: a run of 13+ digits (dashes ignored) could read as a card number.
    headers["Idempotency-Key"] = nonce .. "t" .. tostring(thread_id) .. "n" .. counter
  elseif keymode ~= "none" then
    headers["Idempotency-Key"] = keymode
  end
  return wrk.format("POST", nil, headers, body)
end

done = function(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
