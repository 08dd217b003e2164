-- wrk script for bench/proxy/run.py: at the end of a run, print one line that run.py
-- parses. Latencies are wrk's exact histogram percentiles, in microseconds.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'LBKIT_WRK {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"p50_us": %.0f, "p90_us": %.0f, "p99_us": %.0f, "max_us": %.0f, "mean_us": %.1f, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
