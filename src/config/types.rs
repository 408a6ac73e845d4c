//! Config types with their defaults. Every field is documented in README.md.

use std::fmt;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub pool: PoolConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub topology: TopologyConfig,
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
}

/// The admin port's mutating endpoints (drain, undrain, digest reset) need this bearer
/// token; without one they answer only to loopback clients.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<String>,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .field("token_env", &self.token_env)
            .field("token_file", &self.token_file)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub admin_listen: String,
    /// Version string in the greeting; empty: the backends' own (read at start).
    pub server_version: String,
    pub max_client_connections: usize,
    pub handshake_timeout_ms: u64,
    /// Largest client packet (a command) accepted, in bytes.
    pub max_packet_bytes: usize,
    /// SQL text one session's prepared statements may hold together, in bytes.
    pub max_session_statement_bytes: usize,
    /// Memory the query digests may hold, in bytes (0: no digests).
    pub digest_bytes: usize,
    /// On SIGTERM, readiness turns false and clients are still accepted this long before
    /// the listener closes.
    pub shutdown_delay_s: u64,
    /// How long a client may sit idle between commands before it is closed (0: forever).
    pub client_idle_timeout_s: u64,
    /// On SIGTERM: how long transactions in flight may take to finish.
    pub shutdown_timeout_s: u64,
    /// How often the config file is checked for a new content (a ConfigMap's symlink swap),
    /// which is then reloaded as on SIGHUP; 0: only SIGHUP reloads.
    pub config_poll_ms: u64,
    /// TLS towards clients.
    pub tls: ClientTls,
}

/// TLS towards clients (`[server.tls]`): offered when a certificate is given.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTls {
    /// PEM file with the certificate chain (the server's first); empty: no TLS.
    pub cert: String,
    /// PEM file with its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// Refuse clients that do not start TLS (as MySQL's require_secure_transport, 3159).
    pub require: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:6033".into(),
            admin_listen: "127.0.0.1:9090".into(),
            server_version: String::new(),
            max_client_connections: 4096,
            handshake_timeout_ms: 10_000,
            max_packet_bytes: 64 << 20,
            max_session_statement_bytes: 64 << 20,
            digest_bytes: 4 << 20,
            shutdown_delay_s: 0,
            client_idle_timeout_s: 0,
            shutdown_timeout_s: 30,
            config_poll_ms: 2000,
            tls: ClientTls::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Connections per (backend, user).
    pub max_per_user: usize,
    /// Connections per backend across all users (Dolt's max_connections is shared).
    pub max_per_backend: usize,
    pub min_idle: usize,
    pub idle_timeout_s: u64,
    pub max_lifetime_s: u64,
    pub lease_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Prepared statements kept per backend connection (LRU).
    pub statement_cache: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_per_user: 20,
            max_per_backend: 60,
            min_idle: 0,
            idle_timeout_s: 300,
            max_lifetime_s: 3600,
            lease_timeout_ms: 5000,
            connect_timeout_ms: 2000,
            statement_cache: 256,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RoutePolicy {
    /// Writes to the primary, plain reads to standbys.
    #[default]
    Split,
    /// Everything to the primary.
    Primary,
}

