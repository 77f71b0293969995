-- wrk script: POST the file in $WRK_BODY with $WRK_CONTENT_TYPE (and one more header, if named);
-- print one JSON line at the end.
local handle = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = handle:read("*all")
handle:close()
wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE")
if os.getenv("WRK_ACCEPT") then
  wrk.headers["Accept"] = os.getenv("WRK_ACCEPT")
end
if os.getenv("WRK_HEADER_NAME") then
  wrk.headers[os.getenv("WRK_HEADER_NAME")] = os.getenv("WRK_HEADER_VALUE")
end

local statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "non_2xx": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"timeout": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
