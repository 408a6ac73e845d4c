//! The binary reloads its config file without a restart: when a mounted ConfigMap swaps its
//! symlink to new content, and on SIGHUP; an invalid file keeps the running config and the
//! process alive. Seen from `/status`'s config_version.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn status(admin: u16) -> Option<serde_json::Value> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(out.split("\r\n\r\n").nth(1)?).ok()
}

fn version(admin: u16) -> Option<u64> {
    status(admin)?["config_version"].as_u64()
}

/// Waits (bounded) until the config version is `want`.
fn wait_version(admin: u16, want: u64) -> Option<u64> {
    let until = Instant::now() + Duration::from_secs(10);
    let mut seen = None;
    while Instant::now() < until {
        seen = version(admin);
        if seen == Some(want) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    seen
}

/// Writes `text` as a ConfigMap volume does: a new timestamped directory, then the
/// `..data` symlink swapped to it by rename; `config.toml` links through `..data`.
fn configmap_write(dir: &Path, n: u32, text: &str) {
    let data = dir.join(format!("..2026_{n}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("config.toml"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("config.toml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/config.toml", &link).unwrap();
    }
}

#[test]
fn a_configmap_swap_and_sighup_reload_the_config() {
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/local.toml"))
        .unwrap()
        .replace("[server]\n", "[server]\nconfig_poll_ms = 100\n");
    let dir = std::env::temp_dir().join(format!("switchyard-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    configmap_write(&dir, 1, &base);
    let admin = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(dir.join("config.toml"))
        .args(["--listen", "127.0.0.1:0"])
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{admin}"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let result = std::panic::catch_unwind(|| {
        assert_eq!(wait_version(admin, 1), Some(1), "started");
        // a ConfigMap update: new content behind the swapped link
        let more = base.replace("max_per_user = 6", "max_per_user = 7");
        configmap_write(&dir, 2, &more);
        assert_eq!(wait_version(admin, 2), Some(2), "the swap was seen");
        // an invalid file: the running config stays, the process lives
        configmap_write(&dir, 3, &format!("{more}\nthis is = not [valid\n"));
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(version(admin), Some(2), "an invalid file is not applied");
        let pid = child.id().to_string();
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        assert!(hup.success());
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(version(admin), Some(2), "SIGHUP with an invalid file");
        // fixed (not byte for byte the applied file: a poll that never saw the invalid one
        // would rightly see nothing new), then SIGHUP applies at once even unchanged
        configmap_write(&dir, 4, &format!("{more}\n# fixed\n"));
        assert_eq!(wait_version(admin, 3), Some(3), "the fixed file is applied");
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        assert_eq!(wait_version(admin, 4), Some(4), "SIGHUP reloads");
    });
    let alive = child.try_wait().unwrap().is_none();
    child.kill().ok();
    child.wait().ok();
    std::fs::remove_dir_all(&dir).ok();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(alive, "the process ended");
}
