//! Kubernetes discovery: watches the pods of a namespace by label selector. A Ready pod
//! with an IP is a backend at IP:port (a fixed port or a named container port); its role
//! label (`primary` / `standby`) is a hint the probes must confirm. The watch survives
//! disconnects, 410 Gone (both forms) and apiserver restarts: errors back off briefly, and
//! a watch that keeps failing starts over with a fresh list. The namespace is the
//! configured one, else the pod's own (the service account's, or the kubeconfig context's),
//! so a kustomize overlay that moves switchyard moves what it watches. A 403 (RBAC does not
//! let it list pods there) is said plainly and withdraws readiness until a list succeeds.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;

use crate::config::{DiscoveryConfig, Role};
use crate::topology::{Endpoint, Update};

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("in-cluster config: {0}")]
    InCluster(String),
    #[error("kubeconfig {0}: {1}")]
    Kubeconfig(String, String),
    #[error("kubernetes client: {0}")]
    Client(String),
}

/// Watch errors in a row after which the watcher starts over from a fresh list.
const MAX_ERRORS: u32 = 5;

/// Runs discovery until the topology owner goes away.
pub fn spawn(cfg: DiscoveryConfig, updates: mpsc::Sender<Update>) {
    tokio::spawn(async move {
        loop {
            match client(&cfg).await {
                Ok(c) => {
                    if watch(c, &cfg, &updates).await.is_err() {
                        return; // the owner is gone
                    }
                }
                Err(e) => tracing::warn!(error = %e, "kubernetes discovery cannot start; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// A client from the kubeconfig file, or from the in-cluster service account.
pub async fn client(cfg: &DiscoveryConfig) -> Result<Client, DiscoveryError> {
    let config = if cfg.kubeconfig.is_empty() {
        in_cluster(Path::new(&cfg.service_account_dir), &cfg.namespace, |k| {
            std::env::var(k).ok()
        })?
    } else {
        let kc = kube::config::Kubeconfig::read_from(&cfg.kubeconfig)
            .map_err(|e| DiscoveryError::Kubeconfig(cfg.kubeconfig.clone(), e.to_string()))?;
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| DiscoveryError::Kubeconfig(cfg.kubeconfig.clone(), e.to_string()))?
    };
    Client::try_from(config).map_err(|e| DiscoveryError::Client(e.to_string()))
}

/// The in-cluster config: KUBERNETES_SERVICE_HOST/PORT from `env`, the service account's
/// token and CA from `dir`.
pub fn in_cluster(
    dir: &Path,
    namespace: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<kube::Config, DiscoveryError> {
    let err = |m: String| DiscoveryError::InCluster(m);
    let host = env("KUBERNETES_SERVICE_HOST")
        .ok_or_else(|| err("KUBERNETES_SERVICE_HOST is not set".into()))?;
    let port = env("KUBERNETES_SERVICE_PORT")
        .ok_or_else(|| err("KUBERNETES_SERVICE_PORT is not set".into()))?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!("https://{host}:{port}")
        .parse()
        .map_err(|e| err(format!("server address: {e}")))?;
    let token = std::fs::read_to_string(dir.join("token"))
        .map_err(|e| err(format!("{}/token: {e}", dir.display())))?;
    let ca_path = dir.join("ca.crt");
    let certs: Vec<Vec<u8>> = CertificateDer::pem_file_iter(&ca_path)
        .map_err(|e| err(format!("{}: {e}", ca_path.display())))?
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("{}: {e}", ca_path.display())))?;
    let mut config = kube::Config::new(url);
    // empty: the pod's own namespace, as the service account says
    config.default_namespace = if namespace.is_empty() {
        std::fs::read_to_string(dir.join("namespace"))
            .map(|n| n.trim().to_string())
            .unwrap_or_else(|_| "default".into())
    } else {
        namespace.to_string()
    };
    config.root_cert = Some(certs);
    config.auth_info.token = Some(token.trim().to_string().into());
    Ok(config)
}

/// Short, bounded backoff: 50 ms doubling to 1 s (the default starts at 1.4 s: a failover
/// must not wait on it).
struct ShortBackoff(Duration);

impl Iterator for ShortBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(1));
        Some(d)
    }
}

impl Backoff for ShortBackoff {
    fn reset(&mut self) {
        self.0 = Duration::from_millis(50);
    }
}

/// Watches until too many errors in a row (Ok: start over) or the owner is gone (Err).
async fn watch(
    client: Client,
    cfg: &DiscoveryConfig,
    updates: &mpsc::Sender<Update>,
) -> Result<(), ()> {
    let namespace = if cfg.namespace.is_empty() {
        client.default_namespace().to_string()
    } else {
        cfg.namespace.clone()
    };
    tracing::info!(%namespace, selector = %cfg.selector, "kubernetes discovery: watching pods");
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let wc = watcher::Config::default()
        .labels(&cfg.selector)
        .timeout(290);
    let mut stream = watcher::watcher(api, wc)
        .backoff(ShortBackoff(Duration::from_millis(50)))
        .boxed();
    let mut pods: BTreeMap<String, Endpoint> = BTreeMap::new();
    let mut staging: Option<BTreeMap<String, Endpoint>> = None;
    let mut errors = 0u32;
    let mut sent: Option<Vec<Endpoint>> = None;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(ev) => {
                errors = 0;
                apply_event(ev, cfg, &mut pods, &mut staging);
            }
            Err(e) => {
                errors += 1;
                if let Some(why) = forbidden(&e) {
                    tracing::error!(%namespace, selector = %cfg.selector, reason = %why,
                        "kubernetes discovery is forbidden: this service account may not list and watch pods in namespace {namespace}; grant it get, list and watch on pods there (deploy/base/role.yaml) or set discovery.namespace; not ready until it can");
                    let u = Update::DiscoveryFailed(format!(
                        "forbidden in namespace {namespace}: {why}"
                    ));
                    updates.send(u).await.map_err(|_| ())?;
                    sent = None; // the next good list is sent again, which clears it
                }
                tracing::warn!(error = %e, errors, "kubernetes watch error");
                if errors >= MAX_ERRORS {
                    return Ok(());
                }
                continue;
            }
        }
        if staging.is_some() {
            continue; // a list in progress
        }
        let now: Vec<Endpoint> = pods.values().cloned().collect();
        if sent.as_ref() != Some(&now) {
            updates
                .send(Update::Endpoints(now.clone()))
                .await
                .map_err(|_| ())?;
            sent = Some(now);
        }
    }
    Ok(())
}

