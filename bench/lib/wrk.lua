-- wrk script for bench/run and tests/stress/run: optional POST body of BODY_BYTES bytes
-- (echo scenarios), and one machine-readable summary line with exact percentiles (wrk --latency prints no p99.9)
-- and every way a request can fail.
--
-- Failures, as wrk counts them over all its threads (no per-response Lua callback, which
-- would slow wrk down):
--   non2xx          responses with a status of 400 or more (wrk's "Non-2xx or 3xx
--                   responses" line; these routes never answer 1xx or 3xx);
--   connect_errors, read_errors, write_errors, timeouts: wrk's "Socket errors" line. A
--                   read error is also a connection the server closed or reset.
local body_bytes = tonumber(os.getenv("BODY_BYTES") or "0")
if body_bytes > 0 then
  wrk.method = "POST"
  wrk.body = string.rep("x", body_bytes)
  wrk.headers["Content-Type"] = "application/octet-stream"
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d non2xx=%d connect_errors=%d read_errors=%d "
      .. "write_errors=%d timeouts=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
