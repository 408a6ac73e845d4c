//! Fidelity: switchyard behaves as the server would, checked against the local cluster's
//! primary (a straight connection to 127.0.0.11:3306) wherever that makes sense. One
//! test per defect that was fixed; each one's doc comment says what it guards.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::raw::{self, Raw};
use common::*;
use mysql_async::prelude::*;
use mysql_async::{ChangeUserOpts, Conn, Opts, OptsBuilder};
use switchyard::app::Running;
use switchyard::protocol::mariadb::CLIENT_EXTENDED_TYPE_INFO;
use switchyard::protocol::messages::{parse_eof, parse_err, parse_ok, write_lenenc};
use switchyard::protocol::packet::PacketStream;
use switchyard::protocol::{client_capabilities, CapabilityFlags};

const PRIMARY_ADDR: &str = "127.0.0.11:3306";

// ---------------------------------------------------------------------------------------
// helpers

/// A modern client's capabilities (DEPRECATE_EOF, session tracking), without the ones
/// that change the session (IGNORE_SPACE, INTERACTIVE).
fn modern() -> CapabilityFlags {
    client_capabilities()
        - CapabilityFlags::CLIENT_IGNORE_SPACE
        - CapabilityFlags::CLIENT_INTERACTIVE
}

fn proxy_addr(p: &Running) -> String {
    format!("127.0.0.1:{}", p.listen.port())
}

/// A raw client through the proxy and one straight to the primary, with the same handshake.
async fn raw_pair(
    p: &Running,
    user: &str,
    caps: CapabilityFlags,
    ext: u32,
    collation: u8,
) -> (Raw, Raw) {
    let via = raw::connect_to(&proxy_addr(p), user, user, caps, ext, collation)
        .await
        .unwrap_or_else(|e| panic!("through the proxy: {}", String::from_utf8_lossy(&e)));
    let direct = raw::connect_to(PRIMARY_ADDR, user, user, caps, ext, collation)
        .await
        .unwrap_or_else(|e| panic!("straight to the primary: {}", String::from_utf8_lossy(&e)));
    (via, direct)
}

fn hex(packets: &[Vec<u8>]) -> String {
    packets
        .iter()
        .map(|p| p.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A single text value of a one-row, one-column result.
async fn value(r: &mut Raw, sql: &str) -> Option<String> {
    let rows = r.rows(sql).await;
    assert_eq!(rows.len(), 1, "{sql}");
    rows[0][0]
        .as_ref()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The configured primary backend (`n1` of examples/local.toml): (leased, idle) connections.
fn primary_pool(p: &Running) -> (usize, usize) {
    let snap = p.shared.topology.snapshot();
    let e = snap
        .entries
        .iter()
        .find(|e| e.key == "n1")
        .expect("the primary n1 in the topology");
    let pools = p.shared.pools_of(&e.node);
    (pools.in_use_count(), pools.idle_count())
}

fn load(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

async fn direct_as(host: &str, user: &str) -> Conn {
    let o: Opts = OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(3306)
        .user(Some(user))
        .pass(Some(user))
        .db_name(Some("sbtest"))
        .prefer_socket(false)
        .into();
    Conn::new(o).await.expect("direct connect")
}

/// Sets a global variable straight on every server of the cluster.
async fn set_global_everywhere(name: &str, v: u64) {
    for host in std::iter::once(PRIMARY).chain(STANDBYS) {
        let mut c = direct(host).await;
        c.query_drop(format!("SET GLOBAL {name} = {v}"))
            .await
            .unwrap();
        c.disconnect().await.ok();
    }
}

/// Runs the mariadb CLI, killed past 60 s; (success, stdout, stderr).
async fn mariadb_cli(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        use std::process::{Command, Stdio};
        let mut child = Command::new("mariadb")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mariadb");
        let read_all = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = Vec::new();
                let _ = r.read_to_end(&mut s);
                String::from_utf8_lossy(&s).into_owned()
            })
        };
        let out = read_all(Box::new(child.stdout.take().unwrap()));
        let err = read_all(Box::new(child.stderr.take().unwrap()));
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mariadb {args:?} ran past 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status.success(), out.join().unwrap(), err.join().unwrap())
    })
    .await
    .unwrap()
}

fn cli_args(host: &str, port: u16, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--no-defaults",
        "--protocol=TCP",
        &format!("-h{host}"),
        &format!("-P{port}"),
        "-uapp",
        "-papp",
        "-Dsbtest",
        "--connect-timeout=10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// What a greeting says: version, capabilities, default collation, MariaDB extended
/// capabilities (the last 4 of the reserved bytes).
#[derive(Debug)]
struct Greeting {
    version: String,
    caps: CapabilityFlags,
    collation: u8,
    ext: u32,
}

fn parse_greeting(g: &[u8]) -> Greeting {
    assert_eq!(g[0], 10, "protocol version 10");
    let nul = 1 + g[1..].iter().position(|b| *b == 0).unwrap();
    let version = String::from_utf8_lossy(&g[1..nul]).into_owned();
    let mut at = nul + 1 + 4 + 8 + 1; // connection id, scramble part 1, filler
    let lo = u16::from_le_bytes([g[at], g[at + 1]]);
    let collation = g[at + 2];
    at += 2 + 1 + 2; // caps, charset, status
    let hi = u16::from_le_bytes([g[at], g[at + 1]]);
    at += 2 + 1 + 6; // caps, auth data length, zeros
    let ext = u32::from_le_bytes(g[at..at + 4].try_into().unwrap());
    Greeting {
        version,
        caps: CapabilityFlags::from_bits_truncate(u32::from(lo) | u32::from(hi) << 16),
        collation,
        ext,
    }
}

async fn greeting_of(addr: &str) -> Greeting {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut io = PacketStream::new(tcp, 1 << 20);
    let g = io.read_packet().await.unwrap();
    parse_greeting(&g.payload)
}

// ---------------------------------------------------------------------------------------
// handshake and wire format

/// Guards the greeting: it must carry the primary's version string (with MariaDB's
/// `5.5.5-` prefix) and default collation, offer session tracking and DEPRECATE_EOF,
/// clear CLIENT_LONG_PASSWORD as MariaDB does (its CLIENT_MYSQL: "I read extended
/// capabilities") and offer the extended capability EXTENDED_TYPE_INFO. Before the fix
/// it announced switchyard's own collation (45 where the server says 8) and no MariaDB
/// extended capabilities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_is_the_servers() {
    let p = start_default().await;
    let server = greeting_of(PRIMARY_ADDR).await;
    let proxy = greeting_of(&proxy_addr(&p)).await;
    assert!(server.version.starts_with("5.5.5-"), "{server:?}");
    assert_eq!(proxy.version, server.version);
    assert_eq!(proxy.collation, server.collation, "default collation");
    for cap in [
        CapabilityFlags::CLIENT_SESSION_TRACK,
        CapabilityFlags::CLIENT_DEPRECATE_EOF,
        CapabilityFlags::CLIENT_PROTOCOL_41,
        CapabilityFlags::CLIENT_PLUGIN_AUTH,
    ] {
        assert!(proxy.caps.contains(cap), "{cap:?} not offered: {proxy:?}");
    }
    assert!(
        !server.caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD),
        "{server:?}"
    );
    assert!(
        !proxy.caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD),
        "CLIENT_MYSQL must be cleared like MariaDB's: {proxy:?}"
    );
    assert_ne!(server.ext & CLIENT_EXTENDED_TYPE_INFO, 0, "{server:?}");
    assert_ne!(
        proxy.ext & CLIENT_EXTENDED_TYPE_INFO,
        0,
        "EXTENDED_TYPE_INFO offered: {proxy:?}"
    );
}