/// The apiserver's message when the request was refused by RBAC (403).
fn forbidden(e: &watcher::Error) -> Option<String> {
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.as_ref(),
        watcher::Error::WatchError(s) => s.as_ref(),
        _ => return None,
    };
    (status.code == 403).then(|| status.message.clone())
}

fn apply_event(
    ev: Event<Pod>,
    cfg: &DiscoveryConfig,
    pods: &mut BTreeMap<String, Endpoint>,
    staging: &mut Option<BTreeMap<String, Endpoint>>,
) {
    match ev {
        Event::Init => *staging = Some(BTreeMap::new()),
        Event::InitApply(p) => {
            if let (Some(s), Some(ep)) = (staging.as_mut(), endpoint(&p, cfg)) {
                s.insert(ep.key.clone(), ep);
            }
        }
        Event::InitDone => {
            if let Some(s) = staging.take() {
                *pods = s;
            }
        }
        Event::Apply(p) => {
            let name = p.metadata.name.clone().unwrap_or_default();
            match endpoint(&p, cfg) {
                Some(ep) => pods.insert(name, ep),
                None => pods.remove(&name),
            };
        }
        Event::Delete(p) => {
            pods.remove(&p.metadata.name.clone().unwrap_or_default());
        }
    }
}

/// A Ready pod with an IP as a backend; its role label as the role hint (a missing or
/// unknown label counts as standby: never written to on a guess).
pub fn endpoint(p: &Pod, cfg: &DiscoveryConfig) -> Option<Endpoint> {
    let name = p.metadata.name.clone()?;
    let status = p.status.as_ref()?;
    let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    let ready = status
        .conditions
        .as_ref()?
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready || p.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let port = port_of(p, cfg)?;
    let label = p
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(&cfg.role_label))
        .map(String::as_str);
    let role = if label == Some("primary") {
        Role::Primary
    } else {
        Role::Standby
    };
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip
    };
    Some(Endpoint {
        key: name,
        address: format!("{host}:{port}"),
        configured: Role::Auto,
        label: Some(role),
    })
}

fn port_of(p: &Pod, cfg: &DiscoveryConfig) -> Option<u16> {
    if cfg.port_name.is_empty() {
        return Some(cfg.port);
    }
    let spec = p.spec.as_ref()?;
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|cp| cp.name.as_deref() == Some(cfg.port_name.as_str()))
        .and_then(|cp| u16::try_from(cp.container_port).ok())
}
