//! A TCP forwarder on loopback that stands between switchyard and one backend and can cut
//! every connection through it at once, or refuse new ones: a backend dying, without
//! touching the real cluster.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Chaos {
    pub port: u16,
    cut: watch::Sender<u64>,
    refuse: Arc<AtomicBool>,
}

impl Chaos {
    pub async fn start(target: &'static str) -> Chaos {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (cut, rx) = watch::channel(0u64);
        let refuse = Arc::new(AtomicBool::new(false));
        let r = refuse.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                if r.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut rx = rx.clone();
                rx.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut client = client;
                    client.set_nodelay(true).ok();
                    server.set_nodelay(true).ok();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        Chaos { port, cut, refuse }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Closes every connection through the forwarder now.
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Refuses (closes at once) new connections while true.
    pub fn refuse(&self, on: bool) {
        self.refuse.store(on, Ordering::SeqCst);
    }
}
