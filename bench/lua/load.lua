-- bench/lua/load.lua: the steady load for one scenario (driven by bench/run.py).
--
--   wrk -t2 -c64 -d10s --latency -s bench/lua/load.lua URL -- MODE NCUST TAG KEY
--
-- MODE   deduct | freeze | pair | get | deposit | slot  (the same bodies go to the bare baseline)
-- NCUST  1: the one hot customer "hot-0"; N > 1: a uniformly random customer c-0 .. c-(N-1)
-- TAG    unique per wrk run, so no transaction_id or idempotency key is ever reused
--        (a reused id is an idempotent replay: cheaper, and it would flatter the numbers)
-- KEY    API key for "Authorization: Bearer KEY" ("-" for none)
--
-- pair: freeze 10, then consume 7 of that same transaction_id. Each wrk thread keeps a queue of
-- transaction ids whose freeze has been answered (parsed in response()); request() sends a
-- consume for the oldest such id, else a new freeze. So a consume is only ever sent after its
-- freeze succeeded, whatever order the thread's connections run in, and freezes ≈ consumes.
--
-- done() prints one line "BENCH_JSON {...}" with exact counts and latency percentiles in µs.

local thread_count = 0
function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
end

local mode, ncust, tag
local counter = 0
local q, q_head, q_tail = {}, 1, 0
local headers = {}

function init(args)
  mode = args[1]
  ncust = tonumber(args[2])
  tag = args[3] .. "-" .. tostring(tid or 0) .. "-"
  local key = args[4]
  headers["Content-Type"] = "application/json"
  if key and key ~= "-" then headers["Authorization"] = "Bearer " .. key end
  math.randomseed((tid or 0) * 7919 + os.time())
  if mode == "pair" then
    response = pair_response
  elseif mode == "slot" then
    response = slot_response
  end
end

local function customer()
  if ncust <= 1 then return "hot-0" end
  return "c-" .. math.random(0, ncust - 1)
end

local function next_id()
  counter = counter + 1
  return tag .. counter
end

local function post(path, body)
  return wrk.format("POST", path, headers, body)
end

function request()
  if mode == "deduct" then
    return post("/v1/billing/deduct", '{"customer_id":"' .. customer() ..
      '","amount":1,"transaction_id":"' .. next_id() .. '"}')
  elseif mode == "freeze" then
    return post("/v1/billing/freeze", '{"customer_id":"' .. customer() ..
      '","amount":10,"transaction_id":"' .. next_id() .. '"}')
  elseif mode == "pair" then
    if q_head <= q_tail then
      local id = q[q_head]
      q[q_head] = nil
      q_head = q_head + 1
      return post("/v1/billing/consume", '{"transaction_id":"' .. id .. '","actual_amount":7}')
    end
    return post("/v1/billing/freeze", '{"customer_id":"' .. customer() ..
      '","amount":10,"transaction_id":"' .. next_id() .. '"}')
  elseif mode == "get" then
    return wrk.format("GET", "/v1/customers/" .. customer(), headers, nil)
  elseif mode == "slot" then
    return slot_request()
  elseif mode == "deposit" then
    return post("/v1/customers/deposit", '{"customer_id":"' .. customer() ..
      '","amount":1,"idempotency_key":"' .. next_id() .. '"}')
  end
  error("unknown mode " .. tostring(mode))
end

function pair_response(status, hdrs, body)
  if status < 300 and body:find('"frozen_amount"', 1, true) then
    local id = body:match('"transaction_id"%s*:%s*"([^"]+)"')
    if id then
      q_tail = q_tail + 1
      q[q_tail] = id
    end
  end
end

-- slot: a claim's answer does not name its resource, so releases go out in claim order, and the
-- k-th claimed resource is released only once SLOT_LAG more slot answers than k have come back
-- (at most one request per connection is in flight, and a thread has fewer connections than
-- SLOT_LAG). A release that still overtook its claim would count as a non-2xx, never hidden.
local SLOT_LAG = 1024
local claimed, sent, answered, released = {}, 0, 0, 0

function slot_response(status, hdrs, body)
  if status < 300 then
    answered = answered + 1  -- claims and releases: the lag covers the releases in flight
  end
end

function slot_request()
  if released < sent and released + SLOT_LAG < answered - released then
    released = released + 1
    local item = claimed[released]
    claimed[released] = nil
    return post("/v1/slot/release", '{"customer_id":"' .. item[1] .. '","wallet":"bench","resource_id":"' ..
      item[2] .. '"}')
  end
  local c, id = customer(), next_id()
  sent = sent + 1
  claimed[sent] = {c, id}
  return post("/v1/slot/claim", '{"customer_id":"' .. c .. '","wallet":"bench","resource_id":"' .. id .. '"}')
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
