//! Health and role probes, one task per backend, over mysql_async with the monitor
//! credentials: liveness, role (`@@read_only`, or Dolt's `@@dolt_cluster_role` and its
//! epoch) and, for standbys when a maximum is set, replication lag. Every interval, every
//! `fast_interval` while no backend is primary, and at once when poked.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row};
use tokio::sync::{mpsc, watch, Notify};

use super::Update;
use crate::config::{BackendKind, Role};

#[derive(Debug, Clone)]
pub struct ProbeParams {
    pub kind: BackendKind,
    pub interval: Duration,
    pub fast_interval: Duration,
    pub timeout: Duration,
    /// Failures in a row before a backend is reported down.
    pub failures: u32,
    /// Read replication lag of standbys.
    pub lag: bool,
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    /// Primary or Standby.
    pub role: Role,
    pub epoch: Option<u64>,
    /// Replication lag of a standby; None: unknown (replication stopped or broken).
    pub lag_ms: Option<u64>,
    /// A Dolt primary's report of its standbys' lag (standby remote, ms).
    pub reported_lags: Vec<(String, Option<u64>)>,
}

/// Probes one backend until the owner goes away.
pub async fn probe_loop(
    id: usize,
    opts: Opts,
    p: ProbeParams,
    updates: mpsc::Sender<Update>,
    poke: Arc<Notify>,
    mut fast: watch::Receiver<bool>,
) {
    let mut conn: Option<Conn> = None;
    let mut failed = 0u32;
    loop {
        let result = tokio::time::timeout(p.timeout, probe_once(&mut conn, &opts, &p))
            .await
            .unwrap_or_else(|_| Err(format!("probe timed out after {:?}", p.timeout)));
        let report = match result {
            Ok(found) => {
                failed = 0;
                Some(Update::Probe {
                    id,
                    result: Ok(found),
                })
            }
            Err(e) => {
                conn = None;
                failed += 1;
                (failed >= p.failures).then_some(Update::Probe { id, result: Err(e) })
            }
        };
        if let Some(r) = report {
            if updates.send(r).await.is_err() {
                return;
            }
        }
        // a failover kills connections, fresh ones too: a few quick retries before backing off
        let missing_primary = *fast.borrow_and_update();
        let wait = match failed {
            0 if missing_primary => p.fast_interval,
            0 => p.interval,
            1..=3 => p.fast_interval.max(Duration::from_millis(5)),
            _ => Duration::from_millis(250),
        };
        // a primary going missing ends a long sleep at once
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = poke.notified() => {}
            _ = fast.changed() => {}
        }
    }
}

/// One probe; a kept connection that fails gets one fresh retry before it counts.
async fn probe_once(
    conn: &mut Option<Conn>,
    opts: &Opts,
    p: &ProbeParams,
) -> Result<Probed, String> {
    if let Some(c) = conn.as_mut() {
        if let Ok(found) = query_role(c, p).await {
            return Ok(found);
        }
    }
    *conn = None;
    let mut c = Conn::new(opts.clone()).await.map_err(|e| e.to_string())?;
    let found = query_role(&mut c, p).await.map_err(|e| e.to_string())?;
    *conn = Some(c);
    Ok(found)
}

async fn query_role(c: &mut Conn, p: &ProbeParams) -> Result<Probed, mysql_async::Error> {
    let (role, epoch) = match p.kind {
        BackendKind::Dolt => {
            let r: Option<(String, u64)> = c
                .query_first("SELECT @@GLOBAL.dolt_cluster_role, @@GLOBAL.dolt_cluster_role_epoch")
                .await?;
            let (name, epoch) = r.unwrap_or_default();
            // `detected_broken_config` takes no writes: a standby at best
            let role = if name == "primary" {
                Role::Primary
            } else {
                Role::Standby
            };
            (role, Some(epoch))
        }
        BackendKind::Mariadb | BackendKind::Mysql => {
            let ro: Option<u64> = c.query_first("SELECT @@GLOBAL.read_only").await?;
            (
                if ro == Some(0) {
                    Role::Primary
                } else {
                    Role::Standby
                },
                None,
            )
        }
    };
    let lag_ms = if p.lag && role == Role::Standby {
        lag(c, p.kind).await?
    } else {
        Some(0)
    };
    // Dolt reports replication lag on the primary, one row per standby
    let reported_lags = if p.lag && role == Role::Primary && p.kind == BackendKind::Dolt {
        c.query::<(String, Option<u64>), _>(
            "SELECT standby_remote, replication_lag_millis FROM dolt_cluster.dolt_cluster_status",
        )
        .await?
    } else {
        Vec::new()
    };
    Ok(Probed {
        role,
        epoch,
        lag_ms,
        reported_lags,
    })
}

async fn lag(c: &mut Conn, kind: BackendKind) -> Result<Option<u64>, mysql_async::Error> {
    Ok(match kind {
        BackendKind::Mariadb => seconds(
            c.query_first("SHOW SLAVE STATUS").await?,
            "Seconds_Behind_Master",
        ),
        BackendKind::Mysql => seconds(
            c.query_first("SHOW REPLICA STATUS").await?,
            "Seconds_Behind_Source",
        ),
        BackendKind::Dolt => c
            .query_first::<Option<u64>, _>(
                "SELECT MAX(replication_lag_millis) FROM dolt_cluster.dolt_cluster_status",
            )
            .await?
            .flatten(),
    })
}

fn seconds(row: Option<Row>, column: &str) -> Option<u64> {
    let s: Option<u64> = row?.get_opt(column)?.ok()?;
    s.map(|s| s * 1000)
}