/// Guards OK packets: switchyard asks its backends for session tracking (and `last_gtid`
/// for itself); the OK a client gets must still be the one the server would send that
/// client, with or without CLIENT_SESSION_TRACK: the info string of a multi-row INSERT,
/// the schema tracker after USE for a tracking client, and no `last_gtid` tracker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_packets_match_the_server_for_clients_with_and_without_session_tracking() {
    let p = start_default().await;
    let t = table("okp");
    let mut d = direct(PRIMARY).await;
    d.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY, v INT)"))
        .await
        .unwrap();
    for (n, tracking) in [(0, true), (10, false)] {
        let caps = if tracking {
            modern()
        } else {
            modern() - CapabilityFlags::CLIENT_SESSION_TRACK
        };
        let (mut via, mut dir) = raw_pair(&p, "app", caps, 0, raw::UTF8MB4_GENERAL_CI).await;
        let insert = |a: u32| format!("INSERT INTO {t} VALUES ({a}, 1), ({}, 2)", a + 1);
        let server = dir.query(insert(n + 1)).await;
        let proxy = via.query(insert(n + 3)).await;
        assert_eq!(server[0][0], 0, "{}", hex(&server));
        assert!(
            contains(&server[0], b"Records: 2  Duplicates: 0  Warnings: 0"),
            "{}",
            hex(&server)
        );
        assert!(
            !contains(&proxy[0], b"last_gtid"),
            "the proxy's own tracker leaked (tracking {tracking}): {}",
            hex(&proxy)
        );
        assert_eq!(
            hex(&proxy),
            hex(&server),
            "INSERT's OK, session tracking {tracking}"
        );
        let server = dir.query("USE sbtest").await;
        let proxy = via.query("USE sbtest").await;
        if tracking {
            let ok = parse_ok(&server[0]).unwrap();
            assert_ne!(ok.status & 0x4000, 0, "SERVER_SESSION_STATE_CHANGED");
            assert!(contains(&server[0], b"sbtest"), "{}", hex(&server));
        }
        assert_eq!(
            hex(&proxy),
            hex(&server),
            "USE's OK, session tracking {tracking}"
        );
    }
    d.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

/// Guards MariaDB's extended type info: a client that asks for it gets column
/// definitions carrying the format name (`json`) exactly as the server writes them; the
/// mariadb CLI's `--column-type-info` shows the same through the proxy as straight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_columns_keep_mariadb_extended_type_info() {
    let p = start_default().await;
    let t = table("json");
    let mut d = direct(PRIMARY).await;
    d.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY, j JSON)"))
        .await
        .unwrap();
    d.query_drop(format!(r#"INSERT INTO {t} VALUES (1, '{{"a": 1}}')"#))
        .await
        .unwrap();
    wait_rows(&t, 1).await;
    let q = format!("SELECT j FROM {t}");
    let (mut via, mut dir) = raw_pair(
        &p,
        "app",
        modern(),
        CLIENT_EXTENDED_TYPE_INFO,
        raw::UTF8MB4_GENERAL_CI,
    )
    .await;
    let server = dir.query(&q).await;
    let proxy = via.query(&q).await;
    assert!(contains(&server[1], b"json"), "{}", hex(&server));
    assert_eq!(hex(&proxy[1..2]), hex(&server[1..2]), "column definition");
    assert_eq!(hex(&proxy), hex(&server), "the whole result");

    let extra = ["--column-type-info", "-t", "-e", q.as_str()];
    let (ok_d, out_d, err_d) = mariadb_cli(cli_args(PRIMARY, 3306, &extra)).await;
    let (ok_p, out_p, err_p) = mariadb_cli(cli_args("127.0.0.1", p.listen.port(), &extra)).await;
    assert!(ok_d && ok_p, "{err_d} {err_p}");
    assert!(out_d.contains("format=json"), "{out_d}");
    assert_eq!(out_p, out_d, "mariadb --column-type-info");
    d.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

/// Guards sequence ids after a command of more than one wire packet: a 17 MiB COM_QUERY
/// is sent as packets 0 and 1, so the reply starts at 2, as the server's does (before
/// the fix the proxy numbered it from 1, which clients take for a protocol error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_after_a_16_mib_command_continues_its_sequence() {
    let p = start_default().await;
    let (mut via, mut dir) = raw_pair(&p, "app", modern(), 0, raw::UTF8MB4_GENERAL_CI).await;
    let n = 17usize << 20;
    let mut cmd = b"\x03SELECT LENGTH('".to_vec();
    cmd.resize(cmd.len() + n, b'z');
    cmd.extend_from_slice(b"')");
    let mut seqs = Vec::new();
    for r in [&mut dir, &mut via] {
        let next = r.io.send(0, &cmd).await.unwrap();
        assert_eq!(next, 2, "the command went as wire packets 0 and 1");
        let reply = r.read_reply().await;
        let payloads: Vec<Vec<u8>> = reply.iter().map(|(_, p)| p.clone()).collect();
        assert_ne!(
            payloads[0][0],
            0xFF,
            "{}",
            String::from_utf8_lossy(&payloads[0])
        );
        let rows = raw::text_rows(&payloads, true);
        assert_eq!(rows, vec![vec![Some(n.to_string().into_bytes())]]);
        seqs.push(reply.iter().map(|(s, _)| *s).collect::<Vec<u8>>());
        // and the connection is in step for the next command
        assert_eq!(value(r, "SELECT 1").await.as_deref(), Some("1"));
    }
    assert_eq!(seqs[0][0], 2, "the server continues the sequence");
    assert_eq!(seqs[1], seqs[0], "reply sequence ids: proxy vs server");
}

/// Guards classic (no DEPRECATE_EOF) result sets: every packet is the server's, in
/// particular the EOF after the column definitions and the final EOF with their warning
/// counts (the CAST warns, 1292: MariaDB counts it in the final EOF) and status flags.
/// Before the fix the proxy wrote its own EOF after the definitions, with status 0
/// where the server says SERVER_STATUS_AUTOCOMMIT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_client_result_sets_are_the_servers_bytes() {
    let p = start_default().await;
    let caps = modern() - CapabilityFlags::CLIENT_DEPRECATE_EOF;
    let (mut via, mut dir) = raw_pair(&p, "app", caps, 0, raw::UTF8MB4_GENERAL_CI).await;
    let q = "SELECT CAST('x' AS SIGNED)";
    let server = dir.query(q).await;
    let proxy = via.query(q).await;
    assert_eq!(
        server.len(),
        5,
        "count, definition, EOF, row, EOF: {}",
        hex(&server)
    );
    let last = parse_eof(&server[4]).unwrap();
    assert_eq!(last.warnings, 1, "the server's final EOF: {}", hex(&server));
    assert_eq!(hex(&proxy), hex(&server));
    let first = parse_eof(&proxy[2]).unwrap();
    assert_eq!(first.warnings, parse_eof(&server[2]).unwrap().warnings);
    assert_eq!(parse_eof(&proxy[4]).unwrap().warnings, 1);
}

