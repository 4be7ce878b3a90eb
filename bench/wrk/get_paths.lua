-- GET a list of paths in turn, for `wrk -s bench/wrk/get_paths.lua URL -- KEY PATH [PATH ...]`.
local index = 0

function init(args)
  api_key = args[1]
  paths = {}
  for i = 2, #args do paths[#paths + 1] = args[i] end
  headers = {["Authorization"] = "Bearer " .. api_key}
end

function request()
  index = index % #paths + 1
  return wrk.format("GET", paths[index], headers, nil)
end

done = function(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
