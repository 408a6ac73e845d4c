//! Kubernetes discovery against the fake apiserver over real HTTPS: pods become backends,
//! labels and readiness are followed, and the watch survives 410 Gone in both forms and
//! dropped connections. The in-cluster config path is tested too. Roles still need the
//! probes to agree, so pods stand in for the local cluster's servers.

mod common;

use common::fake_k8s::{FakeK8s, Gone, NAMESPACE, TOKEN};
use common::*;
use k8s_openapi::api::core::v1::Pod;

async fn cluster_pods(k8s: &FakeK8s) {
    k8s.add_pod("dolt-0", "127.0.0.11", "primary");
    k8s.add_pod("dolt-1", "127.0.0.12", "standby");
    k8s.add_pod("dolt-2", "127.0.0.13", "standby");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_become_backends_and_labels_readiness_and_deletes_are_followed() {
    let k8s = FakeK8s::start().await;
    cluster_pods(&k8s).await;
    k8s.add_pod("other", "127.0.0.14", "standby");
    k8s.set_label("other", "app", "web"); // not selected
    let p = start(kube_config(&k8s, |c| {
        c.discovery.port_name = "mysql".into()
    }))
    .await;
    wait_topology(&p, "three pods, dolt-0 primary", |s| {
        s.entries.len() == 3 && primary_key(s).as_deref() == Some("dolt-0")
    })
    .await;
    let mut c = connect(&p, "strict").await;
    let pid = primary_id().await;
    let s: u32 = c.query_first_id().await;
    assert_ne!(s, pid, "reads on the standby pods");
    // the label moves away: no primary until label and probe agree again
    k8s.set_label("dolt-0", "dolthub.com/cluster_role", "standby");
    wait_topology(&p, "no primary", |s| s.primary().is_none()).await;
    k8s.set_label("dolt-0", "dolthub.com/cluster_role", "primary");
    wait_topology(&p, "dolt-0 primary again", |s| {
        primary_key(s).as_deref() == Some("dolt-0")
    })
    .await;
    // a pod labelled primary whose server is a replica is not written to
    k8s.set_label("dolt-1", "dolthub.com/cluster_role", "primary");
    wait_topology(&p, "dolt-1 labelled but refused by its probe", |s| {
        s.entries
            .iter()
            .any(|e| e.key == "dolt-1" && e.label == Some(switchyard::config::Role::Primary))
            && primary_key(s).as_deref() == Some("dolt-0")
    })
    .await;
    k8s.set_label("dolt-1", "dolthub.com/cluster_role", "standby");
    k8s.set_ready("dolt-2", false);
    wait_topology(&p, "dolt-2 not ready", |s| s.entries.len() == 2).await;
    k8s.set_ready("dolt-2", true);
    wait_topology(&p, "dolt-2 back", |s| s.entries.len() == 3).await;
    k8s.delete_pod("dolt-2");
    wait_topology(&p, "dolt-2 deleted", |s| {
        s.entries.iter().all(|e| e.key != "dolt-2")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_survives_410_both_ways_and_dropped_connections() {
    let k8s = FakeK8s::start().await;
    cluster_pods(&k8s).await;
    let p = start(kube_config(&k8s, |_| {})).await;
    wait_topology(&p, "three pods", |s| s.entries.len() == 3).await;
    for (round, how) in [Gone::ErrorEvent, Gone::HttpStatus].into_iter().enumerate() {
        k8s.expire_history(how);
        let name = format!("extra-{round}");
        k8s.add_pod(&name, "127.0.0.13", "standby");
        wait_topology(&p, &format!("{name} after 410 as {how:?}"), |s| {
            s.entries.iter().any(|e| e.key == name)
        })
        .await;
    }
    k8s.drop_connections();
    k8s.delete_pod("extra-0");
    wait_topology(
        &p,
        "extra-0 gone after the apiserver dropped its connections",
        |s| s.entries.iter().all(|e| e.key != "extra-0"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_cluster_config_reads_the_service_account() {
    let k8s = FakeK8s::start().await;
    cluster_pods(&k8s).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = k8s.service_account_dir();
    let port = k8s.port.to_string();
    let env = |k: &str| match k {
        "KUBERNETES_SERVICE_HOST" => Some("127.0.0.1".to_string()),
        "KUBERNETES_SERVICE_PORT" => Some(port.clone()),
        _ => None,
    };
    let cfg = switchyard::discovery::kubernetes::in_cluster(&dir, NAMESPACE, env).unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let pods: kube::Api<Pod> = kube::Api::namespaced(client, NAMESPACE);
    let list = pods
        .list(&kube::api::ListParams::default().labels("app=dolt"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 3);
    // a wrong token is refused
    std::fs::write(dir.join("token"), format!("{TOKEN}-wrong")).unwrap();
    let cfg = switchyard::discovery::kubernetes::in_cluster(&dir, NAMESPACE, env).unwrap();
    let pods: kube::Api<Pod> =
        kube::Api::namespaced(kube::Client::try_from(cfg).unwrap(), NAMESPACE);
    assert!(
        pods.list(&kube::api::ListParams::default()).await.is_err(),
        "the token is checked"
    );
    // no namespace configured: the pod's own, from the service account
    let own = switchyard::discovery::kubernetes::in_cluster(&dir, "", env).unwrap();
    assert_eq!(own.default_namespace, NAMESPACE);
    let missing = switchyard::discovery::kubernetes::in_cluster(&dir, NAMESPACE, |_| None);
    assert!(
        missing.is_err(),
        "no KUBERNETES_SERVICE_HOST: a clear error"
    );
}

/// A namespace RBAC does not grant (an overlay moved the config, not the Role): a clear
/// error in /status and /readyz, never a silent watch of nothing; the pod's own namespace
/// (the kubeconfig context's here) works without being configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_namespace_withdraws_readiness_and_says_why() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let k8s = FakeK8s::start().await;
    cluster_pods(&k8s).await;
    ensure_cluster();
    let cfg = kube_config(&k8s, |c| c.discovery.namespace = "elsewhere".into());
    let p = switchyard::app::start(cfg).await.unwrap();
    wait_topology(&p, "the 403 is seen", |s| s.discovery_error.is_some()).await;
    let why = p.shared.topology.full().discovery_error.clone().unwrap();
    assert!(
        why.contains("forbidden") && why.contains("elsewhere"),
        "{why}"
    );
    let mut s = tokio::net::TcpStream::connect(p.admin).await.unwrap();
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("forbidden in namespace elsewhere"), "{out}");
    p.shutdown();
    // unset: the context's namespace, where the pods are
    let p = start(kube_config(&k8s, |c| c.discovery.namespace.clear())).await;
    wait_topology(&p, "three pods", |s| s.entries.len() == 3).await;
    assert!(p.shared.topology.full().discovery_error.is_none());
    p.shutdown();
}

trait ServerId {
    async fn query_first_id(&mut self) -> u32;
}

impl ServerId for mysql_async::Conn {
    async fn query_first_id(&mut self) -> u32 {
        use mysql_async::prelude::Queryable;
        self.query_first("SELECT @@server_id")
            .await
            .unwrap()
            .unwrap()
    }
}
