//! What the engine counts, in the Prometheus text format (vLLM's metric names where they exist,
//! prefixed `ferrolm:`). Counters and gauges are atomics; a histogram is a few atomics per bucket,
//! so recording never blocks the engine loop.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BUCKETS: [f64; 16] = [0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// A histogram over fixed buckets (cumulative when rendered).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>, // (bounds + 1) the last one is +Inf
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_micros: AtomicU64::new(0) }
    }

    /// Records one observation (seconds).
    pub fn observe(&self, seconds: f64) {
        let seconds = if seconds.is_finite() { seconds.max(0.0) } else { 0.0 };
        let i = self.bounds.iter().position(|&b| seconds <= b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Relaxed);
            match self.bounds.get(i) {
                Some(b) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Why requests ended, as OpenAI's `finish_reason` names them.
pub const FINISH_REASONS: [&str; 3] = ["stop", "length", "abort"];

/// Every metric of the engine.
#[derive(Debug)]
pub struct Metrics {
    /// Arrival to the first generated token.
    pub time_to_first_token: Histogram,
    /// Between consecutive tokens of one sequence.
    pub inter_token_latency: Histogram,
    /// Arrival to the last token.
    pub e2e_latency: Histogram,
    /// Arrival to the first scheduled step.
    pub queue_time: Histogram,
    /// Requests being generated.
    pub running: AtomicU64,
    /// Requests waiting to start (or to resume after preemption).
    pub waiting: AtomicU64,
    /// KV blocks held by live sequences.
    pub kv_blocks_used: AtomicU64,
    /// KV blocks in the pool.
    pub kv_blocks_total: AtomicU64,
    /// Prompt tokens looked up in the prefix cache.
    pub prefix_cache_queries: AtomicU64,
    /// Of those, tokens found.
    pub prefix_cache_hits: AtomicU64,
    /// Requests sent back to the queue for lack of KV blocks.
    pub preemptions: AtomicU64,
    /// Prompt tokens of finished and running requests (cached ones included).
    pub prompt_tokens: AtomicU64,
    /// Generated tokens.
    pub generation_tokens: AtomicU64,
    /// Finished requests by [`FINISH_REASONS`].
    pub finished: [AtomicU64; 3],
    /// Requests refused because the queue was full.
    pub rejected: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let h = || Histogram::new(&LATENCY_BUCKETS);
        let z = || AtomicU64::new(0);
        Metrics {
            time_to_first_token: h(),
            inter_token_latency: h(),
            e2e_latency: h(),
            queue_time: h(),
            running: z(),
            waiting: z(),
            kv_blocks_used: z(),
            kv_blocks_total: z(),
            prefix_cache_queries: z(),
            prefix_cache_hits: z(),
            preemptions: z(),
            prompt_tokens: z(),
            generation_tokens: z(),
            finished: [z(), z(), z()],
            rejected: z(),
        }
    }
}

impl Metrics {
    /// Everything in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let g = |out: &mut String, name: &str, help: &str, kind: &str, value: f64| {
            let _ = writeln!(out, "# HELP ferrolm:{name} {help}\n# TYPE ferrolm:{name} {kind}\nferrolm:{name} {value}");
        };
        let load = |a: &AtomicU64| a.load(Relaxed) as f64;
        g(&mut out, "num_requests_running", "Requests being generated.", "gauge", load(&self.running));
        g(&mut out, "num_requests_waiting", "Requests waiting to start or resume.", "gauge", load(&self.waiting));
        g(&mut out, "kv_blocks_used", "KV cache blocks held by live sequences.", "gauge", load(&self.kv_blocks_used));
        g(&mut out, "kv_blocks_total", "KV cache blocks in the pool.", "gauge", load(&self.kv_blocks_total));
        let usage = load(&self.kv_blocks_used) / load(&self.kv_blocks_total).max(1.0);
        g(&mut out, "kv_cache_usage_perc", "Fraction of KV cache blocks in use (0-1).", "gauge", usage);
        g(&mut out, "prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.", "counter", load(&self.prefix_cache_queries));
        g(&mut out, "prefix_cache_hits_total", "Prompt tokens found in the prefix cache.", "counter", load(&self.prefix_cache_hits));
        g(&mut out, "num_preemptions_total", "Requests preempted for lack of KV blocks.", "counter", load(&self.preemptions));
        g(&mut out, "prompt_tokens_total", "Prompt tokens of admitted requests.", "counter", load(&self.prompt_tokens));
        g(&mut out, "generation_tokens_total", "Generated tokens.", "counter", load(&self.generation_tokens));
        g(&mut out, "request_rejected_total", "Requests refused because the queue was full.", "counter", load(&self.rejected));
        let _ =
            writeln!(out, "# HELP ferrolm:request_success_total Finished requests by finish reason.\n# TYPE ferrolm:request_success_total counter");
        for (reason, n) in FINISH_REASONS.iter().zip(&self.finished) {
            let _ = writeln!(out, "ferrolm:request_success_total{{finished_reason=\"{reason}\"}} {}", n.load(Relaxed));
        }
        self.time_to_first_token.render(&mut out, "ferrolm:time_to_first_token_seconds", "Time to the first generated token.");
        self.inter_token_latency.render(&mut out, "ferrolm:inter_token_latency_seconds", "Time between generated tokens.");
        self.e2e_latency.render(&mut out, "ferrolm:e2e_request_latency_seconds", "Arrival to the last token.");
        self.queue_time.render(&mut out, "ferrolm:request_queue_time_seconds", "Arrival to the first scheduled step.");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets() {
        let m = Metrics::default();
        m.time_to_first_token.observe(0.007);
        m.time_to_first_token.observe(0.5);
        m.time_to_first_token.observe(1e9);
        let text = m.render();
        assert!(text.contains("ferrolm:time_to_first_token_seconds_bucket{le=\"0.005\"} 0\n"), "{text}");
        assert!(text.contains("ferrolm:time_to_first_token_seconds_bucket{le=\"0.01\"} 1\n"));
        assert!(text.contains("ferrolm:time_to_first_token_seconds_bucket{le=\"0.5\"} 2\n"));
        assert!(text.contains("ferrolm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("ferrolm:time_to_first_token_seconds_count 3\n"));
        assert!(text.contains("ferrolm:request_success_total{finished_reason=\"stop\"} 0\n"));
        // Every sample line is `name{labels} value` with a numeric value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(line.starts_with("ferrolm:"), "{line}");
        }
    }
}
