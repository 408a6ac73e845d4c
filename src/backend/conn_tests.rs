//! A backend connection over an in-memory stream: the handshake, the GTID and
//! state-change tracking it asks for, and the sync plan on the wire, against a tiny server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::state::{Charset, ConnState};
use super::{BackendConn, ConnectParams};
use crate::protocol::handshake::{greeting, ServerProfile};
use crate::protocol::messages::ok_payload;
use crate::protocol::packet::PacketStream;
use crate::protocol::{auth, ConnClass, StatusFlags};

fn params() -> ConnectParams {
    ConnectParams {
        address: "in-memory".into(),
        user: "app".into(),
        password: "app".into(),
        connect_timeout: Duration::from_secs(5),
        max_packet: 1 << 24,
        statement_cache: 8,
        class: ConnClass::modern(),
    }
}

/// A server that greets as MariaDB, accepts any login, answers every command with OK and
/// records the commands it got.
fn server(s: tokio::io::DuplexStream) -> Arc<Mutex<Vec<Vec<u8>>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    tokio::spawn(async move {
        let mut io = PacketStream::new(s, 1 << 24);
        let mut profile = ServerProfile::fallback("5.5.5-10.11.6-MariaDB");
        profile.mariadb = true;
        let ok = ok_payload(StatusFlags::SERVER_STATUS_AUTOCOMMIT);
        io.send(0, &greeting(7, &auth::new_scramble(), &profile, false))
            .await
            .unwrap();
        let hello = io.read_packet().await.unwrap();
        io.send(hello.seq + 1, &ok).await.unwrap();
        while let Ok(p) = io.read_packet().await {
            seen.lock().unwrap().push(p.payload.to_vec());
            if io.send(p.seq + 1, &ok).await.is_err() {
                return;
            }
        }
    });
    got
}

fn text(p: &[u8]) -> String {
    String::from_utf8_lossy(&p[1..]).into_owned()
}

#[tokio::test]
async fn a_connection_asks_for_tracking_and_syncs_the_sessions_state() {
    let (client, srv) = tokio::io::duplex(1 << 16);
    let got = server(srv);
    let mut c = BackendConn::over(Box::new(client), &params())
        .await
        .unwrap();
    assert_eq!(c.thread_id, 7);
    assert!(c.tracks && c.profile.mariadb);
    let mut want = ConnState {
        schema: Some("sbtest".into()),
        charset: Charset::Names {
            charset: "latin1".into(),
            collation: None,
        },
        ..ConnState::default()
    };
    want.vars.insert("sql_mode".into(), "'ANSI'".into());
    c.sync(&want).await.unwrap();
    c.sync(&want).await.unwrap(); // in sync: nothing more is sent
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        text(&got[0]).contains("last_gtid") && text(&got[0]).contains("session_track_state_change")
    );
    assert_eq!(got[1], b"\x02sbtest".to_vec(), "COM_INIT_DB");
    assert_eq!(text(&got[2]), "SET NAMES latin1, SESSION sql_mode = 'ANSI'");
    assert!(c.looks_alive());
}

#[tokio::test]
async fn a_reset_asks_for_tracking_again() {
    let (client, srv) = tokio::io::duplex(1 << 16);
    let got = server(srv);
    let mut c = BackendConn::over(Box::new(client), &params())
        .await
        .unwrap();
    c.reset().await.unwrap();
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[1], vec![crate::protocol::command::COM_RESET_CONNECTION]);
    assert!(
        text(&got[2]).contains("last_gtid"),
        "tracking is session state: set again"
    );
}
