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
    wait_replicated(&t).await;
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
    for _ in 0..100 {
        if p.shared
            .registry
            .get(id)
            .and_then(|h| *h.running.lock())
            .is_some()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
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