/// Guards the session-setting capabilities: CLIENT_IGNORE_SPACE (the server adds
/// IGNORE_SPACE to sql_mode, so `COUNT (*)` parses) and CLIENT_INTERACTIVE (the session's
/// wait_timeout is the global interactive_timeout) must follow each client, as on the
/// server, instead of the proxy's own backend handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_space_and_interactive_follow_the_client() {
    let p = start_default().await;
    let q = "SELECT COUNT (*) FROM (SELECT 1) t";
    for ignore in [true, false] {
        let mut caps = modern();
        caps.set(CapabilityFlags::CLIENT_IGNORE_SPACE, ignore);
        let (mut via, mut dir) = raw_pair(&p, "strict", caps, 0, raw::UTF8MB4_GENERAL_CI).await;
        let server = dir.query(q).await;
        let proxy = via.query(q).await;
        if ignore {
            assert_ne!(
                server[0][0],
                0xFF,
                "{}",
                String::from_utf8_lossy(&server[0])
            );
            assert_eq!(
                raw::text_rows(&proxy, true),
                raw::text_rows(&server, true),
                "IGNORE_SPACE: {}",
                String::from_utf8_lossy(&proxy[0])
            );
        } else {
            assert_eq!(parse_err(&server[0]).map(|e| e.code), Some(1064));
            assert_eq!(hex(&proxy), hex(&server), "the same 1064");
        }
        let mode_s = value(&mut dir, "SELECT @@sql_mode").await.unwrap();
        let mode_p = value(&mut via, "SELECT @@sql_mode").await.unwrap();
        assert_eq!(mode_s.contains("IGNORE_SPACE"), ignore, "{mode_s}");
        assert_eq!(mode_p, mode_s, "sql_mode, IGNORE_SPACE {ignore}");
    }

    // CLIENT_INTERACTIVE: a fresh proxy, so no backend connection predates the change
    set_global_everywhere("interactive_timeout", 28801).await;
    let seen = with_cleanup(
        async {
            let p = start_default().await;
            let addr = proxy_addr(&p);
            let mut out = Vec::new();
            for (interactive, addr) in [
                (true, addr.as_str()),
                (false, addr.as_str()),
                (true, PRIMARY_ADDR),
                (false, PRIMARY_ADDR),
            ] {
                let mut caps = modern();
                caps.set(CapabilityFlags::CLIENT_INTERACTIVE, interactive);
                let mut r =
                    raw::connect_to(addr, "strict", "strict", caps, 0, raw::UTF8MB4_GENERAL_CI)
                        .await
                        .unwrap();
                out.push(value(&mut r, "SELECT @@wait_timeout").await);
            }
            out
        },
        set_global_everywhere("interactive_timeout", 28800),
    )
    .await;
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        seen,
        vec![s("28801"), s("28800"), s("28801"), s("28800")],
        "@@wait_timeout: proxy interactive, proxy not, server interactive, server not"
    );
}

/// Guards server errors: their bytes are in the connection's character set and must be
/// relayed unchanged (the proxy used to re-encode them as UTF-8, turning latin1 é into
/// U+FFFD). Checked with an error to COM_STMT_PREPARE after SET NAMES latin1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_bytes_are_relayed_unchanged() {
    let p = start_default().await;
    let (mut via, mut dir) = raw_pair(&p, "strict", modern(), 0, raw::UTF8MB4_GENERAL_CI).await;
    let mut errs = Vec::new();
    for r in [&mut dir, &mut via] {
        let ok = r.query("SET NAMES latin1").await;
        assert_eq!(ok[0][0], 0, "{}", hex(&ok));
        let reply = r.prepare(b"SELECT * FROM no_such_t\xe9").await;
        assert_eq!(reply.len(), 1);
        errs.push(reply[0].clone());
    }
    let e = parse_err(&errs[0]).expect("an ERR from the server");
    assert_eq!(e.code, 1146);
    assert!(contains(&e.message, b"no_such_t\xe9"), "{:?}", e.message);
    assert!(
        !contains(&errs[1], "\u{FFFD}".as_bytes()),
        "re-encoded: {:?}",
        errs[1]
    );
    assert_eq!(hex(&errs[1..]), hex(&errs[..1]), "ERR payload bytes");
}

