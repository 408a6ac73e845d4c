//! A Dolt stand-in server for tests, built on switchyard's own protocol module: it answers
//! `@@dolt_cluster_role` and `@@dolt_cluster_role_epoch`, refuses writes on a standby with
//! Dolt's exact error (1105, "database server is set to read only mode"), lacks
//! COM_CHANGE_USER ("command handling not implemented yet: 17"), and drops every client
//! connection when its role changes, as Dolt does. No Dolt binary can be installed here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use switchyard::protocol::handshake::{greeting, parse_hello};
use switchyard::protocol::messages::{
    column_def, eof_payload, err_payload, ok_payload, ok_payload_with, write_lenenc, OkInfo,
};
use switchyard::protocol::packet::PacketStream;
use switchyard::protocol::{auth, CapabilityFlags, StatusFlags};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const READ_ONLY: &str = "database server is set to read only mode";

pub struct Dolt {
    pub port: u16,
    role: Arc<Mutex<(String, u64)>>,
    drops: watch::Sender<u64>,
    /// Writes it accepted.
    pub writes: Arc<AtomicU64>,
    /// Connections it accepted.
    pub connections: Arc<AtomicU64>,
    /// Connections it closed (dropped on a role change, or ended).
    pub closed: Arc<AtomicU64>,
    /// COM_RESET_CONNECTION commands it got.
    pub resets: Arc<AtomicU64>,
}

impl Dolt {
    pub async fn start(role: &str, epoch: u64) -> Dolt {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let d = Dolt {
            port,
            role: Arc::new(Mutex::new((role.to_string(), epoch))),
            drops: watch::channel(0).0,
            writes: Arc::new(AtomicU64::new(0)),
            connections: Arc::new(AtomicU64::new(0)),
            closed: Arc::new(AtomicU64::new(0)),
            resets: Arc::new(AtomicU64::new(0)),
        };
        let (role, drops, writes, conns, closed, resets) = (
            d.role.clone(),
            d.drops.clone(),
            d.writes.clone(),
            d.connections.clone(),
            d.closed.clone(),
            d.resets.clone(),
        );
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                s.set_nodelay(true).ok();
                conns.fetch_add(1, Ordering::Relaxed);
                let c = Conn {
                    role: role.clone(),
                    writes: writes.clone(),
                    classic: false,
                    in_txn: Default::default(),
                    resets: resets.clone(),
                };
                let mut dropped = drops.subscribe();
                dropped.borrow_and_update();
                let closed = closed.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = c.serve(s) => {}
                        _ = dropped.changed() => {}
                    }
                    closed.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
        d
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Changes the role as Dolt does: every client connection is dropped.
    pub fn set_role(&self, role: &str, epoch: u64) {
        *self.role.lock() = (role.to_string(), epoch);
        self.drops.send_modify(|n| *n += 1);
    }

