-- wrk script for the write-side HTTP benchmark: POST /api/v1/commands with unique ids.
-- Run with one connection per thread (-t N -c N): each thread sends, in order, per customer:
-- RegisterCustomer, CreateOrder (two lines), UpdateOrderStatus -> Paid. Every command carries
-- commandId "<prefix>-<n, 9 digits>-<thread, 3 digits>", so the benchmark can check afterwards
-- that every acknowledged (201) command is in the store: a thread's acknowledged commands are
-- the first `ok` of its sequence. Ids are time-ordered like UUIDv7 ones: the threads advance
-- in step (one command each per group commit), so ids sort by when they were sent and a
-- batch's new rows land next to each other (ids "<prefix>-c<i>-t<thread>" ordered by thread
-- first put them in 64 key ranges: BENCH_WRITE_IDS=prefixed, passed as the second argument).
-- Arguments: the run's id prefix, then "prefixed" for the old ids.
local threads = {}
local next_tid = 0
local counter = 0
local run = "w"
local prefixed = false
local primed = true
ok = 0
bad = 0

function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
  table.insert(threads, thread)
end

function init(args)
  run = args[1] or "w"
  prefixed = args[2] == "prefixed"
  wrk.headers["Content-Type"] = "application/json"
  -- wrk 4.1 calls request() once on the first thread to check the script and throws the
  -- request away: that call must not consume a command of the sequence.
  primed = tid ~= 1
end

function request()
  if not primed then
    primed = true
    return wrk.format("POST", "/api/v1/commands", nil, "{}")
  end
  local i = math.floor(counter / 3)
  local step = counter % 3
  local command_id, cid, oid
  if prefixed then
    local prefix = run .. "-t" .. tid
    command_id = prefix .. "-" .. counter
    cid = prefix .. "-c" .. i
    oid = prefix .. "-o" .. i
  else
    command_id = string.format("%s-%09d-%03d", run, counter, tid)
    cid = string.format("%s-c%09d-%03d", run, i, tid)
    oid = string.format("%s-o%09d-%03d", run, i, tid)
  end
  counter = counter + 1
  local body
  if step == 0 then
    body = '{"type":"RegisterCustomer","commandId":"' .. command_id .. '","customerId":"' .. cid ..
      '","name":"N' .. i .. '","email":"a@b.co"}'
  elseif step == 1 then
    body = '{"type":"CreateOrder","commandId":"' .. command_id .. '","orderId":"' .. oid ..
      '","customerId":"' .. cid .. '","items":[{"sku":"tea","quantity":2,"unitPrice":"4.50"},' ..
      '{"sku":"cup","quantity":1,"unitPrice":"12.10"}]}'
  else
    body = '{"type":"UpdateOrderStatus","commandId":"' .. command_id .. '","orderId":"' .. oid ..
      '","status":"Paid"}'
  end
  return wrk.format("POST", "/api/v1/commands", nil, body)
end

function response(status, headers, body)
  if status == 201 then
    ok = ok + 1
  else
    bad = bad + 1
    if bad <= 3 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
  end
end

function done(summary, latency, requests)
  local per_thread = {}
  local non201 = 0
  for _, t in ipairs(threads) do
    non201 = non201 + t:get("bad")
    table.insert(per_thread, '"' .. t:get("tid") .. '": ' .. t:get("ok"))
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.6f, "socket_errors": %d, "non201": %d, ' ..
    '"p50_ms": %.3f, "p99_ms": %.3f, "ok": {%s}}\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout, non201,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, table.concat(per_thread, ", ")))
end