/// Guards COM_CHANGE_USER with a wrong password: the client gets 1045 and keeps its
/// connection, which answers the next statement, as a server connection does (the proxy
/// used to close it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_change_user_keeps_the_connection() {
    let p = start_default().await;
    let bad = || {
        ChangeUserOpts::default()
            .with_user(Some("strict".into()))
            .with_pass(Some("wrong".into()))
    };
    let mut answers = Vec::new();
    for mut c in [
        direct_as(PRIMARY, "strict").await,
        connect(&p, "strict").await,
    ] {
        let e = c.change_user(bad()).await.unwrap_err();
        let after: Result<Option<u32>, _> = c.query_first("SELECT 1").await;
        answers.push((code(&e), after.map_err(|e| e.to_string())));
    }
    assert_eq!(answers[0], (Some(1045), Ok(Some(1))), "the server");
    assert_eq!(answers[1], answers[0], "the proxy vs the server");
}

/// Guards SET GLOBAL through the proxy: a new session starts from the server's new global
/// defaults, as a new server session does; pooled connections opened before the change
/// carry the old session values and must not be lent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_sees_global_defaults_changed_through_the_proxy() {
    let p = start_default().await;
    let mut d = direct(PRIMARY).await;
    let orig: u64 = d
        .query_first("SELECT @@GLOBAL.max_allowed_packet")
        .await
        .unwrap()
        .unwrap();
    // larger, never smaller: other tests may send big packets meanwhile
    let new = orig + (1 << 20);
    let q = "/* switchyard: primary */ SELECT @@max_allowed_packet";
    let (through, straight) = with_cleanup(
        async {
            let mut a = connect(&p, "app").await;
            let before: u64 = a.query_first(q).await.unwrap().unwrap();
            assert_eq!(before, orig);
            a.query_drop(format!("SET GLOBAL max_allowed_packet = {new}"))
                .await
                .unwrap();
            let mut b = connect(&p, "app").await;
            let through: u64 = b.query_first(q).await.unwrap().unwrap();
            let mut fresh = direct(PRIMARY).await;
            let straight: u64 = fresh
                .query_first("SELECT @@max_allowed_packet")
                .await
                .unwrap()
                .unwrap();
            (through, straight)
        },
        async {
            let mut d = direct(PRIMARY).await;
            d.query_drop(format!("SET GLOBAL max_allowed_packet = {orig}"))
                .await
                .unwrap();
        },
    )
    .await;
    assert_eq!(straight, new, "a new server session");
    assert_eq!(through, straight, "a new session through the proxy");
}

/// Guards the text of Access denied: it names the client's host as the server would
/// for the same attempt from the same address (127.0.0.1 both ways). Before the fix it
/// said `Access denied for user 'strict' (using password: YES)`, with no host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_text_names_the_client_host() {
    let p = start_default().await;
    let server = raw::connect_to(
        PRIMARY_ADDR,
        "strict",
        "wrong",
        modern(),
        0,
        raw::UTF8MB4_GENERAL_CI,
    )
    .await
    .err()
    .expect("refused by the server");
    let proxy = raw::connect_to(
        &proxy_addr(&p),
        "strict",
        "wrong",
        modern(),
        0,
        raw::UTF8MB4_GENERAL_CI,
    )
    .await
    .err()
    .expect("refused by the proxy");
    let s = parse_err(&server).unwrap();
    let x = parse_err(&proxy).unwrap();
    assert_eq!(s.code, 1045);
    let text = s.text();
    assert!(
        text.starts_with("Access denied for user 'strict'@'"),
        "{text}"
    );
    assert!(text.contains("(using password: YES)"), "{text}");
    assert_eq!((x.code, x.state), (s.code, s.state));
    assert_eq!(x.text(), text, "the proxy's message vs the server's");
}

// ---------------------------------------------------------------------------------------
// prepared statements and session state on shared backend connections

/// A COM_STMT_EXECUTE payload; `types`: the new-params-bound types, None to send none.
fn execute(stmt: u32, types: Option<&[u8]>, values: &[&[u8]]) -> Vec<u8> {
    let mut p = vec![0x17];
    p.extend_from_slice(&stmt.to_le_bytes());
    p.push(0); // no cursor
    p.extend_from_slice(&1u32.to_le_bytes());
    p.extend(std::iter::repeat_n(0u8, values.len().div_ceil(8)));
    match types {
        Some(types) => {
            p.push(1);
            for t in types {
                p.extend_from_slice(&[*t, 0]);
            }
        }
        None => p.push(0),
    }
    for v in values {
        p.extend_from_slice(v);
    }
    p
}

fn longlong(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn lenenc_str(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_lenenc(&mut out, s.len() as u64);
    out.extend_from_slice(s);
    out
}

async fn prepare_id(r: &mut Raw, sql: &str) -> u32 {
    let reply = r.prepare(sql.as_bytes()).await;
    assert_eq!(reply[0][0], 0, "{}", String::from_utf8_lossy(&reply[0]));
    u32::from_le_bytes(reply[0][1..5].try_into().unwrap())
}

async fn exec_ok(r: &mut Raw, payload: &[u8], what: &str) {
    let reply = r.command(payload, |_, _| true).await;
    assert_eq!(
        reply[0][0],
        0,
        "{what}: {}",
        String::from_utf8_lossy(&reply[0])
    );
}

const MYSQL_TYPE_LONGLONG: u8 = 0x08;
const MYSQL_TYPE_VAR_STRING: u8 = 0xFD;

/// Guards parameter types of prepared statements on a shared backend statement: a client
/// that executes without sending types (new-params-bound 0) means the types it sent last,
/// while the backend statement may last have been executed by another session with other
/// types. Two sessions share the only primary connection (max_per_user 1); the row that
/// A inserts without types must read back as A's string.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_parameter_types_follow_each_execution() {
    let p = start(config(|c| c.pool.max_per_user = 1)).await;
    let t = table("ptypes");
    let mut d = direct(PRIMARY).await;
    d.query_drop(format!(
        "CREATE TABLE {t} (id BIGINT PRIMARY KEY, v VARCHAR(20))"
    ))
    .await
    .unwrap();
    let addr = proxy_addr(&p);
    let connect = || {
        raw::connect_to(
            &addr,
            "strict",
            "strict",
            modern(),
            0,
            raw::UTF8MB4_GENERAL_CI,
        )
    };
    let mut a = connect().await.unwrap();
    let mut b = connect().await.unwrap();
    let sql = format!("INSERT INTO {t} (id, v) VALUES (?, ?)");
    let sa = prepare_id(&mut a, &sql).await;
    let sb = prepare_id(&mut b, &sql).await;
    let int_str = [MYSQL_TYPE_LONGLONG, MYSQL_TYPE_VAR_STRING];
    let int_int = [MYSQL_TYPE_LONGLONG, MYSQL_TYPE_LONGLONG];
    exec_ok(
        &mut a,
        &execute(sa, Some(&int_str), &[&longlong(1), &lenenc_str(b"a")]),
        "A with types",
    )
    .await;
    exec_ok(
        &mut b,
        &execute(sb, Some(&int_int), &[&longlong(2), &longlong(7)]),
        "B with other types",
    )
    .await;
    exec_ok(
        &mut a,
        &execute(sa, None, &[&longlong(3), &lenenc_str(b"abc")]),
        "A without types",
    )
    .await;
    let rows: Vec<(i64, String)> = d
        .query(format!("SELECT id, v FROM {t} ORDER BY id"))
        .await
        .unwrap();
    d.query_drop(format!("DROP TABLE {t}")).await.unwrap();
    assert_eq!(
        rows,
        vec![(1, "a".into()), (2, "7".into()), (3, "abc".into())]
    );
}

