//! A fake Kubernetes apiserver for tests, over real HTTPS (a test CA, a checked bearer
//! token): pod list with resourceVersion and label selectors, newline-delimited JSON watch
//! streams (ADDED / MODIFIED / DELETED as pods start or stop matching, BOOKMARK),
//! timeoutSeconds, 410 Gone both as an ERROR event and as an HTTP status, and hooks for
//! tests to relabel, add and delete pods, flip readiness and drop every connection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const NAMESPACE: &str = "dolt-cluster-example";
pub const TOKEN: &str = "test-token-switchyard";

/// How a stale resourceVersion is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// HTTP 200 and one ERROR event with a 410 Status.
    ErrorEvent,
    /// HTTP 410 with a Status body.
    HttpStatus,
}

struct Change {
    rv: u64,
    before: Option<Value>,
    after: Option<Value>,
}

struct State {
    rv: u64,
    pods: BTreeMap<String, Value>,
    log: Vec<Change>,
    /// Watches asking for a version older than this get 410.
    oldest: u64,
    gone: Gone,
    requests: u64,
}

pub struct FakeK8s {
    pub port: u16,
    pub dir: PathBuf,
    state: Arc<Mutex<State>>,
    /// Bumped on every change; watch streams wait on it.
    changed: watch::Sender<u64>,
    /// Bumped to drop every connection.
    drops: watch::Sender<u64>,
}

