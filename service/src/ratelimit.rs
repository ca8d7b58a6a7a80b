//! Rate limits: a token bucket per key (a lineage, a device for releases, a client address), in
//! this replica's memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

pub struct RateLimiter<K> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    /// `per_second` 0: no limit.
    pub fn new(per_second: f64, burst: u32) -> RateLimiter<K> {
        RateLimiter {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether there is a limit at all.
    pub fn enabled(&self) -> bool {
        self.per_second > 0.0
    }

    /// Takes a token for `key`; `Some(seconds)` to wait when there is none.
    pub fn check(&self, key: &K) -> Option<u64> {
        if self.per_second <= 0.0 {
            return None;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            // Forget the buckets that have refilled: they are as good as new.
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, (t, at)| *t + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(*key).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            None
        } else {
            Some(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }

    /// Takes `extra` more tokens from `key`'s bucket without refusing: a request found to be
    /// bigger than one. The bucket may go into debt, which the key's next requests wait out
    /// (the debt is bounded by the largest charge a request can make).
    pub fn charge(&self, key: &K, extra: f64) {
        if self.per_second <= 0.0 || extra <= 0.0 {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((tokens, _)) = buckets.get_mut(key) {
            *tokens -= extra;
        }
    }
}
