//! Query digests per (user, schema, digest text): count, latency (sum, min, max), rows
//! sent, errors and route, bounded in bytes (the least used entry of a shard makes room),
//! served as JSON at `GET /digests`. Sixteen shards keep sessions from waiting on each
//! other; an entry's text is built once, when it is first seen.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

const SHARDS: usize = 16;

/// One digest's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub digest: String,
    pub digest_text: String,
    pub user: String,
    pub schema: String,
    pub count: u64,
    pub sum_us: u64,
    pub min_us: u64,
    pub max_us: u64,
    pub rows: u64,
    pub errors: u64,
    /// `primary`, `standby`, or `both`.
    pub route: &'static str,
    #[serde(skip)]
    routes: [u64; 2],
}

/// One statement, as the session saw it.
pub struct Observation<'a> {
    pub user: &'a str,
    pub schema: Option<&'a str>,
    /// The digest text and its hash (`router::digest::digest`).
    pub text: &'a str,
    pub hash: u64,
    pub took: Duration,
    pub rows: u64,
    pub error: bool,
    pub standby: bool,
}

pub struct Digests {
    shards: Vec<Mutex<HashMap<u64, Entry>>>,
    bytes: AtomicUsize,
    max_bytes: usize,
}

impl Digests {
    /// `max_bytes`: the memory the entries may hold together (0: digests off).
    pub fn new(max_bytes: usize) -> Self {
        Digests {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            bytes: AtomicUsize::new(0),
            max_bytes,
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    pub fn record(&self, o: &Observation<'_>) {
        if !self.enabled() {
            return;
        }
        let key = key(o);
        let us = o.took.as_micros() as u64;
        let mut shard = self.shards[(key as usize) % SHARDS].lock();
        if let Some(e) = shard.get_mut(&key) {
            add(e, us, o);
            return;
        }
        let e = new_entry(key, o, us);
        let size = entry_bytes(&e);
        while self.bytes.load(Ordering::Relaxed) + size > self.max_bytes {
            if !evict_least_used(&mut shard, &self.bytes) {
                return; // this shard is empty and the others hold the budget: not kept
            }
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        shard.insert(key, e);
    }

    /// Every entry, the most frequent first.
    pub fn list(&self) -> Vec<Entry> {
        let mut all: Vec<Entry> = self
            .shards
            .iter()
            .flat_map(|s| s.lock().values().cloned().collect::<Vec<_>>())
            .collect();
        all.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.digest_text.cmp(&b.digest_text))
        });
        all
    }

    pub fn reset(&self) {
        for s in &self.shards {
            s.lock().clear();
        }
        self.bytes.store(0, Ordering::Relaxed);
    }
}

fn key(o: &Observation<'_>) -> u64 {
    let mut h = DefaultHasher::new();
    o.hash.hash(&mut h);
    o.user.hash(&mut h);
    o.schema.hash(&mut h);
    h.finish()
}

fn new_entry(key: u64, o: &Observation<'_>, us: u64) -> Entry {
    let mut e = Entry {
        digest: format!("{key:016x}"),
        digest_text: o.text.to_string(),
        user: o.user.to_string(),
        schema: o.schema.unwrap_or_default().to_string(),
        count: 0,
        sum_us: 0,
        min_us: u64::MAX,
        max_us: 0,
        rows: 0,
        errors: 0,
        route: "primary",
        routes: [0, 0],
    };
    add(&mut e, us, o);
    e
}

fn add(e: &mut Entry, us: u64, o: &Observation<'_>) {
    e.count += 1;
    e.sum_us += us;
    e.min_us = e.min_us.min(us);
    e.max_us = e.max_us.max(us);
    e.rows += o.rows;
    e.errors += u64::from(o.error);
    e.routes[usize::from(o.standby)] += 1;
    e.route = match e.routes {
        [_, 0] => "primary",
        [0, _] => "standby",
        _ => "both",
    };
}

fn entry_bytes(e: &Entry) -> usize {
    std::mem::size_of::<Entry>() + e.digest_text.len() + e.user.len() + e.schema.len() + 16
}

fn evict_least_used(shard: &mut HashMap<u64, Entry>, bytes: &AtomicUsize) -> bool {
    let Some(k) = shard.iter().min_by_key(|(_, e)| e.count).map(|(k, _)| *k) else {
        return false;
    };
    if let Some(e) = shard.remove(&k) {
        bytes.fetch_sub(entry_bytes(&e), Ordering::Relaxed);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs<'a>(text: &'a str, user: &'a str, us: u64, standby: bool) -> Observation<'a> {
        Observation {
            user,
            schema: Some("sbtest"),
            text,
            hash: {
                let mut h = DefaultHasher::new();
                text.hash(&mut h);
                h.finish()
            },
            took: Duration::from_micros(us),
            rows: 1,
            error: false,
            standby,
        }
    }

    #[test]
    fn counts_latency_rows_and_route_per_user_and_digest() {
        let d = Digests::new(1 << 20);
        d.record(&obs("SELECT ?", "a", 10, true));
        d.record(&obs("SELECT ?", "a", 30, false));
        d.record(&obs("SELECT ?", "b", 5, true));
        let l = d.list();
        assert_eq!(l.len(), 2);
        let a = l.iter().find(|e| e.user == "a").unwrap();
        assert_eq!(
            (a.count, a.sum_us, a.min_us, a.max_us, a.rows),
            (2, 40, 10, 30, 2)
        );
        assert_eq!(a.route, "both");
        d.reset();
        assert!(d.list().is_empty());
    }

    #[test]
    fn bounded_in_bytes_the_least_used_go_first() {
        let one = entry_bytes(&new_entry(0, &obs("SELECT ?", "a", 1, true), 1));
        let d = Digests::new(one * 3 + one / 2);
        let texts: Vec<String> = (0..40).map(|i| format!("SELECT {i:03}")).collect();
        for t in &texts {
            d.record(&obs(t, "a", 1, true));
        }
        assert!(d.bytes.load(Ordering::Relaxed) <= one * 3 + one / 2);
        let kept = d.list().len();
        assert!((1..=3).contains(&kept), "{kept} entries kept of 40");
    }
}
