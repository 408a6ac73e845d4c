//! deploy/ renders with kustomize into objects that round-trip through the Kubernetes API
//! types unchanged (a misspelt field is dropped by the types and fails the comparison),
//! with least privilege, and its ConfigMap's config passes `switchyard --check-config`.

use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde_json::Value;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

/// `kubectl kustomize deploy`, or, where kubectl is missing, the base's listed resources
/// and its generated ConfigMap assembled by hand.
fn render() -> Vec<Value> {
    render_dir(DEPLOY).unwrap_or_else(|| by_hand(&Path::new(DEPLOY).join("base")))
}

/// `kubectl kustomize DIR`; None when kubectl is missing.
fn render_dir(dir: &str) -> Option<Vec<Value>> {
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", dir])
        .output()
        .ok()?;
    {
        assert!(
            out.status.success(),
            "kubectl kustomize: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        Some(
            serde_yaml::Deserializer::from_str(&text)
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .collect(),
        )
    }
}

fn by_hand(base: &Path) -> Vec<Value> {
    let k: Value =
        serde_yaml::from_str(&std::fs::read_to_string(base.join("kustomization.yaml")).unwrap())
            .unwrap();
    let mut docs: Vec<Value> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            serde_yaml::from_str(&std::fs::read_to_string(base.join(r.as_str().unwrap())).unwrap())
                .unwrap()
        })
        .collect();
    let toml = std::fs::read_to_string(base.join("switchyard.toml")).unwrap();
    docs.push(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "switchyard-config"}, "data": {"switchyard.toml": toml}}));
    docs
}

/// Deserializes into the API type and back: equal only if every field is known.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}: {doc}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, doc,
        "round trip through the API type changed the object (a misspelt or misplaced field?)"
    );
}

