-- wrk script: POST corpus bodies and print one machine-readable result line.
--
-- WRK_BODY=path         one body, sent by every request (wrk's static request: no lua per request)
-- WRK_BODIES=p1:p2:...  several bodies, sent round-robin, one per request (per wrk thread)
-- WRK_REQUESTS="<url path> <body path>" lines: several bodies round-robin, each to its own URL
--                       path (/compress?level=3, /decompress); the others go to the URL's path
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

-- The round-robin bodies as {path = URL path or nil for the URL's, file = body path}.
local function sources()
  local found = {}
  for file in string.gmatch(os.getenv("WRK_BODIES") or "", "[^:]+") do
    found[#found + 1] = {file = file}
  end
  for path, file in string.gmatch(os.getenv("WRK_REQUESTS") or "", "(%S+) ([^\n]+)") do
    found[#found + 1] = {path = path, file = file}
  end
  return found
end

local many = sources()
if #many > 0 then
  local requests = {}
  local next_index = 0
  -- Format every request once per thread, in init(): wrk sets the Host header only just before
  -- calling it, and request() then only hands back a prepared string.
  function init(args)
    for _, source in ipairs(many) do
      requests[#requests + 1] = wrk.format(nil, source.path, nil, slurp(source.file))
    end
  end
  function request()
    next_index = next_index % #requests + 1
    return requests[next_index]
  end
else
  wrk.body = slurp(assert(os.getenv("WRK_BODY"), "set WRK_BODY, WRK_BODIES or WRK_REQUESTS"))
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
