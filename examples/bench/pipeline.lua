-- wrk script: send PIPELINE (default 16) copies of the request at once,
-- as TechEmpower's plaintext test does. wrk counts every response.
-- Usage: wrk -s examples/bench/pipeline.lua URL -- 16
init = function(args)
    local depth = tonumber(args[1]) or 16
    local r = {}
    for i = 1, depth do
        r[i] = wrk.format(nil)
    end
    req = table.concat(r)
end

request = function()
    return req
end
