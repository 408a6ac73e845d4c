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

/// `kubectl kustomize deploy`, or, where kubectl is missing, the listed resources and the
/// generated ConfigMap assembled by hand.
fn render() -> Vec<Value> {
    if let Ok(out) = std::process::Command::new("kubectl")
        .args(["kustomize", DEPLOY])
        .output()
    {
        assert!(
            out.status.success(),
            "kubectl kustomize: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        return serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
    }
    let k: Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(DEPLOY).join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let mut docs: Vec<Value> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            serde_yaml::from_str(
                &std::fs::read_to_string(Path::new(DEPLOY).join(r.as_str().unwrap())).unwrap(),
            )
            .unwrap()
        })
        .collect();
    let toml = std::fs::read_to_string(Path::new(DEPLOY).join("switchyard.toml")).unwrap();
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

#[test]
fn the_configmaps_config_passes_check_config() {
    let docs = render();
    let cm = of(&docs, "ConfigMap")[0];
    let toml = cm["data"]["switchyard.toml"].as_str().unwrap();
    let path = std::env::temp_dir().join(format!("switchyard-deploy-{}.toml", std::process::id()));
    std::fs::write(&path, toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["--config", path.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
