-- wrk script for bench/gateway.py: POST a JSON body, count non-200 answers, optionally collect the
-- pipeline's "overhead_ms", and write one JSON report to $WRK_OUT when the run is done.
-- Environment: WRK_BODY (request body), WRK_AUTH (bearer key, optional), WRK_OVERHEAD=1 (parse bodies).
-- Each wrk thread has its own Lua state: per-thread globals are gathered in done() with thread:get().

wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("WRK_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. auth
end
local parse_overhead = os.getenv("WRK_OVERHEAD") == "1"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non200 = 0
  first_error = ""
  overheads = {}
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    if first_error == "" then
      first_error = status .. " " .. string.sub(body or "", 1, 300)
    end
    return
  end
  if parse_overhead then
    local value = string.match(body, '"overhead_ms":%s*([%d%.eE%+%-]+)')
    if value then
      overheads[#overheads + 1] = tonumber(value)
    end
  end
end

local function quote(text)
  return '"' .. string.gsub(text, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end) .. '"'
end

function done(summary, latency, requests)
  local non200_total, errors, values = 0, "", {}
  for _, thread in ipairs(threads) do
    non200_total = non200_total + (thread:get("non200") or 0)
    local first = thread:get("first_error")
    if errors == "" and first and first ~= "" then
      errors = first
    end
    local list = thread:get("overheads")
    if list then
      for _, v in ipairs(list) do
        values[#values + 1] = string.format("%.3f", v)
      end
    end
  end
  local e = summary.errors
  local out = io.open(os.getenv("WRK_OUT"), "w")
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, "non200": %d}, ' ..
    '"first_error": %s, "latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "mean": %.1f, "max": %d}, ' ..
    '"overhead_ms": [%s]}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout, non200_total, quote(errors),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.mean, latency.max, table.concat(values, ",")))
  out:close()
end
