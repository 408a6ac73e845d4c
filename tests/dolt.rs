//! Dolt's own behaviour, against the Dolt stand-in (tests/common/dolt.rs): the role
//! probe with its epoch, the epoch rule for two primaries, the re-route of a write refused
//! with Dolt's read-only error, killed connections on a role change, and no
//! COM_CHANGE_USER on the server.

mod common;

use std::time::Duration;

use common::dolt::Dolt;
use common::*;
use mysql_async::prelude::*;
use switchyard::config::{BackendKind, Role};

/// A proxy over two stand-ins with roles left to the probes.
async fn proxy(a: &Dolt, b: &Dolt, hold_ms: u64) -> switchyard::app::Running {
    proxy_with(a, b, hold_ms, |_| {}).await
}

async fn proxy_with(
    a: &Dolt,
    b: &Dolt,
    hold_ms: u64,
    tweak: impl FnOnce(&mut switchyard::config::Config),
) -> switchyard::app::Running {
    let (aa, ba) = (a.port, b.port);
    let cfg = config(|c| {
        c.backends.truncate(2);
        for (be, port) in c.backends.iter_mut().zip([aa, ba]) {
            be.host = "127.0.0.1".into();
            be.port = port;
            be.role = Role::Auto;
        }
        c.topology.kind = BackendKind::Dolt;
        c.topology.write_hold_ms = hold_ms;
        c.health.fast_interval_ms = 5;
        c.server.server_version = "8.0.33-dolt".into();
        tweak(c);
    });
    start(cfg).await
}

