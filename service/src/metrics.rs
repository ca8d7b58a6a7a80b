//! Prometheus text metrics: requests by endpoint, status and outcome; a latency histogram per
//! endpoint.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Requests by (endpoint, status, outcome).
type Counts = BTreeMap<(String, u16, &'static str), u64>;

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<(Counts, BTreeMap<String, Histogram>)>,
}

impl Metrics {
    pub fn record(&self, endpoint: &str, status: u16, outcome: &'static str, secs: f64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *g.0.entry((endpoint.to_string(), status, outcome))
            .or_default() += 1;
        let h = g.1.entry(endpoint.to_string()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    pub fn render(&self) -> String {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = String::new();
        s.push_str(
            "# HELP wmlicense_requests_total Requests answered, by endpoint, status and outcome.\n",
        );
        s.push_str("# TYPE wmlicense_requests_total counter\n");
        for ((e, status, outcome), n) in &g.0 {
            let _ = writeln!(
                s,
                "wmlicense_requests_total{{endpoint=\"{e}\",status=\"{status}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        s.push_str("# HELP wmlicense_request_duration_seconds Time to answer a request.\n");
        s.push_str("# TYPE wmlicense_request_duration_seconds histogram\n");
        for (e, h) in &g.1 {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "wmlicense_request_duration_seconds_bucket{{endpoint=\"{e}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                s,
                "wmlicense_request_duration_seconds_bucket{{endpoint=\"{e}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                s,
                "wmlicense_request_duration_seconds_sum{{endpoint=\"{e}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                s,
                "wmlicense_request_duration_seconds_count{{endpoint=\"{e}\"}} {}",
                h.count
            );
        }
        s
    }
}
