-- wrk script: POST /v1/transfers (or /v1/transfers/batch when BATCH > 1) with unique ids and
-- random distinct account pairs among ACCOUNTS accounts named acct-0 .. acct-(ACCOUNTS-1).
-- Environment: ACCOUNTS (default 1000), BATCH (default 1), RUN (id prefix, default "r").
-- Used by run.sh, which creates the accounts first.

local accounts = tonumber(os.getenv("ACCOUNTS") or "1000")
local batch = tonumber(os.getenv("BATCH") or "1")
local run = os.getenv("RUN") or "r"
local threads = {}
local thread_count = 0

function setup(thread)
    thread_count = thread_count + 1
    thread:set("thread_id", thread_count)
    table.insert(threads, thread)
end

local counter = 0
local prefix

function init(args)
    prefix = run .. "-" .. tostring(thread_id) .. "-"
    math.randomseed(thread_id * 7919 + os.time())
end

local function item()
    counter = counter + 1
    local debit = math.random(0, accounts - 1)
    local credit = math.random(0, accounts - 2)
    if credit >= debit then credit = credit + 1 end
    return string.format(
        '{"id":"%s%d","debit_account":"acct-%d","credit_account":"acct-%d","amount":"1.00"}',
        prefix, counter, debit, credit)
end

local headers = { ["Content-Type"] = "application/json" }

function request()
    if batch <= 1 then
        return wrk.format("POST", "/v1/transfers", headers, item())
    end
    local items = {}
    for index = 1, batch do
        items[index] = item()
    end
    return wrk.format("POST", "/v1/transfers/batch", headers,
        '{"transfers":[' .. table.concat(items, ",") .. ']}')
end

local statuses = {}
function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local per_request = batch
    io.write(string.format("requests: %d in %.2f s; transfers/s: %.0f\n",
        summary.requests, summary.duration / 1e6,
        summary.requests * per_request / (summary.duration / 1e6)))
    io.write(string.format("latency ms: p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n",
        latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        latency:percentile(99.9) / 1000, latency.max / 1000))
    io.write(string.format("non-2xx or socket errors: %d (connect %d, read %d, write %d, timeout %d)\n",
        summary.errors.status, summary.errors.connect, summary.errors.read,
        summary.errors.write, summary.errors.timeout))
end
