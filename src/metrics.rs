//! Every metric switchyard exports, named in one place and all prefixed `switchyard_`, over
//! the metrics crate's Prometheus recorder. The recorder is not installed as the global one
//! (no mutable globals): the hot path holds pre-registered handles (atomic operations, no
//! lookup), and everything else is read from the counters the parts keep anyway when
//! `/metrics` is scraped.

use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics::{Counter, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Statement latency buckets, in seconds: 100 µs to 10 s.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

const ROUTES: [&str; 2] = ["primary", "standby"];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    statements: [Counter; 2],
    latency: [Histogram; 2],
}

/// A sample of the scrape: a metric name, its labels and a value.
pub struct Sample {
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        let meta = Metadata::new(module_path!(), metrics::Level::INFO, None);
        let route = |r: &'static str| vec![Label::new("route", r)];
        let statements = ROUTES.map(|r| {
            recorder.register_counter(
                &Key::from_parts("switchyard_statements_total", route(r)),
                &meta,
            )
        });
        let latency = ROUTES.map(|r| {
            recorder.register_histogram(
                &Key::from_parts("switchyard_statement_duration_seconds", route(r)),
                &meta,
            )
        });
        Metrics {
            recorder,
            handle,
            statements,
            latency,
        }
    }

    /// A statement finished on the primary or a standby (the hot path: atomics only).
    pub fn statement(&self, standby: bool, took: Duration) {
        let i = usize::from(standby);
        self.statements[i].increment(1);
        self.latency[i].record(took.as_secs_f64());
    }

    /// Sets the scrape-time samples and renders everything in Prometheus text format.
    pub fn render(&self, samples: &[Sample]) -> String {
        let meta = Metadata::new(module_path!(), metrics::Level::INFO, None);
        for s in samples {
            let labels: Vec<Label> = s
                .labels
                .iter()
                .map(|(k, v)| Label::new(*k, v.clone()))
                .collect();
            let key = Key::from_parts(s.name, labels);
            match s.kind {
                Kind::Counter => self
                    .recorder
                    .register_counter(&key, &meta)
                    .absolute(s.value as u64),
                Kind::Gauge => self.recorder.register_gauge(&key, &meta).set(s.value),
            }
        }
        self.handle.run_upkeep();
        self.handle.render()
    }
}

/// What `/metrics` reads besides the hot-path handles: sessions, counters, pins, backends
/// and their pools.
pub fn scrape(shared: &crate::session::Shared) -> Vec<Sample> {
    use Kind::{Counter as C, Gauge as G};
    let st = &shared.stats;
    let mut out = vec![
        labelled(
            "switchyard_build_info",
            G,
            vec![("version", env!("CARGO_PKG_VERSION").into())],
            1.0,
        ),
        sample(
            "switchyard_client_sessions",
            G,
            shared.registry.len() as f64,
        ),
        labelled(
            "switchyard_client_connections_refused_total",
            C,
            vec![("reason", "limit".into())],
            load(&st.rejected_connections),
        ),
        labelled(
            "switchyard_client_connections_refused_total",
            C,
            vec![("reason", "auth".into())],
            load(&st.auth_failures),
        ),
        sample("switchyard_read_retries_total", C, load(&st.read_retries)),
        sample("switchyard_reruns_total", C, load(&st.reroutes)),
        sample("switchyard_causal_waits_total", C, load(&st.causal_waits)),
        sample(
            "switchyard_causal_fallbacks_total",
            C,
            load(&st.causal_fallbacks),
        ),
        labelled(
            "switchyard_optimistic_transactions_total",
            C,
            vec![("outcome", "moved".into())],
            load(&st.optimistic_moved),
        ),
        labelled(
            "switchyard_optimistic_transactions_total",
            C,
            vec![("outcome", "failed".into())],
            load(&st.optimistic_failed),
        ),
    ];
    for (reason, n) in st.pins.lock().iter() {
        out.push(labelled(
            "switchyard_pins_total",
            C,
            vec![("reason", reason.to_string())],
            *n as f64,
        ));
    }
    for e in &shared.topology.full().entries {
        backend_samples(shared, e, &mut out);
    }
    out
}

fn backend_samples(
    shared: &crate::session::Shared,
    e: &crate::topology::Entry,
    out: &mut Vec<Sample>,
) {
    use Kind::{Counter as C, Gauge as G};
    let b = || vec![("backend", e.node.name.clone())];
    let role = e.role.map_or("unknown", |r| r.as_str());
    out.push(labelled(
        "switchyard_backend_up",
        G,
        b(),
        f64::from(u8::from(e.healthy)),
    ));
    out.push(labelled(
        "switchyard_backend_primary",
        G,
        b(),
        f64::from(u8::from(role == "primary")),
    ));
    out.push(labelled(
        "switchyard_backend_lag_ok",
        G,
        b(),
        f64::from(u8::from(e.lag_ok)),
    ));
    out.push(labelled(
        "switchyard_backend_requests_in_flight",
        G,
        b(),
        e.node.outstanding.load(Ordering::Relaxed) as f64,
    ));
    for p in shared.pools_of(&e.node).user_pools() {
        let l = |extra: Option<(&'static str, &str)>| {
            let mut v = vec![
                ("backend", e.node.name.clone()),
                ("user", p.user.clone()),
                ("class", p.class.name()),
            ];
            v.extend(extra.map(|(k, x)| (k, x.to_string())));
            v
        };
        out.push(labelled(
            "switchyard_pool_connections",
            G,
            l(Some(("state", "idle"))),
            p.idle_len() as f64,
        ));
        out.push(labelled(
            "switchyard_pool_connections",
            G,
            l(Some(("state", "in_use"))),
            p.stats.in_use.load(Ordering::Relaxed) as f64,
        ));
        out.push(labelled(
            "switchyard_pool_connections_opened_total",
            C,
            l(None),
            load(&p.stats.opened),
        ));
        out.push(labelled(
            "switchyard_pool_connections_closed_total",
            C,
            l(None),
            load(&p.stats.closed),
        ));
        out.push(labelled(
            "switchyard_pool_leases_total",
            C,
            l(None),
            load(&p.stats.leases),
        ));
        out.push(labelled(
            "switchyard_pool_lease_timeouts_total",
            C,
            l(None),
            load(&p.stats.timeouts),
        ));
    }
}

/// A sample without labels.
pub fn sample(name: &'static str, kind: Kind, value: f64) -> Sample {
    labelled(name, kind, Vec::new(), value)
}

pub fn labelled(
    name: &'static str,
    kind: Kind,
    labels: Vec<(&'static str, String)>,
    value: f64,
) -> Sample {
    Sample {
        name,
        labels,
        value,
        kind,
    }
}

/// Reads an atomic counter as a sample value.
pub fn load(a: &std::sync::atomic::AtomicU64) -> f64 {
    a.load(Ordering::Relaxed) as f64
}
