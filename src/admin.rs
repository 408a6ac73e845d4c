//! Admin HTTP: /healthz, /readyz, /status, /sessions. Reads shared handles; the drain
//! endpoints send updates to the topology owner.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::session::Shared;

/// Read-only endpoints answer anyone who reaches the admin port; the mutating ones need
/// the configured bearer token, or come from loopback when none is set.
pub fn router(shared: Arc<Shared>) -> Router {
    let mutating = Router::new()
        .route("/digests/reset", axum::routing::post(reset_digests))
        .route("/backends/{name}/drain", axum::routing::post(drain))
        .route("/backends/{name}/undrain", axum::routing::post(undrain))
        .route_layer(axum::middleware::from_fn_with_state(shared.clone(), guard));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/sessions", get(sessions))
        .route("/metrics", get(metrics))
        .route("/digests", get(digests))
        .merge(mutating)
        .with_state(shared)
}

/// The admin token, or loopback when there is none.
async fn guard(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let token = s.admin_token.load_full();
    let allowed = match token.as_ref() {
        Some(t) => req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.as_bytes(), t.expose().as_bytes())),
        None => peer.ip().is_loopback(),
    };
    if !allowed {
        tracing::warn!(%peer, path = %req.uri().path(), "admin request refused");
        let why = if token.is_some() {
            (StatusCode::UNAUTHORIZED, "a bearer token is required\n")
        } else {
            (
                StatusCode::FORBIDDEN,
                "only from loopback without [admin] token\n",
            )
        };
        return why.into_response();
    }
    next.run(req).await
}

/// Compares in time that does not depend on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn readyz(State(s): State<Arc<Shared>>) -> (StatusCode, String) {
    let snap = s.topology.snapshot();
    let unready = |why: String| (StatusCode::SERVICE_UNAVAILABLE, why);
    if *s.draining.borrow() || s.unready.load(Ordering::Relaxed) {
        unready("shutting down\n".into())
    } else if let Some(e) = &snap.discovery_error {
        unready(format!("kubernetes discovery: {e}\n"))
    } else if snap.ready() {
        (StatusCode::OK, "ready\n".into())
    } else {
        unready("waiting for the first health check of every backend\n".into())
    }
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(
    State(s): State<Arc<Shared>>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let text = s.metrics.render(&crate::metrics::scrape(&s));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
}

/// `GET /digests`: the query digests, the most frequent first.
async fn digests(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "digests": s.digests.list() }))
}

/// `POST /digests/reset`: clears them.
async fn reset_digests(State(s): State<Arc<Shared>>) -> &'static str {
    s.digests.reset();
    "reset\n"
}

/// `GET /sessions`: every client session: its proxy id (the one KILL takes), user, client
/// address, schema, state, pins, the backend connection it holds or runs on (name and
/// thread id, as the backend's SHOW PROCESSLIST names it), and the command running now.
async fn sessions(State(s): State<Arc<Shared>>) -> Json<Value> {
    let snap = s.topology.snapshot();
    let name = |id: usize| snap.node(id).map(|e| e.node.name.clone());
    let list: Vec<Value> = s
        .registry
        .all()
        .iter()
        .map(|h| {
            let v = h.view.lock().clone();
            let running = *h.running.lock();
            let backend = running.map(|r| (r.node, r.thread_id)).or(v.held);
            let state = match (v.since, v.in_transaction, v.pins.is_empty()) {
                (Some(_), _, _) => "running",
                (None, true, _) => "in transaction",
                (None, false, false) => "pinned",
                (None, false, true) => "idle",
            };
            json!({
                "id": h.id,
                "user": *h.user.lock(),
                "client": h.client,
                "tls": h.tls,
                "schema": v.schema,
                "state": state,
                "pins": v.pins,
                "backend": backend.and_then(|(n, _)| name(n)),
                "backend_thread_id": backend.map(|(_, t)| t),
                "statement": v.since.map(|_| String::from_utf8_lossy(&v.statement[..v.statement_len]).into_owned()),
                "statement_ms": v.since.map(|t| t.elapsed().as_millis() as u64),
            })
        })
        .collect();
    Json(json!({ "sessions": list }))
}