/// Guards an ERR under autocommit=0: the failed statement may have opened a transaction
/// (a duplicate key leaves a lock), and an ERR carries no status flags, so the session
/// keeps its primary connection; the proxy used to return it to the pool. After its
/// ROLLBACK the row is free for another session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_under_autocommit_off_keeps_its_connection() {
    let p = start_default().await;
    let t = table("acerr");
    let mut d = direct(PRIMARY).await;
    d.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY, v INT)"))
        .await
        .unwrap();
    d.query_drop(format!("INSERT INTO {t} VALUES (1, 1)"))
        .await
        .unwrap();
    let mut a = connect(&p, "strict").await;
    a.query_drop("SET autocommit = 0").await.unwrap();
    let e = a
        .query_drop(format!("INSERT INTO {t} VALUES (1, 2)"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(1062), "{e}");
    // the session handles commands one by one: once it answered the ping, it has done
    // whatever it does after the failed INSERT
    a.ping().await.unwrap();
    let (in_use, _) = primary_pool(&p);
    assert_eq!(
        in_use, 1,
        "the idle session still holds its primary connection"
    );
    a.query_drop("ROLLBACK").await.unwrap();
    let mut b = connect(&p, "strict").await;
    b.query_drop("SET SESSION innodb_lock_wait_timeout = 1")
        .await
        .unwrap();
    let r = b
        .query_drop(format!("UPDATE {t} SET v = 3 WHERE id = 1"))
        .await;
    a.query_drop("SET autocommit = 1").await.unwrap();
    d.query_drop(format!("DROP TABLE {t}")).await.unwrap();
    r.expect("the row is free after the ROLLBACK");
}

/// Guards LAST_INSERT_ID across connections: A's insert ran on a pooled connection that
/// another session then holds in its transaction; A's own transaction opens on another
/// connection, where `SELECT LAST_INSERT_ID()` must still give A's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_insert_id_is_carried_into_a_transaction() {
    let p = start(config(|c| c.pool.min_idle = 0)).await;
    let pid = primary_id().await;
    let t = table("lidtx");
    let mut d = direct(PRIMARY).await;
    d.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY AUTO_INCREMENT, v INT)"
    ))
    .await
    .unwrap();
    d.query_drop(format!("INSERT INTO {t} (v) VALUES (0), (0), (0)"))
        .await
        .unwrap();
    let mut a = connect(&p, "strict").await;
    let mut b = connect(&p, "strict").await;
    a.query_drop(format!("INSERT INTO {t} (v) VALUES (1)"))
        .await
        .unwrap();
    let id = a.last_insert_id().expect("an insert id");
    a.ping().await.unwrap();
    assert_eq!(primary_pool(&p), (0, 1), "one primary connection, idle");
    b.query_drop("BEGIN").await.unwrap();
    let s: u32 = b.query_first("SELECT @@server_id").await.unwrap().unwrap();
    assert_eq!(s, pid);
    assert_eq!(primary_pool(&p), (1, 0), "B holds A's connection");
    a.query_drop("BEGIN").await.unwrap();
    let got: u64 = a
        .query_first("SELECT LAST_INSERT_ID()")
        .await
        .unwrap()
        .unwrap();
    let in_use = primary_pool(&p).0;
    a.query_drop("COMMIT").await.unwrap();
    b.query_drop("COMMIT").await.unwrap();
    d.query_drop(format!("DROP TABLE {t}")).await.unwrap();
    assert_eq!(in_use, 2, "A's transaction runs on another connection");
    assert_eq!(got, id, "LAST_INSERT_ID() in A's transaction");
}

/// How many of ten plain reads ran on the primary.
async fn reads_on_the_primary(c: &mut Conn, pid: u32) -> usize {
    let mut n = 0;
    for _ in 0..10 {
        let s: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
        n += usize::from(s == pid);
    }
    n
}

