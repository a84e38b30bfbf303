-- wrk script for bench/run: optional POST body of BODY_BYTES bytes (echo scenarios), and
-- one machine-readable summary line with exact percentiles (wrk --latency prints no p99.9).
local body_bytes = tonumber(os.getenv("BODY_BYTES") or "0")
if body_bytes > 0 then
  wrk.method = "POST"
  wrk.body = string.rep("x", body_bytes)
  wrk.headers["Content-Type"] = "application/octet-stream"
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d errors=%d non2xx=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
