//! Failure behaviour: backends dying mid-query and mid-transaction (through a cutting TCP
//! forwarder), a client vanishing mid-result. These run one at a time (nextest group).

mod common;

use std::time::Duration;

use common::chaos::{Chaos, Flow};
use common::*;
use mysql_async::prelude::*;
use switchyard::config::Role;

/// A proxy whose backends are `primary` and `standby` addresses (host:port).
async fn proxy_with(primary: String, standby: Option<String>) -> switchyard::app::Running {
    proxy_with_optimistic(primary, standby, false).await
}

async fn proxy_with_optimistic(
    primary: String,
    standby: Option<String>,
    optimistic: bool,
) -> switchyard::app::Running {
    let cfg = config(|c| {
        c.routing.optimistic_transactions = optimistic;
        c.backends.truncate(2);
        let (h, p) = primary.split_once(':').unwrap();
        c.backends[0].host = h.into();
        c.backends[0].port = p.parse().unwrap();
        match standby {
            Some(s) => {
                let (h, p) = s.split_once(':').unwrap();
                c.backends[1].host = h.into();
                c.backends[1].port = p.parse().unwrap();
                c.backends[1].role = Role::Standby;
            }
            None => {
                c.backends.truncate(1);
            }
        }
    });
    start(cfg).await
}