fn primary_is(p: &switchyard::app::Running, key: &str) -> bool {
    primary_key(&p.shared.topology.full()).as_deref() == Some(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_reads_dolt_roles_and_the_higher_epoch_wins() {
    let a = Dolt::start("primary", 1).await;
    let b = Dolt::start("standby", 1).await;
    let p = proxy(&a, &b, 300).await;
    wait_topology(&p, "n1 primary by its dolt_cluster_role", |_| {
        primary_is(&p, "n1")
    })
    .await;
    let mut c = connect(&p, "app").await;
    c.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    assert_eq!(a.writes.load(std::sync::atomic::Ordering::Relaxed), 1);
    // both claim primary: the higher epoch is trusted
    b.set_role_quietly("primary", 2);
    wait_topology(&p, "n2 primary by epoch", |_| primary_is(&p, "n2")).await;
    c.query_drop("INSERT INTO t VALUES (2)").await.unwrap();
    assert_eq!(
        b.writes.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "writes follow the higher epoch"
    );
    // the same epoch on both: it cannot be told, so no writes at all
    a.set_role_quietly("primary", 2);
    wait_topology(&p, "no primary with equal epochs", |s| {
        s.primary().is_none()
    })
    .await;
    let e = c.query_drop("INSERT INTO t VALUES (3)").await.unwrap_err();
    assert_eq!(
        code(&e),
        Some(9002),
        "after the write hold: a clear error, {e}"
    );
    assert_eq!(
        a.writes.load(std::sync::atomic::Ordering::Relaxed)
            + b.writes.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // the metrics saw it: one failover (n1 -> n2), one write that waited and timed out
    let obs = &p.shared.topology.observer;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load(&obs.failovers), 1);
    assert_eq!(
        (load(&obs.holds_served), load(&obs.holds_timed_out)),
        (0, 1)
    );
    assert_eq!(obs.holding.load(std::sync::atomic::Ordering::Relaxed), 0);
    // a primary again, while a write waits for it: served, and the time without one seen
    // (a hold long enough for a loaded machine; the wait is for the write to be held)
    let mut l = (**p.shared.limits.load()).clone();
    l.write_hold = Duration::from_secs(10);
    p.shared.limits.store(std::sync::Arc::new(l));
    let writer =
        tokio::spawn(async move { c.query_drop("INSERT INTO t VALUES (4)").await.map(|_| c) });
    for _ in 0..500 {
        if obs.holding.load(std::sync::atomic::Ordering::Relaxed) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(obs.holding.load(std::sync::atomic::Ordering::Relaxed), 1);
    b.set_role_quietly("primary", 3);
    writer
        .await
        .unwrap()
        .expect("held, then run on the new primary");
    assert_eq!(
        (load(&obs.holds_served), load(&obs.holds_timed_out)),
        (1, 1)
    );
    let text = p
        .shared
        .metrics
        .render(&switchyard::metrics::scrape(&p.shared));
    assert!(
        text.contains("switchyard_failover_hold_seconds_count 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_as_read_only_runs_on_the_true_primary() {
    let a = Dolt::start("primary", 1).await;
    let b = Dolt::start("standby", 1).await;
    // no periodic probe may see the roles move before the write does (the first probe at
    // start and those a refusal asks for still run)
    let p = proxy_with(&a, &b, 5000, |c| c.health.interval_ms = 60_000).await;
    wait_topology(&p, "n1 primary", |_| primary_is(&p, "n1")).await;
    let mut c = connect(&p, "app").await;
    c.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    // the roles move without the proxy having probed yet: its next write meets Dolt's error
    a.set_role_quietly("standby", 2);
    b.set_role_quietly("primary", 2);
    c.query_drop("INSERT INTO t VALUES (2)")
        .await
        .expect("re-routed, not returned");
    assert_eq!(
        b.writes.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the write landed on the true primary"
    );
    assert!(
        p.shared
            .stats
            .reroutes
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    // inside a transaction the refusal is never relayed: the transaction is replayed on
    // the true primary (its BEGIN), then the write runs there
    c.query_drop("BEGIN").await.unwrap();
    b.set_role_quietly("standby", 3);
    a.set_role_quietly("primary", 3);
    let a_before = a.writes.load(std::sync::atomic::Ordering::Relaxed);
    c.query_drop("INSERT INTO t VALUES (3)")
        .await
        .expect("replayed on the true primary, not refused");
    c.query_drop("COMMIT").await.unwrap();
    assert_eq!(
        a.writes.load(std::sync::atomic::Ordering::Relaxed),
        a_before + 1,
        "the write landed on the new primary"
    );
    let replays = &p.shared.stats.replays;
    assert_eq!(replays.load(std::sync::atomic::Ordering::Relaxed), 1);
    // with replay off, the transaction is lost (1213), never the raw refusal
    let mut off = (**p.shared.limits.load()).clone();
    off.replay = None;
    p.shared.limits.store(std::sync::Arc::new(off));
    c.query_drop("BEGIN").await.unwrap();
    a.set_role_quietly("standby", 4);
    b.set_role_quietly("primary", 4);
    let e = c.query_drop("INSERT INTO t VALUES (4)").await.unwrap_err();
    assert_eq!(code(&e), Some(1213), "{e}");
    c.query_drop("ROLLBACK").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_on_a_role_change_are_replaced_unseen() {
    let a = Dolt::start("primary", 1).await;
    let b = Dolt::start("standby", 1).await;
    let p = proxy(&a, &b, 5000).await;
    wait_topology(&p, "n1 primary", |_| primary_is(&p, "n1")).await;
    let mut c = connect(&p, "app").await;
    for i in 0..5 {
        c.query_drop(format!("INSERT INTO t VALUES ({i})"))
            .await
            .unwrap();
    }
    let before = a.connections.load(std::sync::atomic::Ordering::Relaxed);
    // Dolt kills every connection on a role change; the role stays, the pool must recover
    a.set_role_and_settle("primary", 1).await;
    for i in 5..10 {
        c.query_drop(format!("INSERT INTO t VALUES ({i})"))
            .await
            .expect("the client never sees the kill");
    }
    assert_eq!(a.writes.load(std::sync::atomic::Ordering::Relaxed), 10);
    assert!(
        a.connections.load(std::sync::atomic::Ordering::Relaxed) > before,
        "new connections replaced the killed ones"
    );
    // a real failover: the old primary steps down, the new one up, both kill their connections
    // (a write racing the kill itself, before its FIN arrives, is not retried: it may have run)
    a.set_role_and_settle("standby", 2).await;
    b.set_role_and_settle("primary", 2).await;
    c.query_drop("INSERT INTO t VALUES (99)")
        .await
        .expect("held, then run on the new primary");
    assert_eq!(b.writes.load(std::sync::atomic::Ordering::Relaxed), 1);
    // a transaction in flight when Dolt kills its connection on a role change: replayed
    // on the new primary (its write again: the killed one was rolled back), then goes on
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (100)").await.unwrap();
    b.set_role_and_settle("standby", 3).await;
    a.set_role_and_settle("primary", 3).await;
    let a_before = a.writes.load(std::sync::atomic::Ordering::Relaxed);
    c.query_drop("INSERT INTO t VALUES (101)")
        .await
        .expect("the transaction survives the kill");
    c.query_drop("COMMIT").await.unwrap();
    assert_eq!(
        a.writes.load(std::sync::atomic::Ordering::Relaxed),
        a_before + 2,
        "both writes of the transaction ran on the new primary"
    );
    assert!(
        p.shared
            .stats
            .replays
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_works_although_dolt_lacks_it() {
    let a = Dolt::start("primary", 1).await;
    let b = Dolt::start("standby", 1).await;
    let p = proxy(&a, &b, 1000).await;
    wait_topology(&p, "n1 primary", |_| primary_is(&p, "n1")).await;
    let mut raw = common::raw::connect(p.listen.port(), "app", "app", common::raw::classic_caps())
        .await
        .unwrap();
    let reply = raw.command(b"\x11nope", |_, _| true).await;
    // COM_CHANGE_USER never reaches Dolt: the proxy answers it (here: bad packet, refused)
    assert_eq!(reply[0][0], 0xFF);
    let mut c = connect(&p, "app").await;
    c.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("strict".into()))
            .with_pass(Some("strict".into())),
    )
    .await
    .expect("re-authenticated by the proxy");
    c.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
}

/// Dolt reports no GTIDs, so read-your-writes falls back to a window: after a write, the
/// session's next statements stay on the primary for `routing.read_your_writes_ms`, the
/// SET-like ones too (`USE db/branch` of a branch the session just made with
/// `CALL dolt_branch`, which a standby may not have yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_gtids_a_write_keeps_the_sessions_next_statements_on_the_primary() {
    use std::sync::atomic::Ordering::Relaxed;
    let a = Dolt::start("primary", 1).await;
    let b = Dolt::start("standby", 1).await;
    let p = proxy(&a, &b, 300).await;
    wait_topology(&p, "n1 primary, n2 standby", |s| {
        primary_is(&p, "n1") && s.standby(None, 0).is_some()
    })
    .await;
    // a window no stall on a loaded machine outlasts
    let mut l = (**p.shared.limits.load()).clone();
    l.read_your_writes = Some(Duration::from_secs(60));
    p.shared.limits.store(std::sync::Arc::new(l));
    let mut c = connect(&p, "app").await;
    let stats = &p.shared.stats;
    let standby0 = stats.standby_reads.load(Relaxed);
    c.query_drop("USE sbtest").await.unwrap();
    assert_eq!(
        stats.standby_reads.load(Relaxed) - standby0,
        1,
        "before any write a USE runs on a standby"
    );
    c.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let (standby1, primary1) = (
        stats.standby_reads.load(Relaxed),
        stats.primary_statements.load(Relaxed),
    );
    c.query_drop("USE sbtest").await.unwrap();
    c.query_drop("SELECT 1").await.unwrap();
    assert_eq!(
        (
            stats.standby_reads.load(Relaxed) - standby1,
            stats.primary_statements.load(Relaxed) - primary1
        ),
        (0, 2),
        "right after the write both run on the primary"
    );
}

/// Dolt has no session-state tracking, so switchyard cannot see what a procedure left on
/// a connection (variables, temp tables): after a CALL the connection is reset before it
/// goes back to the pool, and after a plain write it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_dolt_resets_its_connection_before_pooling() {
    use std::sync::atomic::Ordering::Relaxed;
    let a = Dolt::start("primary", 1).await;
    let b = Dolt::start("standby", 1).await;
    let p = proxy(&a, &b, 300).await;
    wait_topology(&p, "n1 primary", |_| primary_is(&p, "n1")).await;
    let mut c = connect(&p, "app").await;
    c.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let before = a.resets.load(Relaxed);
    c.query_drop("CALL dolt_add('.')").await.unwrap();
    // the reset follows the reply the client already has: wait for it (bounded)
    for _ in 0..200 {
        if a.resets.load(Relaxed) > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(a.resets.load(Relaxed) - before, 1, "reset after the CALL");
    c.query_drop("INSERT INTO t VALUES (2)").await.unwrap();
    assert_eq!(
        a.resets.load(Relaxed) - before,
        1,
        "not after a plain write"
    );
}
