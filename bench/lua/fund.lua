-- bench/lua/fund.lua: fund exactly COUNT customers, one deposit each, then stop.
--
--   wrk -t2 -c64 -d600s -s bench/lua/fund.lua URL -- PREFIX FIRST COUNT AMOUNT THREADS DONEDIR KEY TAG
--
-- Customers PREFIX<FIRST> .. PREFIX<FIRST+COUNT-1> each get one deposit of AMOUNT, with the
-- idempotency key fund-TAG-<customer> (a new TAG deposits again). The range is split evenly over
-- the THREADS wrk threads. A thread that has sent its share sends GET /health (no ledger effect)
-- until every deposit it sent is answered,
-- then writes DONEDIR/<thread> ("ok bad") and stops. bench/run.py waits for every file and then
-- ends wrk with SIGINT (wrk otherwise always runs for its full -d).

local thread_count = 0
function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
end

local prefix, first, quota, amount, donefile, keytag
local sent, ok, bad, finished = 0, 0, 0, false
local headers = {}
local health
local verify_pending = false  -- wrk calls request() once on thread 0 only to check it parses

local function finish()
  finished = true
  local f = io.open(donefile, "w")
  f:write(ok .. " " .. bad .. "\n")
  f:close()
  wrk.thread:stop()
end

function init(args)
  prefix = args[1]
  local start = tonumber(args[2])
  local count = tonumber(args[3])
  amount = args[4]
  local threads = tonumber(args[5])
  donefile = args[6] .. "/" .. tostring(tid)
  headers["Content-Type"] = "application/json"
  if args[7] and args[7] ~= "-" then headers["Authorization"] = "Bearer " .. args[7] end
  keytag = "fund-" .. (args[8] or "0") .. "-"
  local per = math.floor(count / threads)
  first = start + tid * per
  quota = per
  if tid == threads - 1 then quota = count - per * (threads - 1) end
  health = wrk.format("GET", "/health", {}, nil)
  verify_pending = (tid == 0)
end

function request()
  if verify_pending then
    verify_pending = false
    return health
  end
  if sent < quota then
    local n = first + sent
    sent = sent + 1
    return wrk.format("POST", "/v1/customers/deposit", headers,
      '{"customer_id":"' .. prefix .. string.format("%d", n) .. '","amount":' .. amount ..
      ',"idempotency_key":"' .. keytag .. prefix .. string.format("%d", n) .. '"}')
  end
  return health
end

function response(status, hdrs, body)
  if finished then return end
  if body:find('"added_amount"', 1, true) then
    ok = ok + 1
  elseif status >= 300 then
    bad = bad + 1
  end
  if ok + bad >= quota then finish() end
end