/// Drains a backend by hand (like ProxySQL's OFFLINE_SOFT): no new leases, work in
/// flight finishes. The topology owner applies it.
async fn drain(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> (StatusCode, String) {
    set_drain(&s, &name, true).await
}

async fn undrain(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> (StatusCode, String) {
    set_drain(&s, &name, false).await
}

async fn set_drain(s: &Shared, name: &str, on: bool) -> (StatusCode, String) {
    if !s.topology.drain(name, on).await {
        return (StatusCode::NOT_FOUND, format!("no backend named {name}\n"));
    }
    let verb = if on { "draining" } else { "serving" };
    (StatusCode::OK, format!("{name}: {verb}\n"))
}

async fn status(State(s): State<Arc<Shared>>) -> Json<Value> {
    let snap = s.topology.full();
    let backends: Vec<Value> = snap
        .entries
        .iter()
        .map(|e| {
            let pools: Vec<Value> = s
                .pools_of(&e.node)
                .user_pools()
                .iter()
                .map(|p| {
                    json!({
                        "user": p.user,
                        "class": p.class.name(),
                        "idle": p.idle_len(),
                        "in_use": p.stats.in_use.load(Ordering::Relaxed),
                        "opened": p.stats.opened.load(Ordering::Relaxed),
                        "closed": p.stats.closed_total(),
                        "leases": p.stats.leases.load(Ordering::Relaxed),
                        "lease_timeouts": p.stats.timeouts.load(Ordering::Relaxed),
                    })
                })
                .collect();
            json!({
                "name": e.node.name,
                "address": e.node.address,
                "role": e.role.map_or("unknown", |r| r.as_str()),
                "configured_role": e.configured.as_str(),
                "epoch": e.epoch,
                "lag_ok": e.lag_ok,
                "lag_ms": e.node.lag(),
                "drained": e.drained,
                "healthy": e.healthy,
                "checked": e.checked,
                "last_error": e.last_error,
                "outstanding": e.node.outstanding.load(Ordering::Relaxed),
                "pools": pools,
            })
        })
        .collect();
    let st = &s.stats;
    let pins = st.pins.lock().clone();
    Json(json!({
        "backends": backends,
        "topology_version": snap.version,
        "discovery_error": snap.discovery_error,
        "sessions": s.registry.len(),
        "config_version": s.config_version.load(Ordering::Relaxed),
        "pins": pins,
        "queries": st.queries.load(Ordering::Relaxed),
        "standby_reads": st.standby_reads.load(Ordering::Relaxed),
        "primary_statements": st.primary_statements.load(Ordering::Relaxed),
        "read_retries": st.read_retries.load(Ordering::Relaxed),
        "reroutes": st.reroutes.load(Ordering::Relaxed),
        "optimistic_moved": st.optimistic_moved.load(Ordering::Relaxed),
        "optimistic_failed": st.optimistic_failed.load(Ordering::Relaxed),
        "causal_waits": st.causal_waits.load(Ordering::Relaxed),
        "causal_fallbacks": st.causal_fallbacks.load(Ordering::Relaxed),
        "auth_failures": st.auth_failures.load(Ordering::Relaxed),
        "rejected_connections": st.rejected_connections.load(Ordering::Relaxed),
        "transaction_replays": st.replays.load(Ordering::Relaxed),
        "transaction_replays_failed": st.replays_failed.load(Ordering::Relaxed),
        "transaction_replays_moved": st.replays_moved.load(Ordering::Relaxed),
        "transaction_replays_moved_then_lost": st.replays_moved_lost.load(Ordering::Relaxed),
        "deadlocks_replayed": st.deadlocks_replayed.load(Ordering::Relaxed),
        "commits_in_doubt": st.commits_in_doubt.load(Ordering::Relaxed),
    }))
}