    /// [`Dolt::set_role`], then waits (bounded: 2 s) until the connections open before it
    /// are closed, so that what the proxy sends next meets a closed connection, not one
    /// racing its close.
    pub async fn set_role_and_settle(&self, role: &str, epoch: u64) {
        let closed = self.closed.load(Ordering::Relaxed);
        let live = self.connections.load(Ordering::Relaxed) - closed;
        self.set_role(role, epoch);
        for _ in 0..200 {
            if self.closed.load(Ordering::Relaxed) >= closed + live {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Changes the role without dropping connections (to test the read-only re-route).
    pub fn set_role_quietly(&self, role: &str, epoch: u64) {
        *self.role.lock() = (role.to_string(), epoch);
    }
}

struct Conn {
    role: Arc<Mutex<(String, u64)>>,
    writes: Arc<AtomicU64>,
    classic: bool,
    /// A transaction is open (reported in status flags, as Dolt does).
    in_txn: std::sync::atomic::AtomicBool,
    resets: Arc<AtomicU64>,
}

/// What Dolt's greeting says: a MySQL 8 version, no session tracking.
fn dolt_profile() -> switchyard::protocol::handshake::ServerProfile {
    let mut p = switchyard::protocol::handshake::ServerProfile::fallback("8.0.33-dolt-standin");
    p.caps -= CapabilityFlags::CLIENT_SESSION_TRACK;
    p
}

impl Conn {
    async fn serve(mut self, s: TcpStream) {
        let mut io = PacketStream::new(s, 1 << 26);
        let scramble = auth::new_scramble();
        if io
            .send(0, &greeting(1, &scramble, &dolt_profile(), false))
            .await
            .is_err()
        {
            return;
        }
        let Ok(p) = io.read_packet().await else {
            return;
        };
        let Ok(hello) = parse_hello(&p.payload) else {
            return;
        };
        self.classic = !hello
            .capabilities
            .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        if io
            .send(
                p.seq + 1,
                &ok_payload(StatusFlags::SERVER_STATUS_AUTOCOMMIT),
            )
            .await
            .is_err()
        {
            return;
        }
        while let Ok(p) = io.read_packet().await {
            let reply = self.command(&p.payload);
            if reply.is_empty() {
                return;
            }
            let mut seq = 1;
            for r in &reply {
                seq = io.queue(seq, r);
            }
            if io.flush().await.is_err() {
                return;
            }
        }
    }

    /// The reply packets for one command (none: close).
    fn command(&self, p: &[u8]) -> Vec<Vec<u8>> {
        let ok = || vec![ok_payload(StatusFlags::SERVER_STATUS_AUTOCOMMIT)];
        match p.first() {
            Some(0x01) | None => Vec::new(),
            Some(0x03) => self.query(&String::from_utf8_lossy(&p[1..])),
            Some(0x1f) => {
                self.resets.fetch_add(1, Ordering::Relaxed);
                ok()
            }
            Some(0x0e | 0x02) => ok(),
            Some(0x11) => vec![err_payload(
                1047,
                b"HY000",
                b"command handling not implemented yet: 17",
            )],
            Some(0x1b) => vec![eof_payload(0, self.status()).to_vec()],
            Some(c) => vec![err_payload(
                1047,
                b"08S01",
                format!("command handling not implemented yet: {c}").as_bytes(),
            )],
        }
    }

    fn query(&self, sql: &str) -> Vec<Vec<u8>> {
        let t = sql.trim().trim_end_matches(';').trim();
        let word = t
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match word.as_str() {
            "SELECT" => self.select(&t[6..]),
            "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "CREATE" | "DROP" | "ALTER" => {
                if self.role.lock().0 != "primary" {
                    return vec![err_payload(1105, b"HY000", READ_ONLY.as_bytes())];
                }
                self.writes.fetch_add(1, Ordering::Relaxed);
                let ok = OkInfo {
                    affected_rows: 1,
                    status: self.status(),
                    ..OkInfo::default()
                };
                vec![ok_payload_with(0, &ok)]
            }
            "BEGIN" | "START" | "COMMIT" | "ROLLBACK" => {
                let begins = matches!(word.as_str(), "BEGIN" | "START");
                self.in_txn.store(begins, Ordering::Relaxed);
                vec![ok_payload(StatusFlags::from_bits_truncate(self.status()))]
            }
            _ => vec![ok_payload(StatusFlags::from_bits_truncate(self.status()))],
        }
    }

    /// Status flags: autocommit, and in-transaction while one is open.
    fn status(&self) -> u16 {
        2 | u16::from(self.in_txn.load(Ordering::Relaxed))
    }

    /// `SELECT item, ...` where items are @@variables or literals: one row.
    fn select(&self, list: &str) -> Vec<Vec<u8>> {
        let list = list.split(" FROM ").next().unwrap_or(list);
        let items: Vec<&str> = list.split(',').map(str::trim).collect();
        let values: Vec<Option<String>> = items.iter().map(|i| self.value(i)).collect();
        let mut out = Vec::new();
        let mut count = Vec::new();
        write_lenenc(&mut count, items.len() as u64);
        out.push(count);
        for i in &items {
            out.push(column_def(i, 0xFD, 0, 255, 45));
        }
        if self.classic {
            out.push(eof_payload(0, self.status()).to_vec());
        }
        let mut row = Vec::new();
        for v in values {
            match v {
                Some(v) => {
                    write_lenenc(&mut row, v.len() as u64);
                    row.extend_from_slice(v.as_bytes());
                }
                None => row.push(0xFB),
            }
        }
        out.push(row);
        if self.classic {
            out.push(eof_payload(0, self.status()).to_vec());
        } else {
            out.push(ok_payload_with(
                0xFE,
                &OkInfo {
                    status: self.status(),
                    ..OkInfo::default()
                },
            ));
        }
        out
    }

    fn value(&self, item: &str) -> Option<String> {
        let Some(var) = item.strip_prefix("@@") else {
            return Some(item.trim_matches('\'').to_string());
        };
        let var = var.to_ascii_lowercase();
        let var = var
            .trim_start_matches("global.")
            .trim_start_matches("session.");
        let (role, epoch) = self.role.lock().clone();
        Some(match var {
            "dolt_cluster_role" => role,
            "dolt_cluster_role_epoch" => epoch.to_string(),
            "max_allowed_packet" => "67108864".into(),
            "wait_timeout" => "28800".into(),
            "read_only" => "0".into(), // Dolt 1.54 does not reflect the role here
            _ => return None,
        })
    }
}
