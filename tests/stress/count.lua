-- wrk script for tests/stress/run: an optional POST body of BODY_BYTES bytes, and one
-- summary line with every way a request can fail, over all of wrk's threads.
local body_bytes = tonumber(os.getenv("BODY_BYTES") or "0")
if body_bytes > 0 then
  wrk.method = "POST"
  wrk.body = string.rep("w", body_bytes)
  wrk.headers["Content-Type"] = "application/octet-stream"
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, e.status, e.connect, e.read, e.write, e.timeout))
end
