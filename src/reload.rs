//! Reload without restart: on SIGHUP, and when the config file's content changes (polled:
//! a mounted ConfigMap changes by swapping a symlink, which file events miss or see twice).
//! An invalid file keeps the running config and says why; SIGHUP never ends the process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::session::Shared;

/// Reads, resolves and validates the config file (with the command line's overrides).
pub type Loader = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// What starts a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Signal,
    FileChanged,
}

/// Runs until the process ends: applies each new valid config and publishes it on
/// `current` (the shutdown settings are read from there).
pub async fn run(path: PathBuf, load: Loader, current: watch::Sender<Config>, shared: Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).ok();
    let poll = Duration::from_millis(current.borrow().server.config_poll_ms);
    let mut seen = fingerprint(&path, &current.borrow());
    loop {
        let cause = tokio::select! {
            Some(()) = async { hup.as_mut()?.recv().await } => Cause::Signal,
            () = tokio::time::sleep(poll), if !poll.is_zero() => {
                let now = fingerprint(&path, &current.borrow());
                if now == seen {
                    continue;
                }
                Cause::FileChanged
            }
            else => return,
        };
        apply(&path, &load, &current, &shared, cause);
        // what the applied config names (its certificate files may be new ones)
        seen = fingerprint(&path, &current.borrow());
    }
}

fn apply(
    path: &std::path::Path,
    load: &Loader,
    current: &watch::Sender<Config>,
    shared: &Shared,
    cause: Cause,
) {
    match load() {
        Ok(new) => {
            let restart = crate::app::reload(shared, &current.borrow(), &new);
            tracing::info!(
                file = %path.display(),
                ?cause,
                users = new.users.len(),
                config_version = shared.config_version.load(std::sync::atomic::Ordering::Relaxed),
                needs_restart = ?restart,
                "config reloaded"
            );
            current.send_replace(new);
        }
        Err(e) => tracing::error!(
            file = %path.display(),
            ?cause,
            error = %e,
            "the config file is invalid; keeping the running config"
        ),
    }
}

/// The file's content as a hash, with the TLS certificate and key files the running config
/// names (None: the config file is unreadable). Reading follows symlinks, so a swapped
/// ConfigMap link, or a renewed certificate Secret, shows as new content.
fn fingerprint(path: &std::path::Path, running: &Config) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    let tls = &running.server.tls;
    for f in [&tls.cert, &tls.key].into_iter().filter(|f| !f.is_empty()) {
        std::fs::read(f).ok().hash(&mut h);
    }
    Some(h.finish())
}
