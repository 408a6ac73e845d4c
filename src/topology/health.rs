//! Health checks: one task per backend keeps a monitor connection and pings it every
//! interval (or at once when poked by a passive failure signal), reporting to the owner.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use super::Update;
use crate::backend::{BackendConn, ConnectParams};
use crate::protocol::command::COM_PING;

#[derive(Debug, Clone)]
pub struct HealthParams {
    pub interval: Duration,
    pub timeout: Duration,
    /// Failures in a row before a backend is reported unhealthy.
    pub failures: u32,
    /// Pause after a failure before the next try.
    pub backoff: Duration,
}

/// Runs the checks of one backend until the owner goes away.
pub async fn check_loop(
    id: usize,
    params: ConnectParams,
    hp: HealthParams,
    updates: mpsc::Sender<Update>,
    poke: Arc<Notify>,
) {
    let mut conn: Option<BackendConn> = None;
    let mut failed = 0u32;
    loop {
        let result = check_once(&mut conn, &params, hp.timeout).await;
        let report = match result {
            Ok(()) => {
                failed = 0;
                Some(Update::Health {
                    id,
                    ok: true,
                    error: None,
                })
            }
            Err(e) => {
                conn = None;
                failed += 1;
                (failed >= hp.failures).then_some(Update::Health {
                    id,
                    ok: false,
                    error: Some(e),
                })
            }
        };
        if let Some(r) = report {
            if updates.send(r).await.is_err() {
                return;
            }
        }
        let wait = if failed > 0 { hp.backoff } else { hp.interval };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = poke.notified() => {}
        }
    }
}

async fn check_once(
    conn: &mut Option<BackendConn>,
    params: &ConnectParams,
    timeout: Duration,
) -> Result<(), String> {
    let fut = async {
        // a kept connection may have died on its own (killed, wait_timeout): one failure
        // there is no verdict; a fresh connection decides
        if let Some(c) = conn.as_mut() {
            if c.simple(&[COM_PING]).await.is_ok() {
                return Ok(());
            }
        }
        *conn = None;
        let mut c = BackendConn::connect(params)
            .await
            .map_err(|e| e.to_string())?;
        c.simple(&[COM_PING]).await.map_err(|e| e.to_string())?;
        *conn = Some(c);
        Ok(())
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("health check timed out after {timeout:?}")),
    }
}
