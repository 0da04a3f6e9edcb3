-- bench/home/hit.lua - wrk script for the hit path with many students: each request asks
-- for the home of the next student of PAIRS ("id token" per line, from tokens.py) with that
-- student's own token, so neither the cache nor the gateway's table of verified tokens sees
-- one key over and over. The trivial server gets the same requests (it ignores them).
local pairs_ = {}
for line in io.lines(os.getenv("PAIRS")) do
    local id, tok = line:match("^(%S+) (%S+)$")
    if id then pairs_[#pairs_ + 1] = {id, "Bearer " .. tok} end
end
local counter = 0

function setup(thread)
    thread:set("offset", counter)
    counter = counter + 1
end

function init(args)
    n = offset * 7919
    step = 1
end

function request()
    local p = pairs_[(n % #pairs_) + 1]
    n = n + step
    return wrk.format("GET", "/api/v1/students/" .. p[1] .. "/home", {["Authorization"] = p[2]})
end