fn of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn manifests_render_round_trip_and_grant_least_privilege() {
    let docs = render();
    for d in &docs {
        match d["kind"].as_str().unwrap() {
            "Deployment" => round_trip::<Deployment>(d),
            "Service" => round_trip::<Service>(d),
            "ServiceAccount" => round_trip::<ServiceAccount>(d),
            "Role" => round_trip::<Role>(d),
            "RoleBinding" => round_trip::<RoleBinding>(d),
            "PodDisruptionBudget" => round_trip::<PodDisruptionBudget>(d),
            "ConfigMap" => round_trip::<ConfigMap>(d),
            other => panic!("unexpected kind {other}"),
        }
    }
    let dep = of(&docs, "Deployment")[0];
    assert!(dep["spec"]["replicas"].as_u64().unwrap() >= 2);
    let pod = &dep["spec"]["template"]["spec"];
    assert!(
        pod["affinity"]["podAntiAffinity"].is_object(),
        "replicas spread apart"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(c["env"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["valueFrom"]["secretKeyRef"].is_object() || e["name"] == "SWITCHYARD_LOG"));
    let ports: Vec<u64> = of(&docs, "Service")
        .iter()
        .flat_map(|s| {
            s["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["port"].as_u64().unwrap())
        })
        .collect();
    assert!(ports.contains(&3306));
    for r in of(&docs, "Role") {
        for rule in r["rules"].as_array().unwrap() {
            assert_eq!(rule["resources"], serde_json::json!(["pods"]));
            for v in rule["verbs"].as_array().unwrap() {
                assert!(
                    ["get", "list", "watch"].contains(&v.as_str().unwrap()),
                    "Role grants {v}"
                );
            }
        }
    }
    assert!(of(&docs, "ClusterRole").is_empty());
    assert_eq!(of(&docs, "PodDisruptionBudget").len(), 1);
}

/// `switchyard --check-config` on a rendered ConfigMap's config.
fn check_config(docs: &[Value], tag: &str) -> String {
    let cm = of(docs, "ConfigMap")[0];
    let toml = cm["data"]["switchyard.toml"].as_str().unwrap();
    let path = std::env::temp_dir().join(format!(
        "switchyard-deploy-{tag}-{}.toml",
        std::process::id()
    ));
    std::fs::write(&path, toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["--config", path.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    assert!(
        out.status.success(),
        "{tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml.to_string()
}

#[test]
fn the_configmaps_config_passes_check_config() {
    let docs = render();
    let toml = check_config(&docs, "base");
    // and a broken config is refused with the key named
    let bad =
        std::env::temp_dir().join(format!("switchyard-deploy-bad-{}.toml", std::process::id()));
    std::fs::write(&bad, toml.replace("role_label", "role_lable")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["--config", bad.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    std::fs::remove_file(&bad).ok();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("role_lable"));
}

/// deploy/overlays/replace-proxysql: the `proxysql` Service, which application DSNs name,
/// selects switchyard's pods and maps 3306 onto a port they listen on (ProxySQL's was 6033).
#[test]
fn the_replace_proxysql_overlay_maps_the_proxysql_service_onto_switchyard() {
    let Some(docs) = render_dir(&format!("{DEPLOY}/overlays/replace-proxysql")) else {
        eprintln!("kubectl is missing: overlay not rendered");
        return;
    };
    let svc = of(&docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "proxysql")
        .expect("a Service proxysql");
    round_trip::<Service>(svc);
    let dep = of(&docs, "Deployment")[0];
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the selector {k} does not match the pods");
    }
    assert_eq!(svc["metadata"]["namespace"], "dolt-cluster-example");
    let port = &svc["spec"]["ports"][0];
    assert_eq!(port["port"], 3306);
    let names: Vec<&Value> = dep["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| [&p["name"], &p["containerPort"]])
        .collect();
    assert!(
        names.contains(&&port["targetPort"]),
        "targetPort {} is no container port",
        port["targetPort"]
    );
    check_config(&docs, "replace-proxysql");
}

/// deploy/overlays/static: backends from the config, no Kubernetes API: no Role, no
/// RoleBinding, no service-account token, and a config that passes --check-config.
#[test]
fn the_static_overlay_needs_no_kubernetes_api() {
    let Some(docs) = render_dir(&format!("{DEPLOY}/overlays/static")) else {
        eprintln!("kubectl is missing: overlay not rendered");
        return;
    };
    for kind in ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"] {
        assert!(of(&docs, kind).is_empty(), "static overlay has a {kind}");
    }
    let dep = of(&docs, "Deployment")[0];
    round_trip::<Deployment>(dep);
    assert_eq!(
        dep["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );
    let toml = check_config(&docs, "static");
    assert!(toml.contains("kind = \"static\"") && toml.contains("[[backends]]"));
}

/// `--log-format json`: every log line is a JSON object, the start is logged, and no
/// password appears.
#[test]
fn logs_can_be_json_lines_without_secrets() {
    use std::io::{BufRead, BufReader};
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/local.toml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["--config", cfg, "--log-format", "json"])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for _ in 0..50 {
        let Some(Ok(line)) = lines.next() else { break };
        let started = line.contains("switchyard started");
        seen.push(line);
        if started {
            break;
        }
    }
    child.kill().ok();
    child.wait().ok();
    assert!(
        seen.iter().any(|l| l.contains("switchyard started")),
        "{seen:?}"
    );
    for l in &seen {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{l}"
        );
        assert!(
            !l.contains("\"strict\"") && !l.contains("monitor\""),
            "a secret in {l}"
        );
    }
}

/// "256Mi", "1Gi", "64M": bytes.
fn quantity(q: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * mult;
        }
    }
    q.parse().unwrap()
}

/// Dolt's default max_connections.
const DOLT_MAX_CONNECTIONS: u64 = 128;

/// Each rendering (base and both overlays) is sized and labelled as a platform engineer
/// expects: the memory limit holds the baseline plus four commands of max_packet_bytes in
/// flight; a rollout's surge of pods, each with its pool and probe, stays under Dolt's 128
/// connections with room to spare; pods carry the scrape annotations for the admin port and
/// the recommended app.kubernetes.io labels (every object too); Kubernetes discovery names
/// no namespace of its own (it follows the overlay's).
#[test]
fn renderings_are_sized_labelled_and_scraped() {
    let mut renders = vec![("base", render())];
    for o in ["replace-proxysql", "static"] {
        let dir = format!("{DEPLOY}/overlays/{o}");
        if let Some(docs) = render_dir(&dir) {
            renders.push((o, docs));
        }
    }
    for (name, docs) in renders {
        let cm = of(&docs, "ConfigMap")[0];
        let cfg =
            switchyard::config::Config::from_toml(cm["data"]["switchyard.toml"].as_str().unwrap())
                .unwrap();
        let dep = of(&docs, "Deployment")[0];
        let c = &dep["spec"]["template"]["spec"]["containers"][0];
        let memory = quantity(c["resources"]["limits"]["memory"].as_str().unwrap());
        let need = (64 << 20) + 4 * cfg.server.max_packet_bytes as u64;
        assert!(memory >= need, "{name}: memory limit {memory} < {need}");
        let replicas = dep["spec"]["replicas"].as_u64().unwrap();
        let surge = dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
            .as_u64()
            .unwrap();
        let per_pod = cfg.pool.max_per_backend as u64 + 1; // its pool and its probe
        let surge_total = (replicas + surge) * per_pod;
        assert!(
            surge_total + 8 <= DOLT_MAX_CONNECTIONS,
            "{name}: {surge_total} connections per Dolt pod during a rollout"
        );
        let ann = &dep["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(ann["prometheus.io/scrape"], "true", "{name}");
        let admin_port = cfg.server.admin_listen.rsplit(':').next().unwrap();
        assert_eq!(ann["prometheus.io/port"], admin_port, "{name}");
        assert_eq!(ann["prometheus.io/path"], "/metrics", "{name}");
        let pod_labels = &dep["spec"]["template"]["metadata"]["labels"];
        for d in docs
            .iter()
            .map(|d| &d["metadata"]["labels"])
            .chain([pod_labels])
        {
            assert_eq!(d["app.kubernetes.io/name"], "switchyard", "{name}: {d}");
            assert_eq!(d["app.kubernetes.io/component"], "proxy", "{name}: {d}");
        }
        if cfg.discovery.kind == switchyard::config::DiscoveryKind::Kubernetes {
            assert!(
                cfg.discovery.namespace.is_empty(),
                "{name}: a fixed namespace"
            );
        }
    }
}
