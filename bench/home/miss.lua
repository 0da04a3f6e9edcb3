-- bench/home/miss.lua - wrk script for the miss path: every request asks for the home of a
-- different student (ids from students.txt, one per line), so each one misses the cache,
-- reads kc_flow.student_home and fills Redis. Needs an admin token in the TOKEN env var;
-- START (default 0) skips that many ids, so a second run does not hit what the first filled.
local ids = {}
for line in io.lines(os.getenv("STUDENTS")) do ids[#ids + 1] = line end
local counter = 0

function setup(thread)
    thread:set("offset", counter)
    counter = counter + 1
end

function init(args)
    n = offset + tonumber(os.getenv("START") or "0")
    step = tonumber(os.getenv("THREADS") or "2")
    wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
end

function request()
    local id = ids[(n % #ids) + 1]
    n = n + step
    return wrk.format("GET", "/api/v1/students/" .. id .. "/home")
end
