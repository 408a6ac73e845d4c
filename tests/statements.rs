//! Prepared statements across pooled backends, big packets, COM_CHANGE_USER,
//! COM_RESET_CONNECTION, KILL, and the errors switchyard returns itself.

mod common;

use common::*;
use mysql_async::prelude::*;
use mysql_async::{ChangeUserOpts, Conn, Opts, OptsBuilder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_run_on_any_backend_with_their_types() {
    let p = start(config(|c| c.pool.statement_cache = 4)).await;
    let pid = primary_id().await;
    let mut c = connect(&p, "strict").await;
    let t = table("ps");
    c.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, s VARCHAR(20), d DOUBLE)"
    ))
    .await
    .unwrap();
    let ins = c
        .prep(format!("INSERT INTO {t} VALUES (?, ?, ?)"))
        .await
        .unwrap();
    for i in 0..20 {
        c.exec_drop(&ins, (i, format!("row{i}"), f64::from(i) / 2.0))
            .await
            .unwrap();
    }
    wait_rows(&t, 20).await;
    let sel = c
        .prep(format!("SELECT s, d, @@server_id FROM {t} WHERE id = ?"))
        .await
        .unwrap();
    let mut servers = std::collections::HashSet::new();
    for i in 0..20 {
        let (s, d, sid): (String, f64, u32) = c.exec_first(&sel, (i,)).await.unwrap().unwrap();
        assert_eq!((s, d), (format!("row{i}"), f64::from(i) / 2.0));
        servers.insert(sid);
    }
    assert!(
        !servers.contains(&pid),
        "prepared reads ran on the primary: {servers:?}"
    );
    // more distinct statements than each backend connection's cache holds (4)
    for round in 0..2 {
        for k in 0..12 {
            let q = format!("SELECT id + {k}, ? FROM {t} WHERE id = 3");
            let (a, b): (i64, String) = c
                .exec_first(q, (format!("r{round}"),))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((a, b), (3 + k, format!("r{round}")));
        }
    }
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mib_blob_goes_through_both_ways() {
    let p = start_default().await;
    let mut c = connect(&p, "app").await;
    let t = table("blob");
    c.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY, b LONGBLOB)"))
        .await
        .unwrap();
    let blob: Vec<u8> = (0..20 * 1024 * 1024)
        .map(|i: u32| (i % 251) as u8)
        .collect();
    c.exec_drop(format!("INSERT INTO {t} VALUES (1, ?)"), (blob.clone(),))
        .await
        .unwrap();
    let back: Vec<u8> = c
        .query_first(format!("SELECT b FROM {t} WHERE id = 1 FOR UPDATE"))
        .await
        .unwrap()
        .unwrap();
    assert!(back == blob, "text protocol: {} bytes back", back.len());
    let back: Vec<u8> = c
        .exec_first(format!("SELECT b FROM {t} WHERE id = ? FOR UPDATE"), (1,))
        .await
        .unwrap()
        .unwrap();
    assert!(back == blob, "binary protocol: {} bytes back", back.len());
    let n: u32 = c.query_first("SELECT 7").await.unwrap().unwrap();
    assert_eq!(n, 7);
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_reauthenticates_in_the_proxy() {
    let p = start_default().await;
    let mut c = connect(&p, "strict").await;
    c.query_drop("SET @x = 1").await.unwrap();
    c.change_user(
        ChangeUserOpts::default()
            .with_user(Some("app".into()))
            .with_pass(Some("app".into())),
    )
    .await
    .unwrap();
    let (u, x): (String, Option<i64>) = c
        .query_first("SELECT CURRENT_USER(), @x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((u.as_str(), x), ("app@%", None), "new user, fresh session");
    let bad = c
        .change_user(
            ChangeUserOpts::default()
                .with_user(Some("app".into()))
                .with_pass(Some("nope".into())),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&bad), Some(1045), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connection_clears_the_session_and_unpins_it() {
    let p = start_default().await;
    let pid = primary_id().await;
    let mut c = connect(&p, "strict").await;
    c.query_drop("SET @x = 1").await.unwrap();
    c.query_drop("SET SESSION time_zone = '+05:00'")
        .await
        .unwrap();
    let s: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
    assert_eq!(s, pid, "pinned by the user variable");
    assert!(c.reset().await.unwrap(), "COM_RESET_CONNECTION used");
    let (x, tz): (Option<i64>, String) = c
        .query_first("SELECT @x, @@time_zone")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((x, tz.as_str()), (None, "SYSTEM"));
    let s: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
    assert_ne!(s, pid, "no longer pinned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_query_maps_proxy_ids_to_the_right_backend_thread() {
    let p = start_default().await;
    let mut victim = connect(&p, "strict").await;
    let mut killer = connect(&p, "strict").await;
    let id = victim.id();
    let sleeper = tokio::spawn(async move {
        let r: Result<Option<i64>, _> = victim.query_first("SELECT SLEEP(30)").await;
        (r, victim)
    });
    // bounded wait until the victim's query runs on a backend
    let mut running = false;
    for _ in 0..500 {
        running = p
            .shared
            .registry
            .get(id)
            .and_then(|h| *h.running.lock())
            .is_some();
        if running {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(running, "the victim's SLEEP never started");
    let seen: u32 = killer
        .query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        seen,
        killer.id(),
        "CONNECTION_ID() is switchyard's id, the one KILL takes"
    );
    killer.query_drop(format!("KILL QUERY {id}")).await.unwrap();
    let (r, mut victim) = tokio::time::timeout(std::time::Duration::from_secs(20), sleeper)
        .await
        .unwrap()
        .unwrap();
    // MariaDB answers a killed SLEEP with 1 (interrupted) or error 1317
    match r {
        Ok(v) => assert_eq!(v, Some(1), "SLEEP was interrupted"),
        Err(e) => assert_eq!(code(&e), Some(1317), "{e}"),
    }
    let n: u32 = victim.query_first("SELECT 5").await.unwrap().unwrap();
    assert_eq!(n, 5, "the victim's session carries on");
    let e = killer.query_drop("KILL QUERY 999999").await.unwrap_err();
    assert_eq!(code(&e), Some(1094));
    let mut other_user = connect(&p, "app").await;
    let e = other_user
        .query_drop(format!("KILL {id}"))
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        Some(1095),
        "another user's session cannot be killed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_get_1045_and_are_counted() {
    let p = start_default().await;
    let bad: Opts = OptsBuilder::from_opts(opts(&p, "strict"))
        .pass(Some("wrong"))
        .into();
    let e = Conn::new(bad).await.unwrap_err();
    assert_eq!(code(&e), Some(1045), "{e}");
    let nobody: Opts = OptsBuilder::from_opts(opts(&p, "strict"))
        .user(Some("nobody"))
        .into();
    let e = Conn::new(nobody).await.unwrap_err();
    assert_eq!(code(&e), Some(1045), "{e}");
    let n = p
        .shared
        .stats
        .auth_failures
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(n, 2);
    // the proxy still serves others
    let mut c = connect(&p, "strict").await;
    let one: u32 = c.query_first("SELECT 1").await.unwrap().unwrap();
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_commands_unknown_command_field_list_statistics_and_classic_eofs() {
    let p = start_default().await;
    let mut r = raw::connect(p.listen.port(), "strict", "strict", raw::classic_caps())
        .await
        .unwrap();
    let reply = r.command(&[0x1d], |_, _| true).await; // COM_DAEMON: not a client command
    let e = switchyard::protocol::messages::parse_err(&reply[0]).unwrap();
    assert_eq!((e.code, &e.state), (1047, b"08S01"));
    let stats = r.command(&[0x09], |_, _| true).await;
    assert!(
        String::from_utf8_lossy(&stats[0]).contains("Uptime"),
        "COM_STATISTICS"
    );
    // a classic client gets EOF after the column definitions and at the end
    let rs = r.query_classic("SELECT 1 AS a, 2 AS b").await;
    assert_eq!(rs.len(), 6, "count, 2 columns, EOF, row, EOF: {rs:?}");
    assert_eq!((rs[3][0], rs[3].len()), (0xFE, 5));
    assert_eq!((rs[5][0], rs[5].len()), (0xFE, 5));
    let t = table("fl");
    let ok = r
        .query_classic(&format!("CREATE TABLE {t} (a INT, b TEXT)"))
        .await;
    assert_eq!(ok[0][0], 0);
    let mut fl = vec![0x04];
    fl.extend_from_slice(t.as_bytes());
    fl.push(0);
    let cols = r.command(&fl, |pk, _| pk[0] == 0xFE || pk[0] == 0xFF).await;
    // the table may not have reached a standby yet: an ERR is a fine answer then
    if cols.last().unwrap()[0] == 0xFE {
        assert_eq!(cols.len(), 3, "two columns and an EOF: {cols:?}");
    }
    let ok = r.query_classic(&format!("DROP TABLE {t}")).await;
    assert_eq!(ok[0][0], 0);
    // a non-UTF-8 query is answered
    let mut q = b"\x03SELECT HEX(_binary'".to_vec();
    q.extend_from_slice(&[0xFF, 0xFE, 0x80]);
    q.extend_from_slice(b"')");
    let eofs = std::cell::Cell::new(0);
    let rs = r
        .command(&q, |pk, _| {
            eofs.set(eofs.get() + usize::from(pk[0] == 0xFE));
            pk[0] == 0xFF || eofs.get() == 2
        })
        .await;
    assert_eq!(&rs[3][..], b"\x06FFFE80", "{rs:?}");
}

/// Affected rows of an OK reply.
fn affected(reply: &[Vec<u8>]) -> u64 {
    switchyard::protocol::messages::parse_ok(&reply[0])
        .expect("OK")
        .affected_rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_found_rows_is_honoured_per_client() {
    use switchyard::protocol::{client_capabilities, CapabilityFlags};
    let p = start_default().await;
    let port = p.listen.port();
    let t = table("found");
    let mut with = raw::connect(port, "strict", "strict", client_capabilities())
        .await
        .unwrap();
    let without_caps = client_capabilities() - CapabilityFlags::CLIENT_FOUND_ROWS;
    let mut without = raw::connect(port, "strict", "strict", without_caps)
        .await
        .unwrap();
    with.query_classic(&format!("CREATE TABLE {t} (id INT PRIMARY KEY, v INT)"))
        .await;
    with.query_classic(&format!("INSERT INTO {t} VALUES (1, 5)"))
        .await;
    let same = format!("UPDATE {t} SET v = 5 WHERE id = 1");
    assert_eq!(
        affected(&with.query_classic(&same).await),
        1,
        "FOUND_ROWS: matched rows"
    );
    assert_eq!(
        affected(&without.query_classic(&same).await),
        0,
        "no FOUND_ROWS: changed rows"
    );
    with.query_classic(&format!("DROP TABLE {t}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_the_limit_get_1040_and_slow_handshakes_are_closed() {
    let p = start(config(|c| {
        c.server.max_client_connections = 2;
        c.server.handshake_timeout_ms = 2000;
    }))
    .await;
    let port = p.listen.port();
    let a = raw::connect(port, "strict", "strict", raw::classic_caps())
        .await
        .unwrap();
    let b = raw::connect(port, "strict", "strict", raw::classic_caps())
        .await
        .unwrap();
    let err = raw::connect(port, "strict", "strict", raw::classic_caps())
        .await
        .err()
        .expect("refused");
    let e = switchyard::protocol::messages::parse_err(&err).unwrap();
    assert_eq!((e.code, &e.state), (1040, b"08004"));
    drop((a, b));
    // a client that connects and never answers the greeting is closed after the timeout
    let mut idle = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        use tokio::io::AsyncReadExt;
        let n = s.read(&mut buf).await.unwrap();
        if buf.get(4) == Some(&10) && n > 4 {
            idle = Some(s); // a greeting: the slot was free
            break;
        }
    }
    let mut s = idle.expect("a free slot after the two clients left");
    let mut buf = [0u8; 64];
    use tokio::io::AsyncReadExt;
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the silent client was closed: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_data_local_infile_goes_through() {
    let p = start_default().await;
    let t = table("infile");
    let file = std::env::temp_dir().join(format!("{t}.tsv"));
    std::fs::write(
        &file,
        (1..=500)
            .map(|i| format!("{i}\tv{i}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let sql = format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, s VARCHAR(10)); \
         LOAD DATA LOCAL INFILE '{}' INTO TABLE {t}; \
         SELECT COUNT(*), MAX(s) FROM {t} FOR UPDATE; DROP TABLE {t};",
        file.display()
    );
    let port = p.listen.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("mariadb")
            .args([
                "--no-defaults",
                "--protocol=TCP",
                "-h127.0.0.1",
                "-P",
                &port,
                "-ustrict",
                "-pstrict",
            ])
            .args(["--local-infile=1", "-D", "sbtest", "-N", "-B", "-e", &sql])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    std::fs::remove_file(&file).ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "500\tv99");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_pins_its_connection_until_fetched_and_closed() {
    let p = start_default().await;
    let mut r = raw::connect(
        p.listen.port(),
        "strict",
        "strict",
        switchyard::protocol::client_capabilities(),
    )
    .await
    .unwrap();
    let mut prep = vec![0x16];
    prep.extend_from_slice(b"SELECT seq FROM seq_1_to_10");
    // OK, one column definition (DEPRECATE_EOF: no EOF)
    let reply = r.command(&prep, |_, i| i == 1).await;
    assert_eq!(reply[0][0], 0, "{reply:?}");
    let id = u32::from_le_bytes(reply[0][1..5].try_into().unwrap());
    let mut exec = vec![0x17];
    exec.extend_from_slice(&id.to_le_bytes());
    exec.push(0x01); // CURSOR_TYPE_READ_ONLY
    exec.extend_from_slice(&1u32.to_le_bytes());
    let opened = r
        .command(&exec, |pk, _| pk[0] == 0xFE || pk[0] == 0xFF)
        .await;
    let end = switchyard::protocol::messages::parse_ok(opened.last().unwrap()).unwrap();
    assert!(
        end.status & 0x0040 != 0,
        "SERVER_STATUS_CURSOR_EXISTS: {opened:?}"
    );
    let mut rows = 0;
    for _ in 0..10 {
        let mut fetch = vec![0x1c];
        fetch.extend_from_slice(&id.to_le_bytes());
        fetch.extend_from_slice(&4u32.to_le_bytes());
        let got = r
            .command(&fetch, |pk, _| pk[0] == 0xFE || pk[0] == 0xFF)
            .await;
        assert_ne!(got.last().unwrap()[0], 0xFF, "{got:?}");
        rows += got.len() - 1;
        let st = switchyard::protocol::messages::parse_ok(got.last().unwrap())
            .unwrap()
            .status;
        if st & 0x0080 != 0 {
            break; // SERVER_STATUS_LAST_ROW_SENT
        }
    }
    assert_eq!(rows, 10, "every row fetched through the cursor");
    let pins = p.shared.stats.pins.lock().clone();
    assert_eq!(pins.get("cursor"), Some(&1), "{pins:?}");
    let mut close = vec![0x19];
    close.extend_from_slice(&id.to_le_bytes());
    r.io.send(0, &close).await.unwrap();
    let ok = r
        .command(b"\x03SELECT 1", |pk, i| {
            i > 0 && (pk[0] == 0xFE || pk[0] == 0xFF)
        })
        .await;
    assert_eq!(ok.len(), 4, "the session goes on after the cursor: {ok:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_database_is_refused_at_connect() {
    let p = start_default().await;
    let o: Opts = OptsBuilder::from_opts(opts(&p, "strict"))
        .db_name(Some("no_such_db_sy"))
        .into();
    let e = Conn::new(o).await.unwrap_err();
    assert_eq!(code(&e), Some(1049), "{e}");
    let mut c = connect(&p, "strict").await;
    let db: String = c.query_first("SELECT DATABASE()").await.unwrap().unwrap();
    assert_eq!(db, "sbtest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_keep_min_idle_connections_open() {
    let p = start(config(|c| {
        c.pool.min_idle = 2;
        c.users.truncate(1);
    }))
    .await;
    let mut filled = false;
    for _ in 0..100 {
        let snap = p.shared.topology.full();
        filled = snap
            .entries
            .iter()
            .all(|e| p.shared.pools_of(&e.node).idle_count() >= 2);
        if filled {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(filled, "every backend has min_idle idle connections");
    let mut c = connect(&p, "app").await;
    let one: u32 = c.query_first("SELECT 1").await.unwrap().unwrap();
    assert_eq!(one, 1);
}

/// A user's places go to its waiting leases in the order they started waiting, whatever
/// their connection class: a classic client (another class) is served while two clients of
/// the first class keep the user's one place busy, instead of waiting until it times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_classes_of_one_user_share_its_places_fairly() {
    let p = start(config(|c| {
        c.backends.truncate(1);
        c.pool.max_per_user = 1;
        c.pool.min_idle = 0;
        c.pool.lease_timeout_ms = 1500;
    }))
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut c = connect(&p, "strict").await;
        let stop = stop.clone();
        busy.push(tokio::spawn(async move {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(8);
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < until
            {
                for q in ["BEGIN", "DO SLEEP(0.005)", "COMMIT"] {
                    c.query_drop(q).await.unwrap();
                }
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut classic = raw::connect(p.listen.port(), "strict", "strict", raw::classic_caps())
        .await
        .expect("the classic client logs in");
    let reply = classic.query_classic("SELECT 42").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_ne!(
        reply[0][0],
        0xff,
        "the classic client got an error: {:?}",
        String::from_utf8_lossy(&reply[0])
    );
    for b in busy {
        assert!(b.await.unwrap() > 0, "the first class ran too");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_transactions_finish_then_closes() {
    let p = start_default().await;
    let t = table("drain");
    let mut idle = connect(&p, "strict").await;
    let mut busy = connect(&p, "strict").await;
    busy.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY)"))
        .await
        .unwrap();
    busy.query_drop("BEGIN").await.unwrap();
    busy.query_drop(format!("INSERT INTO {t} VALUES (1)"))
        .await
        .unwrap();
    p.drain();
    let ready = raw_http_status(p.admin.port(), "/readyz").await;
    assert_eq!(ready, 503, "not ready while draining");
    assert!(
        idle.query_drop("SELECT 1").await.is_err(),
        "an idle client is closed"
    );
    busy.query_drop(format!("INSERT INTO {t} VALUES (2)"))
        .await
        .expect("the transaction goes on");
    busy.query_drop("COMMIT").await.expect("and commits");
    assert!(
        busy.query_drop("SELECT 1").await.is_err(),
        "then the client is closed"
    );
    assert_eq!(p.drained(std::time::Duration::from_secs(5)).await, 0);
    assert!(
        mysql_async::Conn::new(opts(&p, "strict")).await.is_err(),
        "no new clients"
    );
    let n: u32 = direct(PRIMARY)
        .await
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 2, "the drained transaction committed");
    direct(PRIMARY)
        .await
        .query_drop(format!("DROP TABLE {t}"))
        .await
        .unwrap();
}

async fn raw_http_status(port: u16, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_database_never_inherits_another_clients_schema() {
    let p = start(config(|c| c.pool.max_per_user = 2)).await;
    let mut with = connect(&p, "strict").await;
    let none: Opts = OptsBuilder::from_opts(opts(&p, "strict"))
        .db_name(None::<String>)
        .into();
    for _ in 0..3 {
        let db: Option<String> = with
            .query_first("SELECT DATABASE()")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(db.as_deref(), Some("sbtest"));
    }
    let mut without = Conn::new(none).await.unwrap();
    for _ in 0..6 {
        let db: Option<String> = without
            .query_first("SELECT DATABASE()")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(db, None, "no schema leaks from pooled connections");
    }
}
