//! switchyard: a MySQL-protocol read/write splitting proxy for Dolt and MySQL/MariaDB
//! primary/replica clusters. See ARCHITECTURE.md for the shape of the code.

pub mod admin;
pub mod app;
pub mod backend;
pub mod config;
pub mod digest;
pub mod discovery;
pub mod error;
pub mod listener;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod reload;
pub mod router;
pub mod session;
pub mod tls;
pub mod topology;