/// Guards the end of pins: each cause of pinning a session to its connection ends with
/// it (FOUND_ROWS after the statement that reads it, SET TRANSACTION after the next
/// transaction, a named lock at RELEASE_LOCK, a temporary table at DROP, a prepared
/// statement at DEALLOCATE, a HANDLER at CLOSE); afterwards plain reads go to standbys
/// again instead of staying on the primary for the rest of the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_end_with_their_cause() {
    let p = start_default().await;
    let pid = primary_id().await;
    let t = table("pinh");
    let lock = format!("fid_lock_{}", std::process::id());
    let mut setup = connect(&p, "strict").await;
    setup
        .query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY)"))
        .await
        .unwrap();
    setup
        .query_drop(format!("INSERT INTO {t} VALUES (1), (2)"))
        .await
        .unwrap();
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "SET TRANSACTION",
            vec![
                "SET TRANSACTION ISOLATION LEVEL READ COMMITTED".into(),
                "BEGIN".into(),
                "SELECT 1".into(),
                "COMMIT".into(),
            ],
        ),
        (
            "GET_LOCK",
            vec![
                format!("SELECT GET_LOCK('{lock}', 5)"),
                format!("SELECT RELEASE_LOCK('{lock}')"),
            ],
        ),
        (
            "TEMPORARY TABLE",
            vec![
                "CREATE TEMPORARY TABLE fid_tmp (a INT)".into(),
                "INSERT INTO fid_tmp VALUES (1)".into(),
                "DROP TEMPORARY TABLE fid_tmp".into(),
            ],
        ),
        (
            "PREPARE",
            vec![
                "PREPARE fid_s FROM 'SELECT 1'".into(),
                "EXECUTE fid_s".into(),
                "DEALLOCATE PREPARE fid_s".into(),
            ],
        ),
        (
            "HANDLER",
            vec![
                format!("HANDLER {t} OPEN"),
                format!("HANDLER {t} READ FIRST"),
                format!("HANDLER {t} CLOSE"),
            ],
        ),
    ];
    let mut on_primary = Vec::new();
    // FOUND_ROWS: the pin ends after the statement that reads it
    let mut c = connect(&p, "strict").await;
    let first: Vec<u32> = c
        .query("SELECT SQL_CALC_FOUND_ROWS seq FROM seq_1_to_10 LIMIT 2")
        .await
        .unwrap();
    let found: u64 = c.query_first("SELECT FOUND_ROWS()").await.unwrap().unwrap();
    assert_eq!((first, found), (vec![1, 2], 10));
    on_primary.push((
        "SQL_CALC_FOUND_ROWS",
        reads_on_the_primary(&mut c, pid).await,
    ));
    for (name, stmts) in &cases {
        let mut c = connect(&p, "strict").await;
        for s in stmts {
            c.query_drop(s.as_str())
                .await
                .unwrap_or_else(|e| panic!("{name}: {s}: {e}"));
        }
        on_primary.push((name, reads_on_the_primary(&mut c, pid).await));
    }
    setup.query_drop(format!("DROP TABLE {t}")).await.unwrap();
    let stuck: Vec<_> = on_primary.iter().filter(|(_, n)| *n > 0).collect();
    assert!(
        stuck.is_empty(),
        "(cause, reads of 10 on the primary) after the cause ended: {stuck:?}"
    );
}

/// Guards SET to an expression (what ORMs send: sql_mode built from @@sql_mode): the
/// proxy reads the resulting value back and replays it, so reads stay on standbys with
/// both modes instead of pinning the session to the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_set_expression_keeps_reads_on_standbys() {
    let p = start_default().await;
    let pid = primary_id().await;
    let mut c = connect(&p, "strict").await;
    c.query_drop(
        "SET @@SESSION.sql_mode = CONCAT(CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), ',NO_AUTO_VALUE_ON_ZERO')",
    )
    .await
    .unwrap();
    for i in 0..6 {
        let (s, mode): (u32, String) = c
            .query_first("SELECT @@server_id, @@sql_mode")
            .await
            .unwrap()
            .unwrap();
        assert_ne!(s, pid, "read {i} ran on the primary");
        assert!(
            mode.contains("STRICT_ALL_TABLES") && mode.contains("NO_AUTO_VALUE_ON_ZERO"),
            "read {i}: {mode}"
        );
    }
}

/// Guards read-your-writes (on by default): a read right after a write sees it although
/// it runs on a standby, which waits for the session's last GTID; with `read_your_writes =
/// none` reads still go to standbys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_by_default() {
    // a generous wait, so that a slow standby is waited for rather than skipped
    let p = start(config(|c| c.routing.causal_timeout_ms = 5000)).await;
    let stats = &p.shared.stats;
    let t = table("ryw");
    let mut c = connect(&p, "strict").await;
    c.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY, b LONGBLOB)"))
        .await
        .unwrap();
    let blob = vec![b'x'; 2 << 20];
    let (reads0, waits0) = (load(&stats.standby_reads), load(&stats.causal_waits));
    let insert = format!("INSERT INTO {t} VALUES (?, ?)");
    for i in 0..20 {
        c.exec_drop(insert.as_str(), (i, blob.as_slice()))
            .await
            .unwrap();
        let n: Option<Option<u64>> = c
            .query_first(format!("SELECT LENGTH(b) FROM {t} WHERE id = {i}"))
            .await
            .unwrap();
        assert_eq!(
            n,
            Some(Some(2 << 20)),
            "row {i} read right after its insert"
        );
    }
    assert!(load(&stats.standby_reads) > reads0, "reads ran on standbys");
    assert!(
        load(&stats.causal_waits) > waits0,
        "standbys waited for the writes"
    );

    let none = start(config(|c| {
        c.routing.read_your_writes = switchyard::config::ReadYourWrites::None
    }))
    .await;
    wait_replicated(&t).await;
    let stats = &none.shared.stats;
    let mut c = connect(&none, "strict").await;
    let reads0 = load(&stats.standby_reads);
    for i in 100..110 {
        c.exec_drop(insert.as_str(), (i, blob.as_slice()))
            .await
            .unwrap();
        let _: Option<Option<u64>> = c
            .query_first(format!("SELECT LENGTH(b) FROM {t} WHERE id = {i}"))
            .await
            .unwrap();
    }
    assert!(
        load(&stats.standby_reads) - reads0 >= 10,
        "with read_your_writes = none every read runs on a standby"
    );
    assert_eq!(load(&stats.causal_waits), 0);
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

/// Guards diagnostics: warnings belong to the session's last statement, also when other
/// sessions of the same user take the pooled connections in between; `@@warning_count`
/// and SHOW WARNINGS after an INSERT IGNORE of a duplicate report its 1062.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn diagnostics_belong_to_the_session_under_load() {
    let p = start_default().await;
    let t = table("diag");
    let mut c = connect(&p, "strict").await;
    c.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY)"))
        .await
        .unwrap();
    c.query_drop(format!("INSERT INTO {t} VALUES (1)"))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut noise = Vec::new();
    for _ in 0..4 {
        let (o, stop) = (opts(&p, "strict"), stop.clone());
        noise.push(tokio::spawn(async move {
            let mut n = Conn::new(o).await.unwrap();
            for i in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let q = if i % 2 == 0 { "SELECT 1" } else { "DO 1" };
                n.query_drop(q).await.unwrap();
            }
        }));
    }
    let dup = format!("INSERT IGNORE INTO {t} VALUES (1)");
    let mut seen = Vec::new();
    for _ in 0..20 {
        c.query_drop(dup.as_str()).await.unwrap();
        let count: u32 = c
            .query_first("SELECT @@warning_count")
            .await
            .unwrap()
            .unwrap();
        c.query_drop(dup.as_str()).await.unwrap();
        let warnings: Vec<(String, u32, String)> = c.query("SHOW WARNINGS").await.unwrap();
        let codes: Vec<u32> = warnings.iter().map(|w| w.1).collect();
        seen.push((count, codes));
    }
    stop.store(true, Ordering::Relaxed);
    for n in noise {
        n.await.unwrap();
    }
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(
            s,
            &(1, vec![1062]),
            "round {i}: (@@warning_count, SHOW WARNINGS)"
        );
    }
}