impl FakeK8s {
    pub async fn start() -> FakeK8s {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!(
            "switchyard-fake-k8s-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let acceptor = tls(&dir);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            rv: 100,
            pods: BTreeMap::new(),
            log: Vec::new(),
            oldest: 0,
            gone: Gone::ErrorEvent,
            requests: 0,
        }));
        let changed = watch::channel(0).0;
        let drops = watch::channel(0).0;
        let srv = Server {
            state: state.clone(),
            changed: changed.clone(),
            drops: drops.clone(),
        };
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                tcp.set_nodelay(true).ok();
                let acceptor = acceptor.clone();
                let srv = srv.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        srv.connection(tls).await;
                    }
                });
            }
        });
        FakeK8s {
            port,
            dir,
            state,
            changed,
            drops,
        }
    }

    /// A kubeconfig for this server (explicit: never the machine's own).
    pub fn kubeconfig(&self) -> PathBuf {
        let path = self.dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: fake\n  user:\n    token: {TOKEN}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {NAMESPACE}\ncurrent-context: fake\n",
            self.port,
            self.dir.join("ca.crt").display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The service account directory of the in-cluster path (token, ca.crt).
    pub fn service_account_dir(&self) -> PathBuf {
        std::fs::write(self.dir.join("token"), TOKEN).unwrap();
        std::fs::write(self.dir.join("namespace"), NAMESPACE).unwrap();
        self.dir.clone()
    }

    pub fn requests(&self) -> u64 {
        self.state.lock().requests
    }

    /// Adds a Ready pod `name` at `ip` with labels app=dolt and the role label.
    pub fn add_pod(&self, name: &str, ip: &str, role: &str) {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": format!("uid-{name}"),
                         "labels": {"app": "dolt", "dolthub.com/cluster_role": role}},
            "spec": {"containers": [{"name": "dolt", "image": "dolthub/dolt-sql-server",
                                      "ports": [{"name": "mysql", "containerPort": 3306}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True"}]}
        });
        self.mutate(name, |_| Some(pod));
    }

    pub fn set_label(&self, name: &str, key: &str, value: &str) {
        self.mutate(name, |p| {
            let mut p = p?;
            p["metadata"]["labels"][key] = json!(value);
            Some(p)
        });
    }

    pub fn set_ready(&self, name: &str, ready: bool) {
        self.mutate(name, |p| {
            let mut p = p?;
            p["status"]["conditions"][0]["status"] = json!(if ready { "True" } else { "False" });
            Some(p)
        });
    }

    pub fn delete_pod(&self, name: &str) {
        self.mutate(name, |_| None);
    }

    /// Drops every open connection (an apiserver restart).
    pub fn drop_connections(&self) {
        self.drops.send_modify(|n| *n += 1);
    }

    /// Forgets history: watches resuming from an older version get 410 Gone, in `how`.
    pub fn expire_history(&self, how: Gone) {
        let mut s = self.state.lock();
        s.oldest = s.rv;
        s.gone = how;
        s.log.clear();
        drop(s);
        self.drop_connections();
    }

    fn mutate(&self, name: &str, f: impl FnOnce(Option<Value>) -> Option<Value>) {
        let mut s = self.state.lock();
        s.rv += 1;
        let rv = s.rv;
        let before = s.pods.get(name).cloned();
        let mut after = f(before.clone());
        if let Some(p) = after.as_mut() {
            p["metadata"]["resourceVersion"] = json!(rv.to_string());
            s.pods.insert(name.to_string(), p.clone());
        } else {
            s.pods.remove(name);
        }
        s.log.push(Change { rv, before, after });
        drop(s);
        self.changed.send_replace(rv);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(1);
    h.finish()
}

/// A test CA, and a server certificate for 127.0.0.1 signed by it; the CA goes to ca.crt.
fn tls(dir: &Path) -> tokio_rustls::TlsAcceptor {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], der)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

#[derive(Clone)]
struct Server {
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
    drops: watch::Sender<u64>,
}

struct Request {
    path: String,
    query: BTreeMap<String, String>,
    authorized: bool,
}

impl Server {
    async fn connection<S: AsyncRead + AsyncWrite + Unpin>(&self, mut s: S) {
        let mut drops = self.drops.subscribe();
        drops.borrow_and_update();
        let mut buf = Vec::new();
        loop {
            let req = tokio::select! {
                r = read_request(&mut s, &mut buf) => r,
                _ = drops.changed() => return,
            };
            let Some(req) = req else { return };
            self.state.lock().requests += 1;
            let keep = tokio::select! {
                k = self.respond(&mut s, req) => k,
                _ = drops.changed() => return,
            };
            if !keep {
                return;
            }
        }
    }

    async fn respond<S: AsyncWrite + Unpin>(&self, s: &mut S, req: Request) -> bool {
        if !req.authorized {
            return send_json(s, 401, &status(401, "Unauthorized")).await;
        }
        let want = format!("/api/v1/namespaces/{NAMESPACE}/pods");
        if let Some(ns) = req
            .path
            .strip_prefix("/api/v1/namespaces/")
            .and_then(|r| r.strip_suffix("/pods"))
            .filter(|ns| *ns != NAMESPACE)
        {
            // RBAC grants pods in NAMESPACE only, as deploy/base/role.yaml does
            let msg = format!("pods is forbidden: User \"system:serviceaccount:{NAMESPACE}:switchyard\" cannot list resource \"pods\" in API group \"\" in the namespace \"{ns}\"");
            return send_json(s, 403, &status(403, &msg)).await;
        }
        if req.path != want {
            return send_json(s, 404, &status(404, "NotFound")).await;
        }
        let selector = req.query.get("labelSelector").cloned().unwrap_or_default();
        if req.query.get("watch").map(String::as_str) == Some("true") {
            return self.watch(s, &req, &selector).await;
        }
        let body = {
            let st = self.state.lock();
            let items: Vec<&Value> = st.pods.values().filter(|p| matches(&selector, p)).collect();
            json!({"kind": "PodList", "apiVersion": "v1",
                   "metadata": {"resourceVersion": st.rv.to_string()}, "items": items})
        };
        send_json(s, 200, &body).await
    }

    async fn watch<S: AsyncWrite + Unpin>(&self, s: &mut S, req: &Request, selector: &str) -> bool {
        let from: u64 = req
            .query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let timeout = req
            .query
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(290);
        let bookmarks = req.query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
        let (oldest, gone) = {
            let st = self.state.lock();
            (st.oldest, st.gone)
        };
        if from < oldest {
            let body = status(410, "Expired");
            if gone == Gone::HttpStatus {
                return send_json(s, 410, &body).await;
            }
            return write_head(s).await
                && chunk(s, &json!({"type": "ERROR", "object": body})).await
                && end(s).await;
        }
        if !write_head(s).await {
            return false;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut changed = self.changed.subscribe();
        let mut cursor = from;
        loop {
            let (events, rv) = self.events_since(cursor, selector);
            for e in &events {
                if !chunk(s, e).await {
                    return false;
                }
            }
            cursor = rv;
            if bookmarks {
                let b = json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                               "metadata": {"resourceVersion": rv.to_string()}}});
                if !chunk(s, &b).await {
                    return false;
                }
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return end(s).await,
            }
        }
    }

    /// Watch events after `cursor` for pods matching `selector`, and the newest version.
    fn events_since(&self, cursor: u64, selector: &str) -> (Vec<Value>, u64) {
        let st = self.state.lock();
        let mut out = Vec::new();
        for c in st.log.iter().filter(|c| c.rv > cursor) {
            let was = c.before.as_ref().is_some_and(|p| matches(selector, p));
            let is = c.after.as_ref().is_some_and(|p| matches(selector, p));
            let ev = match (was, is) {
                (false, true) => ("ADDED", c.after.clone()),
                (true, true) => ("MODIFIED", c.after.clone()),
                (true, false) => {
                    let mut gone = c.after.clone().or(c.before.clone()).unwrap_or_default();
                    gone["metadata"]["resourceVersion"] = json!(c.rv.to_string());
                    ("DELETED", Some(gone))
                }
                (false, false) => continue,
            };
            out.push(json!({"type": ev.0, "object": ev.1}));
        }
        (out, st.rv)
    }
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

