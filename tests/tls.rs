//! TLS towards clients, with real clients: the mariadb CLI (OpenSSL) and PyMySQL (Python's
//! ssl), against a certificate made here. Required: a plaintext client gets 3159; optional:
//! both kinds get in.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use switchyard::config::ClientTls;

/// A self-signed certificate for 127.0.0.1 / localhost and its key, as PEM files.
fn certificate() -> (PathBuf, PathBuf) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("switchyard-tls-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

async fn proxy(require: bool) -> (switchyard::app::Running, PathBuf) {
    let (cert, key) = certificate();
    let tls = ClientTls {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        require,
    };
    (start(config(|c| c.server.tls = tls)).await, cert)
}

/// The mariadb CLI through the proxy: (success, stdout, stderr).
fn cli(p: &switchyard::app::Running, tls: &[&str], sql: &str) -> (bool, String, String) {
    let out = Command::new("timeout")
        .args([
            "30",
            "mariadb",
            "--no-defaults",
            "--protocol=TCP",
            "-h127.0.0.1",
        ])
        .arg(format!("-P{}", p.listen.port()))
        .args(["-ustrict", "-pstrict", "-N", "-B", "sbtest"])
        .args(tls)
        .args(["-e", sql])
        .output()
        .expect("run the mariadb CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_lets_tls_clients_in_and_refuses_plaintext_with_3159() {
    let (p, cert) = proxy(true).await;
    let ca = format!("--ssl-ca={}", cert.display());
    // verified against the certificate (its name is 127.0.0.1)
    let verify = [ca.as_str(), "--ssl-verify-server-cert"];
    let (ok, out, err) = cli(&p, &verify, "SELECT 1; \\s");
    assert!(ok, "a verifying TLS client: {err}");
    assert!(out.starts_with('1'), "{out}");
    assert!(
        out.contains("Cipher in use"),
        "the session is encrypted: {out}"
    );
    // a result far larger than a TLS record, relayed byte for byte
    let (ok, out, err) = cli(&p, &verify, "SELECT REPEAT('ab', 1500000)");
    assert!(ok, "{err}");
    assert_eq!(out.len(), 3_000_000);
    assert!(out.bytes().all(|b| b == b'a' || b == b'b'));
    let (ok, _, err) = cli(&p, &["--skip-ssl"], "SELECT 1");
    assert!(!ok, "a plaintext client got in");
    assert!(err.contains("ERROR 3159 (HY000)"), "{err}");
    assert!(err.contains("insecure transport"), "{err}");
    // Python's ssl, as an application would
    let script = format!(
        "import pymysql\n\
         c = pymysql.connect(host='127.0.0.1', port={}, user='strict', password='strict', \
         database='sbtest', ssl={{'ca': '{}'}})\n\
         cur = c.cursor(); cur.execute('SELECT 41 + 1'); print(cur.fetchone()[0])\n\
         print(c._sock.version())\n\
         import json, urllib.request\n\
         s = json.load(urllib.request.urlopen('http://127.0.0.1:{}/sessions'))['sessions']\n\
         print('listed as tls:', any(x['tls'] for x in s))\n",
        p.listen.port(),
        cert.display(),
        p.admin.port()
    );
    let out = Command::new("timeout")
        .args(["30", "python3", "-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("42\nTLSv1."), "{text}");
    assert!(text.contains("listed as tls: True"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_tls_serves_both_kinds_of_client() {
    let (p, _) = proxy(false).await;
    let (ok, out, err) = cli(&p, &["--ssl", "--ssl-verify-server-cert=0"], "\\s");
    assert!(ok, "{err}");
    assert!(out.contains("Cipher in use"), "{out}");
    let (ok, out, err) = cli(&p, &["--skip-ssl"], "SELECT 2; \\s");
    assert!(ok, "{err}");
    assert!(out.starts_with('2'), "{out}");
    assert!(out.contains("SSL:\t\t\tNot in use"), "{out}");
}

#[test]
fn unreadable_certificates_stop_the_start_with_a_clear_error() {
    let tls = ClientTls {
        cert: "/nonexistent/server.pem".into(),
        key: "/nonexistent/server.key".into(),
        require: true,
    };
    let e = switchyard::tls::ClientTlsPolicy::load(&tls)
        .err()
        .expect("refused");
    assert!(
        e.to_string()
            .contains("server.tls.cert /nonexistent/server.pem"),
        "{e}"
    );
}

/// A reload reads the certificate files again (a rotated Secret): new clients verify
/// against the new certificate; unreadable files keep the running one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_picks_up_a_rotated_certificate() {
    let (p, old_cert) = proxy(false).await;
    let old_cfg = config(|c| {
        c.server.tls.cert = old_cert.display().to_string();
        c.server.tls.key = old_cert.with_file_name("server.key").display().to_string();
    });
    let dir = std::env::temp_dir().join(format!("switchyard-tls-new-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let verify = |c: &PathBuf| {
        let ca = format!("--ssl-ca={}", c.display());
        cli(&p, &[ca.as_str(), "--ssl-verify-server-cert"], "SELECT 1").0
    };
    assert!(
        verify(&old_cert) && !verify(&cert),
        "the first certificate is served"
    );
    let new_cfg = config(|c| {
        c.server.tls.cert = cert.display().to_string();
        c.server.tls.key = key.display().to_string();
    });
    switchyard::app::reload(&p.shared, &old_cfg, &new_cfg);
    assert!(
        verify(&cert) && !verify(&old_cert),
        "the rotated certificate is served"
    );
    let broken = config(|c| {
        c.server.tls.cert = "/nonexistent/server.pem".into();
        c.server.tls.key = "/nonexistent/server.key".into();
    });
    switchyard::app::reload(&p.shared, &new_cfg, &broken);
    assert!(
        verify(&cert),
        "unreadable files keep the running certificate"
    );
}

/// A certificate renewed in place (a Secret's files change, the config file does not) is
/// served after the config poll notices it: no SIGHUP needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renewed_in_place_is_picked_up_by_the_poll() {
    let (cert, key) = certificate();
    let toml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/local.toml"))
        .unwrap()
        .replace("[server]\n", "[server]\nconfig_poll_ms = 100\n")
        .replace(
            "[pool]\n",
            &format!(
                "[server.tls]\ncert = {:?}\nkey = {:?}\n\n[pool]\n",
                cert.display().to_string(),
                key.display().to_string()
            ),
        );
    let file = cert.with_file_name("switchyard.toml");
    std::fs::write(&file, toml).unwrap();
    let load_from = file.clone();
    let loader: switchyard::reload::Loader = Box::new(move || {
        let mut c = switchyard::config::Config::load(&load_from)?;
        c.server.listen = "127.0.0.1:0".into();
        c.server.admin_listen = "127.0.0.1:0".into();
        c.validate()?;
        Ok(c)
    });
    let cfg = loader().unwrap();
    let p = start(cfg.clone()).await;
    let current = tokio::sync::watch::channel(cfg).0;
    let poller = tokio::spawn(switchyard::reload::run(
        file.clone(),
        loader,
        current,
        p.shared.clone(),
    ));
    let verify = |c: &PathBuf| {
        let ca = format!("--ssl-ca={}", c.display());
        cli(&p, &[ca.as_str(), "--ssl-verify-server-cert"], "SELECT 1").0
    };
    let old = cert.with_file_name("old.pem");
    std::fs::copy(&cert, &old).unwrap();
    assert!(verify(&old));
    // renewed in place: new key and certificate behind the same names
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    let mut renewed = false;
    for _ in 0..100 {
        if verify(&cert) {
            renewed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    poller.abort();
    assert!(renewed, "the renewed certificate was never served");
    assert!(!verify(&old), "the old certificate is no longer served");
}