/// Guards transaction routing with the default config (optimistic transactions off): a
/// plain transaction runs on the primary, a `START TRANSACTION READ ONLY` on a standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_run_on_the_primary_and_read_only_ones_on_standbys() {
    let p = start_default().await;
    let pid = primary_id().await;
    let mut c = connect(&p, "strict").await;
    c.query_drop("BEGIN").await.unwrap();
    let s: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
    c.query_drop("COMMIT").await.unwrap();
    assert_eq!(s, pid, "a plain transaction");
    c.query_drop("START TRANSACTION READ ONLY").await.unwrap();
    let s: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
    c.query_drop("COMMIT").await.unwrap();
    assert_ne!(s, pid, "a read-only transaction");
}

/// Guards handshake collations the server lacks (255, utf8mb4_0900_ai_ci, MySQL 8 only):
/// the server then keeps its defaults, and so must the proxy, instead of failing the
/// session with a SET NAMES the server refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collation_the_server_lacks_keeps_its_defaults() {
    let p = start_default().await;
    let (mut via, mut dir) = raw_pair(&p, "strict", modern(), 0, 255).await;
    let q = "SELECT @@character_set_client, @@collation_connection, @@character_set_results";
    for (r, who) in [(&mut dir, "server"), (&mut via, "proxy")] {
        assert_eq!(value(r, "SELECT 1").await.as_deref(), Some("1"), "{who}");
    }
    let server = dir.rows(q).await;
    let proxy = via.rows(q).await;
    assert_eq!(proxy, server, "character set variables: proxy vs server");
}

/// Waits (bounded) until every standby has applied all the primary has written, so a
/// standby has not only seen the first CREATE of a dropped and re-created database.
async fn wait_schema(db: &str) {
    let mut p = direct(PRIMARY).await;
    let pos: String = p
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    for host in STANDBYS {
        let mut c = direct(host).await;
        let q = format!("SELECT MASTER_GTID_WAIT('{pos}', 30)");
        let r: Option<i32> = c.query_first(q.as_str()).await.unwrap();
        assert_eq!(r, Some(0), "{db}: {host} did not apply {pos}");
    }
}

/// Guards the current schema after DROP DATABASE of it: the server then has none, so a
/// pooled connection must not be taken as still in it; a new client that connects with
/// the re-created database must not get 1046 (no database selected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_schema_is_not_kept_as_current() {
    let p = start(config(|c| c.pool.max_per_user = 1)).await;
    let db = format!("fid_d1_{}", std::process::id());
    let r = with_cleanup(
        async {
            let mut a = connect(&p, "app").await;
            for s in [
                format!("CREATE DATABASE {db}"),
                format!("USE {db}"),
                format!("DROP DATABASE {db}"),
                format!("CREATE DATABASE {db}"),
            ] {
                a.query_drop(s.as_str())
                    .await
                    .unwrap_or_else(|e| panic!("{s}: {e}"));
            }
            wait_schema(&db).await;
            let o: Opts = OptsBuilder::from_opts(opts(&p, "app"))
                .db_name(Some(db.as_str()))
                .into();
            let mut b = Conn::new(o).await.unwrap();
            b.query_drop("CREATE TABLE fid_t1 (a INT)")
                .await
                .map_err(|e| e.to_string())
        },
        async {
            let mut d = direct(PRIMARY).await;
            d.query_drop(format!("DROP DATABASE IF EXISTS {db}"))
                .await
                .unwrap();
        },
    )
    .await;
    r.expect("CREATE TABLE in the new client's database");
}

/// Guards session state changed inside a procedure (a user variable, a temporary table),
/// which no statement text shows: the server reports it (session_track_state_change) and
/// the connection stays with the session instead of going back to the pool, where another
/// session would see `@fid_leak`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_procedure_that_changes_session_state_keeps_its_connection() {
    let p = start(config(|c| c.pool.max_per_user = 2)).await;
    let proc_name = format!("fid_leak_{}", std::process::id());
    let mut d = direct(PRIMARY).await;
    d.query_drop(format!(
        "CREATE PROCEDURE {proc_name}() BEGIN SET @fid_leak = 42; \
         CREATE TEMPORARY TABLE fid_leak_t (a INT); END"
    ))
    .await
    .unwrap();
    let (others, own, temp) = with_cleanup(
        async {
            let mut a = connect(&p, "app").await;
            a.query_drop(format!("CALL {proc_name}()")).await.unwrap();
            let mut b = connect(&p, "app").await;
            let mut others = Vec::new();
            for _ in 0..20 {
                let v: Option<i64> = b
                    .query_first("/* switchyard: primary */ SELECT @fid_leak")
                    .await
                    .unwrap()
                    .unwrap();
                others.push(v);
            }
            let own: Option<i64> = a.query_first("SELECT @fid_leak").await.unwrap().unwrap();
            let temp: Result<Option<u32>, _> =
                a.query_first("SELECT COUNT(*) FROM fid_leak_t").await;
            (others, own, temp.map_err(|e| e.to_string()))
        },
        async {
            let mut d = direct(PRIMARY).await;
            d.query_drop(format!("DROP PROCEDURE IF EXISTS {proc_name}"))
                .await
                .unwrap();
        },
    )
    .await;
    assert_eq!(others, vec![None; 20], "another session saw @fid_leak");
    assert_eq!(own, Some(42), "the caller's own variable");
    assert_eq!(temp, Ok(Some(0)), "the caller's temporary table");
}

/// Memory per session is bounded in bytes: prepared statements whose SQL text would pass
/// `server.max_session_statement_bytes` are refused with 1037 (HY001), the session goes on,
/// and closing a statement makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_are_bounded_in_bytes() {
    let p = start(config(|c| c.server.max_session_statement_bytes = 4096)).await;
    let mut c = connect(&p, "strict").await;
    let pad = "x".repeat(1500);
    let sql = |i: usize| format!("SELECT {i} AS n, '{pad}' AS pad");
    let a = c.prep(sql(1)).await.unwrap();
    let _b = c.prep(sql(2)).await.unwrap();
    let e = c.prep(sql(3)).await.unwrap_err();
    let code = match &e {
        mysql_async::Error::Server(s) => (s.code, s.state.clone()),
        other => panic!("not a server error: {other}"),
    };
    assert_eq!(code, (1037, "HY001".to_string()), "{e}");
    let one: u32 = c.query_first("SELECT 1").await.unwrap().unwrap();
    assert_eq!(one, 1, "the session goes on");
    c.close(a).await.unwrap();
    c.prep(sql(3)).await.expect("room again after a close");
    drop(c);
    p.shutdown();
}

