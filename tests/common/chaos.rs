//! A TCP forwarder on loopback that stands between switchyard and one backend and can cut
//! every connection through it at once, refuse new ones, or drop what flows through open
//! ones: a backend dying, without touching the real cluster.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What passes through the forwarder's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Flow {
    /// Everything, both ways.
    Both = 0,
    /// What the client sends reaches the server; the server's replies are dropped.
    NoReplies = 1,
    /// Nothing: bytes either way are dropped.
    Nothing = 2,
}

pub struct Chaos {
    pub port: u16,
    cut: watch::Sender<u64>,
    refuse: Arc<AtomicBool>,
    flow: Arc<AtomicU8>,
    trigger: Trigger,
}

/// Bytes that, once a client sends them, set the flow (before they are passed on or not).
type Trigger = Arc<std::sync::Mutex<Option<(Vec<u8>, Flow)>>>;

impl Chaos {
    pub async fn start(target: &'static str) -> Chaos {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (cut, rx) = watch::channel(0u64);
        let refuse = Arc::new(AtomicBool::new(false));
        let flow = Arc::new(AtomicU8::new(Flow::Both as u8));
        let r = refuse.clone();
        let f = flow.clone();
        let trigger = Trigger::default();
        let tr = trigger.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                if r.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut rx = rx.clone();
                rx.borrow_and_update();
                let f = f.clone();
                let tr = tr.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    client.set_nodelay(true).ok();
                    server.set_nodelay(true).ok();
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    // a flow set by a trigger holds for this connection until it is cut,
                    // whatever the forwarder's flow becomes meanwhile
                    let own = Arc::new(AtomicU8::new(Flow::Both as u8));
                    let up = Pump {
                        flow: f.clone(),
                        own: own.clone(),
                        drops_from: Flow::Nothing,
                    };
                    let down = Pump {
                        flow: f,
                        own,
                        drops_from: Flow::NoReplies,
                    };
                    tokio::select! {
                        _ = up.run(cr, sw, Some(tr)) => {}
                        _ = down.run(sr, cw, None) => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        Chaos {
            port,
            cut,
            refuse,
            flow,
            trigger,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Closes every connection through the forwarder now.
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// What passes through the open connections (and new ones) from now on.
    pub fn flow(&self, f: Flow) {
        self.flow.store(f as u8, Ordering::SeqCst);
    }

    /// The flow becomes `f` as soon as a client sends `bytes` (they included), once.
    pub fn flow_on_sent(&self, bytes: &[u8], f: Flow) {
        *self.trigger.lock().unwrap() = Some((bytes.to_vec(), f));
    }

    /// The flow now.
    pub fn flow_now(&self) -> Flow {
        match self.flow.load(Ordering::SeqCst) {
            0 => Flow::Both,
            1 => Flow::NoReplies,
            _ => Flow::Nothing,
        }
    }

    /// Refuses (closes at once) new connections while true.
    pub fn refuse(&self, on: bool) {
        self.refuse.store(on, Ordering::SeqCst);
    }
}

/// One direction of a connection: drops what arrives while the forwarder's flow, or the
/// connection's own, is `drops_from` or less open.
struct Pump {
    flow: Arc<AtomicU8>,
    own: Arc<AtomicU8>,
    drops_from: Flow,
}

impl Pump {
    /// Copies until either side closes; a chunk holding the trigger's bytes sets the flow
    /// (the forwarder's and this connection's) first.
    async fn run(self, mut from: OwnedReadHalf, mut to: OwnedWriteHalf, trigger: Option<Trigger>) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if let Some(t) = &trigger {
                let mut t = t.lock().unwrap();
                let hit = t
                    .as_ref()
                    .is_some_and(|(b, _)| buf[..n].windows(b.len()).any(|w| w == b.as_slice()));
                if hit {
                    let (_, f) = t.take().unwrap();
                    self.own.store(f as u8, Ordering::SeqCst);
                    self.flow.store(f as u8, Ordering::SeqCst);
                }
            }
            let now = self
                .flow
                .load(Ordering::SeqCst)
                .max(self.own.load(Ordering::SeqCst));
            if now >= self.drops_from as u8 {
                continue;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}
