//! Validation with precise messages (which key, what is wrong) and secret resolution.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::{Config, PasswordSource, Role, Secret};

/// MySQL's and MariaDB's default max_prepared_stmt_count.
const MAX_PREPARED_STMT_COUNT: usize = 16_382;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Io(String, String),
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid config: {key}: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_pool()?;
        self.validate_backends()?;
        self.validate_routing()?;
        self.validate_users()
    }

    fn validate_routing(&self) -> Result<(), ConfigError> {
        let m = &self.routing.commit_marker;
        let ident =
            |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let ok = m.is_empty() || m.split_once('.').is_some_and(|(a, b)| ident(a) && ident(b));
        if ok {
            Ok(())
        } else {
            Err(invalid(
                "routing.commit_marker",
                format!("{m:?} is not schema.table (letters, digits, _)"),
            ))
        }
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        for (key, addr) in [
            ("server.listen", &s.listen),
            ("server.admin_listen", &s.admin_listen),
        ] {
            addr.parse::<SocketAddr>()
                .map_err(|_| invalid(key, format!("{addr:?} is not an IP:port address")))?;
        }
        if s.max_client_connections == 0 {
            return Err(invalid(
                "server.max_client_connections",
                "must be at least 1",
            ));
        }
        if s.max_packet_bytes < 1024 || s.max_packet_bytes > 1 << 30 {
            return Err(invalid(
                "server.max_packet_bytes",
                "must be between 1024 and 1073741824",
            ));
        }
        if s.handshake_timeout_ms == 0 {
            return Err(invalid("server.handshake_timeout_ms", "must be above 0"));
        }
        let t = &s.tls;
        if t.cert.is_empty() != t.key.is_empty() {
            return Err(invalid("server.tls", "cert and key go together"));
        }
        if t.require && t.cert.is_empty() {
            return Err(invalid("server.tls.require", "needs cert and key"));
        }
        Ok(())
    }

    fn validate_pool(&self) -> Result<(), ConfigError> {
        let p = &self.pool;
        let checks = [
            (
                "pool.max_per_user",
                p.max_per_user == 0,
                "must be at least 1",
            ),
            (
                "pool.max_per_backend",
                p.max_per_backend == 0,
                "must be at least 1",
            ),
            (
                "pool.min_idle",
                p.min_idle > p.max_per_user,
                "must not exceed pool.max_per_user",
            ),
            (
                "pool.lease_timeout_ms",
                p.lease_timeout_ms == 0,
                "must be above 0",
            ),
            (
                "pool.connect_timeout_ms",
                p.connect_timeout_ms == 0,
                "must be above 0",
            ),
            (
                "pool.statement_cache",
                p.statement_cache == 0,
                "must be at least 1",
            ),
        ];
        if let Some((key, _, problem)) = checks.iter().find(|c| c.1) {
            return Err(invalid(*key, *problem));
        }
        // every pooled connection may hold statement_cache statements on its server
        if p.statement_cache.saturating_mul(p.max_per_backend) > MAX_PREPARED_STMT_COUNT {
            return Err(invalid(
                "pool.statement_cache",
                format!(
                    "{} statements x pool.max_per_backend {} exceeds {MAX_PREPARED_STMT_COUNT}, the servers' default max_prepared_stmt_count",
                    p.statement_cache, p.max_per_backend
                ),
            ));
        }
        Ok(())
    }

    fn validate_discovery(&self) -> Result<(), ConfigError> {
        let d = &self.discovery;
        if d.kind != super::DiscoveryKind::Kubernetes {
            return Ok(());
        }
        let checks = [
            ("discovery.selector", d.selector.is_empty()),
            ("discovery.role_label", d.role_label.is_empty()),
            ("discovery.port", d.port == 0 && d.port_name.is_empty()),
        ];
        match checks.iter().find(|c| c.1) {
            Some((key, _)) => Err(invalid(*key, "must be set for kind = \"kubernetes\"")),
            None => Ok(()),
        }
    }

    fn validate_backends(&self) -> Result<(), ConfigError> {
        self.validate_discovery()?;
        let discovered = self.discovery.kind == super::DiscoveryKind::Kubernetes;
        if self.backends.is_empty() && !discovered {
            return Err(invalid(
                "backends",
                "at least one [[backends]] entry is required (or [discovery] kind = \"kubernetes\")",
            ));
        }
        let mut names = HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            let key = format!("backends[{i}]");
            if b.name.is_empty() {
                return Err(invalid(format!("{key}.name"), "must not be empty"));
            }
            if !names.insert(&b.name) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} is used twice", b.name),
                ));
            }
            if b.host.is_empty() {
                return Err(invalid(format!("{key}.host"), "must not be empty"));
            }
            if b.port == 0 {
                return Err(invalid(format!("{key}.port"), "must not be 0"));
            }
        }
        let primaries = self
            .backends
            .iter()
            .filter(|b| b.role == Role::Primary)
            .count();
        if primaries > 1 {
            return Err(invalid(
                "backends",
                "more than one backend has role = \"primary\"",
            ));
        }
        Ok(())
    }

    fn validate_users(&self) -> Result<(), ConfigError> {
        if self.users.is_empty() {
            return Err(invalid("users", "at least one [[users]] entry is required"));
        }
        let mut names = HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            let key = format!("users[{i}]");
            if u.name.is_empty() {
                return Err(invalid(format!("{key}.name"), "must not be empty"));
            }
            if !names.insert(&u.name) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} is used twice", u.name),
                ));
            }
            check_source(&key, &u.password, true)?;
        }
        check_source("health", &self.health.password, false)?;
        if !self.health.user.is_empty()
            && self.health.password.password.is_none()
            && self.health.password.password_env.is_none()
            && self.health.password.password_file.is_none()
        {
            return Err(invalid(
                "health.password",
                "health.user is set but no password source is",
            ));
        }
        Ok(())
    }

    /// Replaces env/file password sources with their values.
    pub fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        for (i, u) in self.users.iter_mut().enumerate() {
            resolve(&format!("users[{i}]"), &mut u.password)?;
        }
        if !self.health.user.is_empty() {
            resolve("health", &mut self.health.password)?;
        }
        let a = &mut self.admin;
        let mut token = PasswordSource {
            password: a.token.take(),
            password_env: a.token_env.take(),
            password_file: a.token_file.take(),
        };
        check_source("admin", &token, false)?;
        resolve("admin", &mut token)?;
        a.token = token.password;
        Ok(())
    }
}

fn check_source(key: &str, p: &PasswordSource, required: bool) -> Result<(), ConfigError> {
    let n = [
        p.password.is_some(),
        p.password_env.is_some(),
        p.password_file.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    match n {
        0 if required => Err(invalid(
            format!("{key}.password"),
            "one of password, password_env or password_file is required",
        )),
        0 | 1 => Ok(()),
        _ => Err(invalid(
            format!("{key}.password"),
            "give only one of password, password_env, password_file",
        )),
    }
}

fn resolve(key: &str, p: &mut PasswordSource) -> Result<(), ConfigError> {
    if let Some(var) = p.password_env.take() {
        let v = std::env::var(&var).map_err(|_| {
            invalid(
                format!("{key}.password_env"),
                format!("environment variable {var} is not set"),
            )
        })?;
        p.password = Some(Secret::new(v));
    } else if let Some(path) = p.password_file.take() {
        let v = std::fs::read_to_string(&path).map_err(|e| {
            invalid(
                format!("{key}.password_file"),
                format!("cannot read {path}: {e}"),
            )
        })?;
        p.password = Some(Secret::new(v.trim_end_matches(['\n', '\r'])));
    }
    Ok(())
}