/// `CREATE DATABASE d; USE d` right after it: the USE runs on a standby (a SET-like
/// statement), which must have applied the session's CREATE first (read your writes), or
/// the client gets 1049 where the primary would give none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_of_a_database_just_created_finds_it() {
    let p = start_default().await;
    let mut c = connect(&p, "app").await;
    let db = format!("fid_new_{}", std::process::id());
    for i in 0..10 {
        let name = format!("{db}_{i}");
        c.query_drop(format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        c.query_drop(format!("USE {name}"))
            .await
            .unwrap_or_else(|e| panic!("USE right after CREATE DATABASE: {e}"));
        c.query_drop("USE sbtest").await.unwrap();
        c.query_drop(format!("DROP DATABASE {name}")).await.unwrap();
    }
    drop(c);
    p.shutdown();
}

/// `SELECT ROW_COUNT()` reads the session's previous statement's count, whatever other
/// sessions do with the connection that ran it: the proxy answers it from the statement's
/// own OK (-1 after a result set), with the server's column definition; and
/// `SELECT CONNECTION_ID()` is typed as the server types it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row_count_belongs_to_the_session_under_load() {
    let p = start_default().await;
    let t = table("fid_rc");
    let mut setup = direct_as(PRIMARY, "app").await;
    setup
        .query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY, v INT)"))
        .await
        .unwrap();
    setup
        .query_drop(format!("INSERT INTO {t} VALUES (1, 0), (2, 0), (3, 0)"))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let noise: Vec<_> = (0..3)
        .map(|_| {
            let (opts, stop, t) = (opts(&p, "strict"), stop.clone(), t.clone());
            tokio::spawn(async move {
                let mut n = Conn::new(opts).await.unwrap();
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    n.query_drop(format!("UPDATE {t} SET v = v WHERE id = 1"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut c = connect(&p, "strict").await;
    let mut seen = Vec::new();
    for i in 0..20 {
        c.query_drop(format!("UPDATE {t} SET v = {} WHERE id >= 2", i + 1))
            .await
            .unwrap();
        let after_update: i64 = c.query_first("SELECT ROW_COUNT()").await.unwrap().unwrap();
        let after_select: i64 = c.query_first("SELECT ROW_COUNT()").await.unwrap().unwrap();
        seen.push((after_update, after_select));
    }
    stop.store(true, Ordering::Relaxed);
    for n in noise {
        n.await.unwrap();
    }
    setup.query_drop(format!("DROP TABLE {t}")).await.unwrap();
    assert!(
        seen.iter().all(|s| *s == (2, -1)),
        "(after UPDATE, after a SELECT): {seen:?}"
    );
    // the column definitions are the server's
    let (mut via, mut direct) = raw_pair(&p, "strict", modern(), 0, 45).await;
    for sql in ["SELECT ROW_COUNT()", "SELECT CONNECTION_ID()"] {
        let (a, b) = (via.query(sql).await, direct.query(sql).await);
        assert_eq!(
            a[1],
            b[1],
            "{sql}: column definition\n{}\n{}",
            hex(&a),
            hex(&b)
        );
    }
    p.shutdown();
}

/// `read_your_writes = "global"`: a read waits for the last write any session made through
/// the proxy, so another session sees a row the moment its writer got the OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_read_your_writes_covers_other_sessions() {
    let p = start(config(|c| {
        c.routing.read_your_writes = switchyard::config::ReadYourWrites::Global;
        c.routing.causal_timeout_ms = 5000;
    }))
    .await;
    let t = table("fid_glob");
    let mut setup = direct_as(PRIMARY, "app").await;
    setup
        .query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY, b LONGBLOB)"))
        .await
        .unwrap();
    wait_rows(&t, 0).await;
    let mut writer = connect(&p, "strict").await;
    let mut reader = connect(&p, "strict").await;
    let reads0 = load(&p.shared.stats.standby_reads);
    let blob = vec![b'g'; 1 << 20];
    let mut missing = 0;
    for i in 0..20 {
        writer
            .exec_drop(format!("INSERT INTO {t} VALUES (?, ?)"), (i, blob.clone()))
            .await
            .unwrap();
        let n: Option<u32> = reader
            .query_first(format!("SELECT LENGTH(b) FROM {t} WHERE id = {i}"))
            .await
            .unwrap();
        missing += usize::from(n.is_none());
    }
    setup.query_drop(format!("DROP TABLE {t}")).await.unwrap();
    assert_eq!(
        missing, 0,
        "rows another session had written were not visible"
    );
    assert!(
        load(&p.shared.stats.standby_reads) - reads0 >= 20,
        "the reads ran on standbys"
    );
    p.shutdown();
}

/// Pools are kept per connection class, but a user's `pool.max_per_user` places are shared
/// by its classes: idle connections of one class give their places up to another class,
/// which would otherwise wait out the lease timeout (9001).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_classes_share_its_places() {
    let p = start(config(|c| {
        c.pool.max_per_user = 2;
        c.pool.lease_timeout_ms = 2000;
    }))
    .await;
    // two modern sessions hold both of the user's places on the primary, then let them go
    let mut a = connect(&p, "strict").await;
    let mut b = connect(&p, "strict").await;
    a.query_drop("BEGIN").await.unwrap();
    b.query_drop("BEGIN").await.unwrap();
    a.query_drop("COMMIT").await.unwrap();
    b.query_drop("COMMIT").await.unwrap();
    assert_eq!(primary_pool(&p), (0, 2), "(in use, idle) on the primary");
    // a classic client (another class) needs the primary now
    let mut classic = raw::connect(p.listen.port(), "strict", "strict", raw::classic_caps())
        .await
        .unwrap();
    for _ in 0..3 {
        let r = classic
            .query_classic("/* switchyard: primary */ SELECT @@server_id")
            .await;
        assert_ne!(r[0][0], 0xFF, "{}", String::from_utf8_lossy(&r[0]));
    }
    p.shutdown();
}
