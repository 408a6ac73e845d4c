//! The accept loop: TCP_NODELAY, the client connection limit (over it a client gets
//! ERR 1040 and is closed), one task per session.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::error::ClientError;
use crate::protocol::packet::encode_packet;
use crate::session::{self, Shared};

/// Accepts clients until `shutdown` turns true.
pub async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    max_clients: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_clients));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        stream.set_nodelay(true).ok();
        shared
            .stats
            .accepted_connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let stream = crate::tls::ClientStream::Plain(stream);
                    session::serve(stream, shared, peer.ip().to_string()).await;
                    drop(permit);
                });
            }
            Err(_) => {
                shared
                    .stats
                    .rejected_connections
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(%peer, "client connection limit reached");
                tokio::spawn(reject(stream));
            }
        }
    }
}

async fn reject(mut stream: tokio::net::TcpStream) {
    let mut out = Vec::new();
    encode_packet(&mut out, 0, &ClientError::TooManyConnections.payload());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.write_all(&out)).await;
    let _ = stream.shutdown().await;
}