/// Read-your-writes mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadYourWrites {
    /// A session's reads see its own writes: a standby waits for the session's last GTID
    /// (MariaDB `MASTER_GTID_WAIT`, MySQL `WAIT_FOR_EXECUTED_GTID_SET`), else the primary.
    #[default]
    Session,
    /// Reads go to standbys whatever the session wrote.
    None,
    /// A read waits for the last write any session made through this switchyard (one
    /// round trip on the standby per read while writes keep coming).
    Global,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Whether a session's reads see its own writes: `session` (the default), `global`
    /// (every write made through this proxy), or `none`.
    pub read_your_writes: ReadYourWrites,
    /// In `session` mode, how long a standby may wait to apply a session's last write
    /// (its GTID) before the read goes to the primary instead.
    pub causal_timeout_ms: u64,
    /// In `session` mode, for backends that report no GTIDs (Dolt): after a session
    /// writes, its reads stay on the primary this long.
    pub read_your_writes_ms: u64,
    /// A plain BEGIN opens where its first statement belongs: read-only transactions run
    /// on standbys (see README, "Optimistic transactions").
    pub optimistic_transactions: bool,
    /// A transaction whose connection is lost to a failover before COMMIT is replayed on
    /// the new primary, its replies compared with what the client got.
    pub transaction_replay: bool,
    /// A transaction with more statements, or more bytes of them, is not kept for replay
    /// (its loss is reported as 1213).
    pub replay_max_statements: usize,
    pub replay_max_bytes: usize,
    /// A transaction chosen as a deadlock's victim (1213, rolled back whole by the server)
    /// is replayed the same way, so the client does not see the deadlock.
    pub replay_deadlocks: bool,
    /// A table (`schema.table`) where the proxy marks each write transaction inside it just
    /// before its COMMIT, so a COMMIT whose connection dies can be found out (committed:
    /// OK; not: replayed). Empty: such a COMMIT answers 2013. See README.
    pub commit_marker: String,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            read_your_writes: ReadYourWrites::Session,
            causal_timeout_ms: 500,
            read_your_writes_ms: 1000,
            optimistic_transactions: false,
            transaction_replay: true,
            replay_max_statements: 1000,
            replay_max_bytes: 1 << 20,
            replay_deadlocks: true,
            commit_marker: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub interval_ms: u64,
    /// Probe interval while no backend is primary (a failover is under way).
    pub fast_interval_ms: u64,
    /// Standbys lagging more than this leave the read rotation (0: no limit).
    pub max_lag_ms: u64,
    pub timeout_ms: u64,
    /// Failures in a row before a backend leaves the rotation.
    pub failures: u32,
    /// Credentials of the health checks; empty: the first configured user.
    pub user: String,
    #[serde(flatten)]
    pub password: PasswordSource,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_ms: 2000,
            fast_interval_ms: 20,
            max_lag_ms: 0,
            timeout_ms: 1000,
            failures: 1,
            user: String::new(),
            password: PasswordSource::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Standby,
    /// Left to the role probes.
    Auto,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::Auto => "auto",
        }
    }
}

/// How role and lag are read from a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// `@@read_only`, `SHOW SLAVE STATUS`.
    #[default]
    Mariadb,
    /// `@@read_only`, `SHOW REPLICA STATUS`.
    Mysql,
    /// `@@dolt_cluster_role` and its epoch, `dolt_cluster.dolt_cluster_status`.
    Dolt,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    pub kind: BackendKind,
    /// How long a statement bound for the primary waits while there is none.
    pub write_hold_ms: u64,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            kind: BackendKind::Mariadb,
            write_hold_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub role: Role,
}

fn default_port() -> u16 {
    3306
}

impl BackendConfig {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    #[serde(flatten)]
    pub password: PasswordSource,
    #[serde(default)]
    pub policy: RoutePolicy,
}

/// Where a password comes from: inline, an environment variable, or a file.
#[derive(Clone, Default, PartialEq, Deserialize)]
pub struct PasswordSource {
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<String>,
}

impl fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordSource")
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// A password: never printed.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Where backends come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryKind {
    /// The [[backends]] list.
    #[default]
    Static,
    /// Pods in a namespace, by label selector; roles from a label, confirmed by probes.
    Kubernetes,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    pub kind: DiscoveryKind,
    /// Empty: the pod's own namespace (the service account's, or the kubeconfig context's).
    pub namespace: String,
    /// Label selector of the database pods.
    pub selector: String,
    /// The label holding a pod's role (`primary` / `standby`).
    pub role_label: String,
    /// Port of the database on each pod; ignored when port_name is set.
    pub port: u16,
    /// A named container port instead of `port`.
    pub port_name: String,
    /// A kubeconfig file; empty: the in-cluster service account.
    pub kubeconfig: String,
    /// The in-cluster service account directory (token, ca.crt).
    pub service_account_dir: String,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            kind: DiscoveryKind::Static,
            namespace: String::new(),
            selector: "app=dolt".into(),
            role_label: "dolthub.com/cluster_role".into(),
            port: 3306,
            port_name: String::new(),
            kubeconfig: String::new(),
            service_account_dir: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
        }
    }
}