/// Label selector: comma-separated `k=v`, `k==v`, `k!=v`, `k` (exists), `!k`.
pub fn matches(selector: &str, pod: &Value) -> bool {
    let labels = &pod["metadata"]["labels"];
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            let get = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
            if let Some((k, v)) = term.split_once("!=") {
                get(k) != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                get(k) == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                get(k).is_none()
            } else {
                get(term).is_some()
            }
        })
}

async fn read_request<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Option<Request> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Some(parse_request(&head));
        }
        let mut tmp = [0u8; 4096];
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn parse_request(head: &str) -> Request {
    let mut lines = head.split("\r\n");
    let target = lines
        .next()
        .unwrap_or_default()
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let authorized = lines.any(|l| {
        let (k, v) = l.split_once(':').unwrap_or_default();
        k.eq_ignore_ascii_case("authorization") && v.trim() == format!("Bearer {TOKEN}")
    });
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let query = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), decode(v)))
        .collect();
    Request {
        path: path.to_string(),
        query,
        authorized,
    }
}

fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(h.unwrap_or(b'%'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn send_json<S: AsyncWrite + Unpin>(s: &mut S, code: u16, body: &Value) -> bool {
    let text = body.to_string();
    let head = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        text.len()
    );
    s.write_all(head.as_bytes()).await.is_ok()
        && s.write_all(text.as_bytes()).await.is_ok()
        && s.flush().await.is_ok()
}

async fn write_head<S: AsyncWrite + Unpin>(s: &mut S) -> bool {
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    s.write_all(head.as_bytes()).await.is_ok() && s.flush().await.is_ok()
}

async fn chunk<S: AsyncWrite + Unpin>(s: &mut S, v: &Value) -> bool {
    let line = format!("{v}\n");
    let c = format!("{:x}\r\n{line}\r\n", line.len());
    s.write_all(c.as_bytes()).await.is_ok() && s.flush().await.is_ok()
}

async fn end<S: AsyncWrite + Unpin>(s: &mut S) -> bool {
    s.write_all(b"0\r\n\r\n").await.is_ok() && s.flush().await.is_ok()
}
