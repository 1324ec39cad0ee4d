-- wrk script for the write-side HTTP benchmark: POST /api/v1/commands with unique ids.
-- Run with one connection per thread (-t N -c N): each thread sends, in order, per customer:
-- RegisterCustomer, CreateOrder (two lines), UpdateOrderStatus -> Paid. Every command carries
-- commandId "<prefix>-t<thread>-<n>", so the benchmark can check afterwards that every
-- acknowledged (201) command is in the store: a thread's acknowledged commands are the first
-- `ok` of its sequence. Arguments: the run's id prefix.
local threads = {}
local next_tid = 0
local counter = 0
local prefix = "w"
local primed = true
ok = 0
bad = 0

function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
  table.insert(threads, thread)
end

function init(args)
  prefix = (args[1] or "w") .. "-t" .. tostring(tid)
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
  local command_id = prefix .. "-" .. counter
  counter = counter + 1
  local cid = prefix .. "-c" .. i
  local oid = prefix .. "-o" .. i
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