async fn wait_running(p: &switchyard::app::Running, id: u32) {
    for _ in 0..200 {
        if p.shared
            .registry
            .get(id)
            .and_then(|h| *h.running.lock())
            .is_some()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the statement never started on a backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_standby_dies_before_replying_is_retried_elsewhere() {
    let chaos = Chaos::start("127.0.0.12:3306").await;
    let p = proxy_with("127.0.0.11:3306".into(), Some(chaos.address())).await;
    let pid = primary_id().await;
    let mut c = connect(&p, "strict").await;
    let id = c.id();
    let q = tokio::spawn(async move {
        let r: Result<Option<(i64, u32)>, _> = c.query_first("SELECT SLEEP(1), @@server_id").await;
        r
    });
    wait_running(&p, id).await;
    chaos.cut_all();
    let (slept, sid) = q
        .await
        .unwrap()
        .expect("the read succeeded on retry")
        .unwrap();
    assert_eq!(
        (slept, sid),
        (0, pid),
        "retried on the primary, the only other backend"
    );
    assert_eq!(
        p.shared
            .stats
            .read_retries
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_primary_dies_gets_a_clean_error_and_the_session_goes_on() {
    let chaos = Chaos::start("127.0.0.11:3306").await;
    let p = proxy_with(chaos.address(), None).await;
    let mut c = connect(&p, "strict").await;
    let mut bystander = connect(&p, "strict").await;
    let id = c.id();
    let q = tokio::spawn(async move {
        let r = c.query_drop("DO SLEEP(1)").await;
        (r, c)
    });
    wait_running(&p, id).await;
    chaos.cut_all();
    let (r, mut c) = q.await.unwrap();
    let e = r.unwrap_err();
    assert_eq!(code(&e), Some(2013), "{e}");
    let n: u32 = c.query_first("SELECT 3").await.unwrap().unwrap();
    assert_eq!(n, 3, "the same client goes on");
    let n: u32 = bystander.query_first("SELECT 4").await.unwrap().unwrap();
    assert_eq!(n, 4, "others carry on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_lost_with_its_backend_refuses_all_but_rollback() {
    let chaos = Chaos::start("127.0.0.11:3306").await;
    let p = proxy_with(chaos.address(), None).await;
    let mut c = connect(&p, "strict").await;
    let t = table("lost");
    c.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY)"))
        .await
        .unwrap();
    // with replay (the default) a cut connection costs the transaction nothing: it is
    // replayed on a new connection, each reply compared, and goes on
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(format!("INSERT INTO {t} VALUES (10)"))
        .await
        .unwrap();
    chaos.cut_all();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.query_drop(format!("INSERT INTO {t} VALUES (11)"))
        .await
        .expect("replayed, then run");
    c.query_drop("COMMIT").await.unwrap();
    let ids: Vec<u32> = direct(PRIMARY)
        .await
        .query(format!("SELECT id FROM {t} ORDER BY id"))
        .await
        .unwrap();
    assert_eq!(ids, vec![10, 11], "each write once");
    c.query_drop(format!("DELETE FROM {t}")).await.unwrap();
    // without replay: lost, and only ROLLBACK ends it
    let mut off = (**p.shared.limits.load()).clone();
    off.replay = None;
    p.shared.limits.store(std::sync::Arc::new(off));
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(format!("INSERT INTO {t} VALUES (1)"))
        .await
        .unwrap();
    chaos.cut_all();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = c
        .query_drop(format!("INSERT INTO {t} VALUES (2)"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(1213), "transaction lost: {e}");
    let e = c.query_drop("SELECT 1").await.unwrap_err();
    assert_eq!(code(&e), Some(9003), "refused until ROLLBACK: {e}");
    let e = c.query_drop("COMMIT").await.unwrap_err();
    assert_eq!(code(&e), Some(9003), "COMMIT would lie: {e}");
    c.query_drop("ROLLBACK").await.unwrap();
    c.query_drop(format!("INSERT INTO {t} VALUES (3)"))
        .await
        .unwrap();
    let ids: Vec<u32> = direct(PRIMARY)
        .await
        .query(format!("SELECT id FROM {t} ORDER BY id"))
        .await
        .unwrap();
    assert_eq!(
        ids,
        vec![3],
        "nothing of the lost transaction was committed"
    );
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_temporary_tables_end_the_client_connection() {
    let chaos = Chaos::start("127.0.0.11:3306").await;
    let p = proxy_with(chaos.address(), None).await;
    let mut c = connect(&p, "strict").await;
    c.query_drop("CREATE TEMPORARY TABLE tmp_lost (x INT)")
        .await
        .unwrap();
    chaos.cut_all();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = c
        .query_drop("INSERT INTO tmp_lost VALUES (1)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(9004), "{e}");
    assert!(
        c.query_drop("SELECT 1").await.is_err(),
        "the connection was closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_result_never_leaves_a_dirty_connection() {
    let p = proxy_with("127.0.0.11:3306".into(), None).await;
    let marker = format!("sy_gone_{}", std::process::id());
    let mut r = raw::connect(p.listen.port(), "strict", "strict", raw::classic_caps())
        .await
        .unwrap();
    let q = format!("\x03SELECT REPEAT('x', 2000) AS {marker} FROM seq_1_to_2000000");
    r.io.send(0, q.as_bytes()).await.unwrap();
    for _ in 0..50 {
        r.io.read_packet().await.unwrap();
    }
    let running = format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{marker}%' AND INFO NOT LIKE '%PROCESSLIST%'"
    );
    let seen: u32 = direct(PRIMARY)
        .await
        .query_first(running.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, 1, "the big query runs while the client reads");
    drop(r);
    // the query is killed on the server (bounded wait) and the pool holds no dirty connection
    let mut gone = false;
    for _ in 0..100 {
        let mut d = direct(PRIMARY).await;
        let n: u32 = d.query_first(running.as_str()).await.unwrap().unwrap();
        if n == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the abandoned query still runs on the server");
    // the killing connection itself is leased for a moment: wait (bounded) for both to end
    let snap = p.shared.topology.full();
    let pools = p.shared.pools_of(&snap.entries[0].node);
    for _ in 0..100 {
        if pools.in_use_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pools.in_use_count(), 0, "no connection is left leased");
    let mut c = connect(&p, "strict").await;
    for i in 0..5u32 {
        let n: u32 = c.query_first(format!("SELECT {i}")).await.unwrap().unwrap();
        assert_eq!(n, i, "pooled connections answer their own queries");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_refuses_connections_leaves_the_rotation() {
    let chaos = Chaos::start("127.0.0.12:3306").await;
    let p = proxy_with("127.0.0.11:3306".into(), Some(chaos.address())).await;
    let pid = primary_id().await;
    chaos.refuse(true);
    chaos.cut_all();
    let mut c = connect(&p, "strict").await;
    for _ in 0..5 {
        let s: u32 = c
            .query_first("SELECT @@server_id")
            .await
            .expect("reads never fail")
            .unwrap();
        assert_eq!(s, pid, "with the only standby down reads use the primary");
    }
    let mut healthy = true;
    for _ in 0..100 {
        healthy = p.shared.topology.snapshot().entries[1].healthy;
        if !healthy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!healthy, "the health check marked the standby down");
    chaos.refuse(false);
    for _ in 0..100 {
        if p.shared.topology.snapshot().entries[1].healthy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the standby did not come back");
}

/// Stops or starts the SQL thread of a replica (as app, which holds SUPER).
async fn replica_sql_thread(host: &str, run: bool) {
    let q = if run {
        "START SLAVE SQL_THREAD"
    } else {
        "STOP SLAVE SQL_THREAD"
    };
    direct(host).await.query_drop(q).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optimistic_transaction_whose_reads_changed_fails_with_a_retryable_deadlock() {
    let p = proxy_with_optimistic(
        "127.0.0.11:3306".into(),
        Some("127.0.0.12:3306".into()),
        true,
    )
    .await;
    let mut c = connect(&p, "strict").await;
    let t = table("stale");
    c.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY, v INT)"))
        .await
        .unwrap();
    c.query_drop(format!("INSERT INTO {t} VALUES (1, 1)"))
        .await
        .unwrap();
    wait_rows(&t, 1).await;
    // the standby falls behind: what the transaction reads there is stale
    replica_sql_thread(STANDBYS[0], false).await;
    let mut other = direct(PRIMARY).await;
    let (v, r) = with_cleanup(
        async {
            other
                .query_drop(format!("UPDATE {t} SET v = 2 WHERE id = 1"))
                .await
                .unwrap();
            c.query_drop("BEGIN").await.unwrap();
            let v: u32 = c
                .query_first(format!("SELECT v FROM {t} WHERE id = 1"))
                .await
                .unwrap()
                .unwrap();
            let r = c
                .query_drop(format!("UPDATE {t} SET v = {} WHERE id = 1", v + 10))
                .await;
            (v, r)
        },
        replica_sql_thread(STANDBYS[0], true),
    )
    .await;
    assert_eq!(v, 1, "the stale read came from the standby");
    let e = r.unwrap_err();
    assert_eq!(code(&e), Some(1213), "{e}");
    assert_eq!(
        p.shared
            .stats
            .optimistic_failed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // the transaction is over; the session goes on and nothing stale was written
    let on_primary: u32 = other
        .query_first(format!("SELECT v FROM {t} WHERE id = 1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        on_primary, 2,
        "the write based on a stale read never happened"
    );
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_whose_replication_stops_leaves_the_read_rotation_until_it_catches_up() {
    let p = start(config(|c| {
        c.health.max_lag_ms = 5_000;
        c.health.interval_ms = 100;
    }))
    .await;
    let lag_ok = |key: &'static str| {
        move |s: &switchyard::topology::Snapshot| s.entries.iter().any(|e| e.key == key && e.lag_ok)
    };
    wait_topology(&p, "n2 replicating", lag_ok("n2")).await;
    replica_sql_thread(STANDBYS[0], false).await;
    let (ids, n3) = with_cleanup(
        async {
            wait_topology(&p, "n2 out of the rotation", |s| {
                s.entries.iter().any(|e| e.key == "n2" && !e.lag_ok)
            })
            .await;
            let n3 = server_id_of(STANDBYS[1]).await;
            let mut c = connect(&p, "strict").await;
            let mut ids = Vec::new();
            for _ in 0..6 {
                ids.push(
                    c.query_first::<u32, _>("SELECT @@server_id")
                        .await
                        .unwrap()
                        .unwrap(),
                );
            }
            (ids, n3)
        },
        replica_sql_thread(STANDBYS[0], true),
    )
    .await;
    assert!(
        ids.iter().all(|i| *i == n3),
        "reads avoided the stopped replica: {ids:?}"
    );
    wait_topology(&p, "n2 back", lag_ok("n2")).await;
}

fn stat(p: &switchyard::app::Running, f: fn(&switchyard::session::registry::Stats) -> u64) -> u64 {
    f(&p.shared.stats)
}

/// BEGIN and a first read of row 1 of `t` (returned), another client sets it to `new`,
/// and the transaction's connection is cut.
async fn read_changed_cut(
    chaos: &Chaos,
    (c, d): (&mut mysql_async::Conn, &mut mysql_async::Conn),
    t: &str,
    new: i32,
) -> i32 {
    c.query_drop("BEGIN").await.unwrap();
    let v: Option<i32> = c
        .query_first(format!("SELECT v FROM {t} WHERE id = 1"))
        .await
        .unwrap();
    d.query_drop(format!("UPDATE {t} SET v = {new} WHERE id = 1"))
        .await
        .unwrap();
    chaos.cut_all();
    tokio::time::sleep(Duration::from_millis(50)).await;
    v.unwrap()
}

/// A transaction whose first reads changed before its replay (others committed after its
/// snapshot): under REPEATABLE READ it goes on with writes and its COMMIT, a plain read
/// after gets 1213; under READ COMMITTED reads go on; under SERIALIZABLE it is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_whose_first_reads_changed_goes_on_only_where_the_level_allows() {
    use std::sync::atomic::Ordering::Relaxed;
    let chaos = Chaos::start("127.0.0.11:3306").await;
    let p = proxy_with(chaos.address(), None).await;
    let mut c = connect(&p, "strict").await;
    let mut d = direct(PRIMARY).await;
    let t = table("moved");
    d.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, v INT); INSERT INTO {t} VALUES (1, 0), (2, 0)"
    ))
    .await
    .unwrap();
    // REPEATABLE READ (the default): a write and COMMIT go on
    assert_eq!(read_changed_cut(&chaos, (&mut c, &mut d), &t, 5).await, 0);
    c.query_drop(format!("UPDATE {t} SET v = v + 1 WHERE id = 2"))
        .await
        .expect("replayed: the write reads the latest rows, as it would have");
    c.query_drop("COMMIT").await.unwrap();
    assert_eq!(stat(&p, |s| s.replays_moved.load(Relaxed)), 1);
    // ... a plain read after would see the new snapshot: 1213, nothing committed
    assert_eq!(read_changed_cut(&chaos, (&mut c, &mut d), &t, 6).await, 5);
    c.query_drop(format!("UPDATE {t} SET v = v + 1 WHERE id = 2"))
        .await
        .unwrap();
    let e = c
        .query_drop(format!("SELECT v FROM {t} WHERE id = 1"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(1213), "{e}");
    c.query_drop("ROLLBACK").await.unwrap();
    assert_eq!(stat(&p, |s| s.replays_moved_lost.load(Relaxed)), 1);
    let rows: Vec<(i32, i32)> = d
        .query(format!("SELECT id, v FROM {t} ORDER BY id"))
        .await
        .unwrap();
    assert_eq!(rows, [(1, 6), (2, 1)], "the lost transaction left nothing");
    // READ COMMITTED: each statement reads what is committed, reads go on
    c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .unwrap();
    assert_eq!(read_changed_cut(&chaos, (&mut c, &mut d), &t, 7).await, 6);
    let v: i32 = c
        .query_first(format!("SELECT v FROM {t} WHERE id = 1"))
        .await
        .expect("replayed")
        .unwrap();
    assert_eq!(v, 7, "what is committed now");
    c.query_drop("COMMIT").await.unwrap();
    // SERIALIZABLE: reads lock; one that differs is a conflict
    c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        .await
        .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    let _: Option<i32> = c
        .query_first(format!("SELECT v FROM {t} WHERE id = 1"))
        .await
        .unwrap();
    chaos.cut_all(); // its locks go with the connection
    tokio::time::sleep(Duration::from_millis(50)).await;
    d.query_drop(format!("UPDATE {t} SET v = 8 WHERE id = 1"))
        .await
        .unwrap();
    let e = c
        .query_drop(format!("UPDATE {t} SET v = v + 1 WHERE id = 2"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(1213), "{e}");
    c.query_drop("ROLLBACK").await.unwrap();
    d.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

/// Two transactions through the proxy deadlock for real: the server rolls its victim back
/// and the proxy replays it, so neither client sees an error; with replay_deadlocks off the
/// victim gets the server's 1213.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_victim_is_replayed_unseen() {
    use std::sync::atomic::Ordering::Relaxed;
    let p = proxy_with(format!("{PRIMARY}:3306"), None).await;
    let t = table("deadlock");
    let mut d = direct(PRIMARY).await;
    d.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, v INT); INSERT INTO {t} VALUES (1, 0), (2, 0)"
    ))
    .await
    .unwrap();
    for replay in [true, false] {
        let mut on = (**p.shared.limits.load()).clone();
        on.replay_deadlocks = replay;
        p.shared.limits.store(std::sync::Arc::new(on));
        let mut a = connect(&p, "strict").await;
        let mut b = connect(&p, "strict").await;
        for (c, id) in [(&mut a, 1), (&mut b, 2)] {
            c.query_drop("BEGIN").await.unwrap();
            c.query_drop(format!("UPDATE {t} SET v = v + 1 WHERE id = {id}"))
                .await
                .unwrap();
        }
        let cross = |mut c: mysql_async::Conn, id: u32| {
            let sql = format!("UPDATE {t} SET v = v + 1 WHERE id = {id}");
            tokio::spawn(async move {
                let r = c.query_drop(sql).await;
                (r, c)
            })
        };
        let mut ja = cross(a, 2);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut jb = cross(b, 1);
        // whichever finishes first commits, which lets a replayed victim go on
        let mut errors = Vec::new();
        let first = tokio::select! { r = &mut ja => (r, 0), r = &mut jb => (r, 1) };
        let ((r, mut c), which) = (first.0.unwrap(), first.1);
        match r {
            Ok(()) => c.query_drop("COMMIT").await.unwrap(),
            Err(e) => errors.push(code(&e)),
        }
        let other = if which == 0 { jb.await } else { ja.await };
        let (r, mut c) = other.unwrap();
        match r {
            Ok(()) => c.query_drop("COMMIT").await.unwrap(),
            Err(e) => errors.push(code(&e)),
        }
        let rows: Vec<(u32, i32)> = d
            .query(format!("SELECT id, v FROM {t} ORDER BY id"))
            .await
            .unwrap();
        if replay {
            assert!(errors.is_empty(), "no client saw the deadlock: {errors:?}");
            assert_eq!(rows, [(1, 2), (2, 2)], "both transactions, once each");
            assert_eq!(p.shared.stats.deadlocks_replayed.load(Relaxed), 1);
        } else {
            assert_eq!(errors, [Some(1213)], "the victim gets the server's error");
            assert_eq!(rows, [(1, 3), (2, 3)], "the winner committed");
        }
    }
    d.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

/// A replay may lease over the user's connection limit: with one place per user, a client
/// that took the place while the transaction's connection was lost would otherwise make the
/// replay wait for its COMMIT (here: never, the lease times out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_leases_over_the_users_limit_rather_than_wait() {
    let chaos = Chaos::start("127.0.0.11:3306").await;
    let cfg = config(|c| {
        c.backends.truncate(1);
        let (h, port) = chaos
            .address()
            .split_once(':')
            .map(|(h, p)| (h.to_string(), p.parse().unwrap()))
            .unwrap();
        c.backends[0].host = h;
        c.backends[0].port = port;
        c.pool.max_per_user = 1;
        c.pool.min_idle = 0;
        c.pool.lease_timeout_ms = 5000;
    });
    let p = start(cfg).await;
    let t = table("overflow");
    let mut d = direct(PRIMARY).await;
    d.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY)"))
        .await
        .unwrap();
    let mut a = connect(&p, "strict").await;
    let mut b = connect(&p, "strict").await;
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop(format!("INSERT INTO {t} VALUES (1)"))
        .await
        .unwrap();
    // b waits for the only place, which a holds
    let sql = format!("SELECT COUNT(*) FROM {t}");
    let jb = tokio::spawn(async move {
        b.query_drop("BEGIN").await.unwrap();
        let r: Result<Option<u32>, _> = b.query_first(sql).await;
        (r, b)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    chaos.cut_all();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // a's lost connection frees the place, b (queued first) takes it; a's replay goes over
    a.query_drop(format!("INSERT INTO {t} VALUES (2)"))
        .await
        .expect("replayed on a connection over the limit");
    a.query_drop("COMMIT").await.unwrap();
    let (r, mut b) = jb.await.unwrap();
    // b's snapshot is taken at its first read, before or after a's COMMIT: never between
    let seen = r.expect("b's read, once it has the place").unwrap();
    assert!(
        seen == 0 || seen == 2,
        "b saw half of a's transaction: {seen}"
    );
    b.query_drop("COMMIT").await.unwrap();
    let ids: Vec<u32> = d
        .query(format!("SELECT id FROM {t} ORDER BY id"))
        .await
        .unwrap();
    assert_eq!(ids, [1, 2]);
    d.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

const MARKS: &str = "switchyard.commit_marks";

/// A proxy whose one backend is the primary through `chaos`, with or without commit markers.
async fn proxy_marked(chaos: &Chaos, marker: bool) -> switchyard::app::Running {
    let p = proxy_with(chaos.address(), None).await;
    let mut l = (**p.shared.limits.load()).clone();
    l.commit_marker = marker.then(|| MARKS.to_string());
    p.shared.limits.store(std::sync::Arc::new(l));
    p
}

/// A proxy on the primary through a forwarder (with or without commit markers), a new
/// table, a direct connection, and a client in a transaction that inserted row 1.
async fn open_write(
    marker: bool,
    purpose: &str,
) -> (
    Chaos,
    switchyard::app::Running,
    String,
    mysql_async::Conn,
    mysql_async::Conn,
) {
    let chaos = Chaos::start("127.0.0.11:3306").await;
    let p = proxy_marked(&chaos, marker).await;
    let t = table(purpose);
    let mut d = direct(PRIMARY).await;
    d.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY)"))
        .await
        .unwrap();
    let mut c = connect(&p, "strict").await;
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(format!("INSERT INTO {t} VALUES (1)"))
        .await
        .unwrap();
    (chaos, p, t, d, c)
}

/// The ids in `t` on the primary once it holds `n` rows (bounded wait).
async fn ids_once(d: &mut mysql_async::Conn, t: &str, n: usize) -> Vec<u32> {
    let q = format!("SELECT id FROM {t} ORDER BY id");
    for _ in 0..200 {
        let ids: Vec<u32> = d.query(q.as_str()).await.unwrap();
        if ids.len() >= n {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{t} never held {n} rows");
}

/// Runs `sql` on `c` while `chaos` takes the flow to `f` the moment the COMMIT is sent;
/// `then` runs once it has (e.g. waits for the commit on the server), then every
/// connection is cut.
async fn commit_cut<F: std::future::Future<Output = ()>>(
    chaos: &Chaos,
    mut c: mysql_async::Conn,
    f: Flow,
    then: F,
) -> (Result<(), mysql_async::Error>, mysql_async::Conn) {
    chaos.flow_on_sent(b"\x03COMMIT", f);
    let j = tokio::spawn(async move {
        let r = c.query_drop("COMMIT").await;
        (r, c)
    });
    for _ in 0..500 {
        if chaos.flow_now() == f {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(chaos.flow_now(), f, "the COMMIT was never sent");
    then.await;
    chaos.cut_all();
    chaos.flow(Flow::Both);
    j.await.unwrap()
}

async fn marker_rows(d: &mut mysql_async::Conn, p: &switchyard::app::Running, conn: u32) -> u32 {
    let q = format!(
        "SELECT COUNT(*) FROM {MARKS} WHERE instance = {} AND conn = {conn}",
        p.shared.instance
    );
    d.query_first(q).await.unwrap().unwrap()
}

/// A COMMIT whose connection dies after it was sent, with the commit marker: committed,
/// the client gets its OK (not run twice); never reached the server, the transaction is
/// replayed and committed once. The session's end deletes its marker row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_in_flight_is_found_out_by_its_marker() {
    let (chaos, p, t, mut d, c) = open_write(true, "marked").await;
    let id = c.id();
    let (r, mut c) = commit_cut(&chaos, c, Flow::NoReplies, async {
        ids_once(&mut d, &t, 1).await;
    })
    .await;
    r.expect("committed, its reply lost: OK");
    assert_eq!(ids_once(&mut d, &t, 1).await, [1], "committed once");
    assert_eq!(
        stat(&p, |s| s
            .commits_resolved
            .load(std::sync::atomic::Ordering::Relaxed)),
        1
    );
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(format!("INSERT INTO {t} VALUES (2)"))
        .await
        .unwrap();
    let (r, mut c) = commit_cut(&chaos, c, Flow::Nothing, async {}).await;
    r.expect("the COMMIT never arrived: replayed and committed");
    assert_eq!(ids_once(&mut d, &t, 2).await, [1, 2], "each once");
    assert_eq!(
        stat(&p, |s| s
            .commits_resolved
            .load(std::sync::atomic::Ordering::Relaxed)),
        2
    );
    let n: u32 = c.query_first("SELECT 5").await.unwrap().unwrap();
    assert_eq!(n, 5, "the session goes on");
    assert_eq!(marker_rows(&mut d, &p, id).await, 1);
    c.disconnect().await.unwrap();
    let mut gone = false;
    for _ in 0..200 {
        if marker_rows(&mut d, &p, id).await == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "the session's marker row outlived it");
    d.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

/// Without the marker, a COMMIT whose connection dies after it was sent is answered as a
/// server's death would be: 2013, and the connection closes (its outcome is unknown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_in_flight_without_a_marker_is_2013_and_closes() {
    let (chaos, p, t, mut d, c) = open_write(false, "unmarked").await;
    let (r, mut c) = commit_cut(&chaos, c, Flow::NoReplies, async {
        ids_once(&mut d, &t, 1).await;
    })
    .await;
    let e = r.unwrap_err();
    assert_eq!(code(&e), Some(2013), "in doubt: {e}");
    assert!(
        c.query_drop("SELECT 1").await.is_err(),
        "the connection closed"
    );
    assert_eq!(
        stat(&p, |s| s
            .commits_in_doubt
            .load(std::sync::atomic::Ordering::Relaxed)),
        1
    );
    assert_eq!(
        ids_once(&mut d, &t, 1).await,
        [1],
        "committed once, never replayed"
    );
    d.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

/// A standby that stops answering without closing anything (a frozen server, SIGSTOP):
/// a read waiting on it, a connect checking its schema there and a read that would wait
/// for the session's write there are given up once the probes take it out of health, and
/// run elsewhere; nothing fails. It comes back when it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_standby_costs_a_pause_not_a_failed_read() {
    let chaos = Chaos::start("127.0.0.12:3306").await;
    let (h, port) = chaos
        .address()
        .split_once(':')
        .map(|(h, p)| (h.to_string(), p.parse().unwrap()))
        .unwrap();
    let cfg = config(|c| {
        c.backends.truncate(2);
        c.backends[1].host = h;
        c.backends[1].port = port;
        c.backends[1].role = Role::Standby;
        c.health.interval_ms = 100;
        c.health.timeout_ms = 500;
    });
    let p = start(cfg).await;
    let pid = primary_id().await;
    let sid = server_id_of(STANDBYS[0]).await;
    let mut c = connect(&p, "strict").await;
    let id: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
    assert_eq!(id, sid, "reads go to the standby while it answers");
    let mut e = connect(&p, "strict").await;
    e.query_drop("SELECT 1").await.unwrap(); // its connection is idle on the standby
    chaos.flow(Flow::Nothing);
    let bounded = Duration::from_secs(20);
    // a text read and a prepared statement (its COM_STMT_PREPARE) both meet the frozen
    // standby before the probes notice
    let (read, prepared) = tokio::join!(
        tokio::time::timeout(bounded, c.query_first::<u32, _>("SELECT @@server_id")),
        tokio::time::timeout(
            bounded,
            e.exec_first::<u32, _, _>("SELECT @@server_id + ?", (0,))
        ),
    );
    let id = read
        .expect("the read was given up on the frozen standby")
        .expect("and run elsewhere")
        .unwrap();
    assert_eq!(id, pid, "run on the primary, the only one left");
    let id = prepared
        .expect("the prepare was given up on the frozen standby")
        .expect("and run elsewhere")
        .unwrap();
    assert_eq!(id, pid, "prepared and run on the primary");
    assert!(
        stat(&p, |s| s
            .read_retries
            .load(std::sync::atomic::Ordering::Relaxed))
            >= 1
    );
    // while frozen: new clients (their schema checked at connect) are served
    let mut d = tokio::time::timeout(bounded, connect(&p, "strict"))
        .await
        .expect("a client connects while the standby is frozen");
    let one: u32 = d.query_first("SELECT 1").await.unwrap().unwrap();
    assert_eq!(one, 1);
    chaos.flow(Flow::Both);
    wait_topology(&p, "the standby back in health", |s| {
        s.entries.iter().any(|e| e.key == "n2" && e.healthy)
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            c.query_first::<u32, _>("SELECT @@server_id")
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(ids.contains(&sid), "back in the read rotation: {ids:?}");
}
