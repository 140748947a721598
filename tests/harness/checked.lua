-- The bench's script (bench/post.lua, which POSTs the body in WRK_BODY) with every response checked,
-- for the tests that drive a server with wrk:
--   a 200 must be a zstd frame (magic 28 B5 2F FD) of the body sent (X-Uncompressed-Length its size);
--   a 503 must carry Retry-After, the only error a client may get (from the service or from the load
--   balancer in front of it). Header names are compared lower-cased: HAProxy lower-cases them.
-- done() prints the bench's JSON line, then:
--   CHECKED {"connect":..,"read":..,"write":..,"timeout":..,"ok":..,"unavailable":..,"bad":..}

dofile(assert(os.getenv("WRK_BENCH_SCRIPT"), "set WRK_BENCH_SCRIPT to bench/post.lua"))

local bench_init, bench_done = init, done
local length = tostring(#wrk.body)
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  if bench_init then bench_init(args) end
  ok = 0; unavailable = 0; bad = 0
end

function response(status, headers, body)
  local h = {}
  for name, value in pairs(headers) do h[string.lower(name)] = value end
  if status == 200 and string.sub(body, 1, 4) == "\40\181\47\253" and h["x-uncompressed-length"] == length then
    ok = ok + 1
  elseif status == 503 and h["retry-after"] ~= nil then
    unavailable = unavailable + 1
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  bench_done(summary, latency, requests)
  local n = {ok = 0, unavailable = 0, bad = 0}
  for _, t in ipairs(threads) do
    for k in pairs(n) do n[k] = n[k] + t:get(k) end
  end
  local e = summary.errors
  io.write(string.format(
    'CHECKED {"connect":%d,"read":%d,"write":%d,"timeout":%d,"ok":%d,"unavailable":%d,"bad":%d}\n',
    e.connect, e.read, e.write, e.timeout, n.ok, n.unavailable, n.bad))
end
