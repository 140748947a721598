-- wrk script: POST corpus bodies to /compress and print one machine-readable result line.
--
-- WRK_BODY=path         one body, sent by every request (wrk's static request: no lua per request)
-- WRK_BODIES=p1:p2:...  several bodies, sent round-robin, one per request (per wrk thread)
--
-- done() prints: JSON {"requests":..,"duration_us":..,"non2xx":..,"errors":..,
--                      "p50_us":..,"p90_us":..,"p99_us":..,"bytes":..}
-- non2xx is wrk's summary.errors.status (responses with status >= 400); errors adds up socket
-- errors (connect, read, write, timeout); bytes is what wrk read (responses, headers included).

local function slurp(path)
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  return data
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"

local many = os.getenv("WRK_BODIES")
if many and many ~= "" then
  local requests = {}
  local next_index = 0
  -- Format every request once per thread, in init(): wrk sets the Host header only just before
  -- calling it, and request() then only hands back a prepared string.
  function init(args)
    for path in string.gmatch(many, "[^:]+") do
      requests[#requests + 1] = wrk.format(nil, nil, nil, slurp(path))
    end
  end
  function request()
    next_index = next_index % #requests + 1
    return requests[next_index]
  end
else
  wrk.body = slurp(assert(os.getenv("WRK_BODY"), "set WRK_BODY or WRK_BODIES"))
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"bytes":%d}\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(90)),
    math.floor(latency:percentile(99)), summary.bytes))
end
