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

/// The `command` label of statements: COM_QUERY, COM_STMT_EXECUTE, COM_STMT_FETCH, others.
const COMMANDS: [&str; 4] = ["query", "execute", "fetch", "other"];

/// Seconds without a primary, and seconds a statement waited for one: 1 ms to 60 s.
const HOLD_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0, 60.0,
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    statements: [[Counter; 4]; 2],
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

fn meta() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, None)
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .expect("buckets are not empty")
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("hold_seconds".into()),
                &HOLD_BUCKETS,
            )
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        let statements = ROUTES.map(|r| {
            COMMANDS.map(|c| {
                let labels = vec![Label::new("route", r), Label::new("command", c)];
                let key = Key::from_parts("switchyard_statements_total", labels);
                recorder.register_counter(&key, &meta())
            })
        });
        let latency = ROUTES.map(|r| {
            let key = Key::from_parts(
                "switchyard_statement_duration_seconds",
                vec![Label::new("route", r)],
            );
            recorder.register_histogram(&key, &meta())
        });
        Metrics {
            recorder,
            handle,
            statements,
            latency,
        }
    }

    /// What the topology reports into: its failover and write-hold histograms.
    pub fn topology_observer(&self) -> crate::topology::Observer {
        let h = |name: &'static str| {
            let key = Key::from_name(name);
            Some(self.recorder.register_histogram(&key, &meta()))
        };
        crate::topology::Observer {
            absent: h("switchyard_failover_hold_seconds"),
            hold: h("switchyard_write_hold_seconds"),
            ..Default::default()
        }
    }

    /// A statement (the command's first byte) finished on the primary or a standby (the
    /// hot path: atomics only).
    pub fn statement(&self, standby: bool, command: u8, took: Duration) {
        let i = usize::from(standby);
        let c = match command {
            0x03 => 0,
            0x17 => 1,
            0x1c => 2,
            _ => 3,
        };
        self.statements[i][c].increment(1);
        self.latency[i].record(took.as_secs_f64());
    }

    /// Sets the scrape-time samples and renders everything in Prometheus text format.
    pub fn render(&self, samples: &[Sample]) -> String {
        let meta = meta();
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
        sample(
            "switchyard_client_connections_accepted_total",
            C,
            load(&st.accepted_connections),
        ),
        sample(
            "switchyard_parse_fallbacks_total",
            C,
            load(&st.parse_fallbacks),
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
    let replays = |outcome: &str| vec![("outcome", outcome.to_string())];
    out.extend([
        labelled(
            "switchyard_transaction_replays_total",
            C,
            replays("replayed"),
            load(&st.replays),
        ),
        labelled(
            "switchyard_transaction_replays_total",
            C,
            replays("failed"),
            load(&st.replays_failed),
        ),
        labelled(
            "switchyard_transaction_replays_total",
            C,
            replays("moved"),
            load(&st.replays_moved),
        ),
        labelled(
            "switchyard_transaction_replays_total",
            C,
            replays("moved_then_lost"),
            load(&st.replays_moved_lost),
        ),
        sample(
            "switchyard_deadlocks_replayed_total",
            C,
            load(&st.deadlocks_replayed),
        ),
        sample(
            "switchyard_commits_in_doubt_total",
            C,
            load(&st.commits_in_doubt),
        ),
        sample(
            "switchyard_commits_resolved_total",
            C,
            load(&st.commits_resolved),
        ),
    ]);
    for (reason, n) in st.pins.lock().iter() {
        out.push(labelled(
            "switchyard_pins_total",
            C,
            vec![("reason", reason.to_string())],
            *n as f64,
        ));
    }
    for (origin, code, n) in st.errors.nonzero() {
        out.push(labelled(
            "switchyard_errors_total",
            C,
            vec![
                ("origin", origin.as_str().into()),
                ("code", code.to_string()),
            ],
            n as f64,
        ));
    }
    topology_samples(&shared.topology.observer, &mut out);
    for e in &shared.topology.full().entries {
        backend_samples(shared, e, &mut out);
    }
    out
}

fn topology_samples(obs: &crate::topology::Observer, out: &mut Vec<Sample>) {
    use Kind::{Counter as C, Gauge as G};
    let hold = |outcome: &str| vec![("outcome", outcome.to_string())];
    out.extend([
        sample("switchyard_topology_changes_total", C, load(&obs.changes)),
        sample("switchyard_failovers_total", C, load(&obs.failovers)),
        sample(
            "switchyard_write_hold_queue",
            G,
            obs.holding.load(Ordering::Relaxed) as f64,
        ),
        labelled(
            "switchyard_write_holds_total",
            C,
            hold("served"),
            load(&obs.holds_served),
        ),
        labelled(
            "switchyard_write_holds_total",
            C,
            hold("timeout"),
            load(&obs.holds_timed_out),
        ),
    ]);
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
    if let Some(ms) = e.node.lag() {
        out.push(labelled(
            "switchyard_backend_replica_lag_seconds",
            G,
            b(),
            ms as f64 / 1000.0,
        ));
    }
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
        for why in crate::pool::Closed::ALL {
            out.push(labelled(
                "switchyard_pool_connections_closed_total",
                C,
                l(Some(("reason", why.as_str()))),
                load(&p.stats.closed[why as usize]),
            ));
        }
        out.push(labelled(
            "switchyard_pool_lease_waits_total",
            C,
            l(None),
            load(&p.stats.waits),
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
