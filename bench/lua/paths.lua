-- wrk script of the benchmark (bench/wrk.py): GET requests whose paths are
-- read from a file, one per line, cycled from a per-thread offset.
-- Arguments after "--": <paths file> <request budget per thread>.
-- Every response is counted; a status other than 200 is an error; a thread
-- stops by itself when its budget is spent (wrk's -d bounds the time).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("index", #threads)
end

local paths = {}
local position = 1
local budget = 0
local done_requests = 0
bad = 0
sample = ""

function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  budget = tonumber(args[2])
  position = ((wrk.thread:get("index") or 1) * 7919) % #paths + 1
end

function request()
  local path = paths[position]
  position = position % #paths + 1
  return wrk.format("GET", path)
end

function response(status, headers, body)
  done_requests = done_requests + 1
  if status ~= 200 then
    bad = bad + 1
    if sample == "" then
      sample = tostring(status) .. ": " .. string.sub(body or "", 1, 200)
    end
  end
  if done_requests >= budget then
    wrk.thread:stop()
  end
end

local function escape(s)
  return (string.gsub(s, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end))
end

function done(summary, latency, requests)
  local status_errors, samples = 0, {}
  for _, thread in ipairs(threads) do
    status_errors = status_errors + (thread:get("bad") or 0)
    local s = thread:get("sample")
    if s and s ~= "" then
      samples[#samples + 1] = '"' .. escape(s) .. '"'
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"bad_status":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"mean_us":%.1f,"samples":[%s]}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, status_errors,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, table.concat(samples, ",")))
end
