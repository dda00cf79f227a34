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
    slot_init()
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

-- slot: claim 1 then release that same resource, on SLOT_LANES lanes per thread. Lane k of thread
-- t is the pool (wallet "bench", source "t<t>-<k>") of the hot customer, granted by bench/run.py
-- (prepare_tally; capacity 1,000 each, while a lane holds at most 1). A lane is free, claiming,
-- held or releasing, and has at most one request in flight. Every pool view answered names its
-- source, so response() knows the lane exactly: a 200 claim makes it held (queued for release),
-- any answer to a release frees it. request() releases a held lane first, else claims a fresh
-- resource id (never reused) on a free lane. So a release is only ever sent after its claim was
-- answered 200: never overtaken, whatever order the connections run in. A connection has at most
-- one request in flight, so with SLOT_LANES >= connections per thread a lane is always free or
-- held when request() runs (bench/run.py asserts that bound).
SLOT_LANES = 64
local lane_state, lane_resource, free_lanes, held, held_head, held_tail = {}, {}, {}, {}, 1, 0

function slot_init()
  for k = SLOT_LANES, 1, -1 do  -- a stack: low lanes first (granted first: the shortest pool scan)
    free_lanes[#free_lanes + 1] = k
    lane_state[k] = "free"
  end
end

function slot_response(status, hdrs, body)
  local k = tonumber(body:match('"source":"t' .. (tid or 0) .. '%-(%d+)"') or "")
  if not k then return end  -- an error envelope: counted as non-2xx by wrk, and the lane stays out
  if lane_state[k] == "claiming" and status == 200 then
    lane_state[k] = "held"
    held_tail = held_tail + 1
    held[held_tail] = k
  elseif lane_state[k] == "claiming" or lane_state[k] == "releasing" then
    lane_state[k] = "free"
    free_lanes[#free_lanes + 1] = k
  end
end

local function slot_post(path, k, resource)
  return post(path, '{"customer_id":"hot-0","wallet":"bench","source":"t' .. (tid or 0) .. '-' .. k ..
    '","resource_id":"' .. resource .. '"}')
end

function slot_request()
  if held_head <= held_tail then
    local k = held[held_head]
    held[held_head] = nil
    held_head = held_head + 1
    lane_state[k] = "releasing"
    return slot_post("/v1/slot/release", k, lane_resource[k])
  end
  local k = table.remove(free_lanes)
  if not k then error("slot: no free lane (more connections per thread than SLOT_LANES?)") end
  lane_state[k] = "claiming"
  lane_resource[k] = next_id()
  return slot_post("/v1/slot/claim", k, lane_resource[k])
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
