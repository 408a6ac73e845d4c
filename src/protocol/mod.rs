//! MySQL wire format only: framing, handshake, auth math, OK/ERR/EOF, and the response
//! scanner that finds where a result ends. No tasks, pools, SQL or config live here.

pub mod auth;
pub mod command;
pub mod handshake;
pub mod messages;
pub mod packet;
pub mod scan;

pub use mysql_common::constants::{CapabilityFlags, StatusFlags};

/// Largest payload of one wire packet; a payload of exactly this size continues in the next.
pub const MAX_WIRE_PAYLOAD: usize = 0xFF_FFFF;

/// utf8mb4_general_ci: the collation switchyard asks for on backend connections.
pub const UTF8MB4_GENERAL_CI: u8 = 45;

/// Capabilities switchyard advertises to clients: its own fixed set, never the backend's.
pub fn client_capabilities() -> CapabilityFlags {
    CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_FOUND_ROWS
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB
        | CapabilityFlags::CLIENT_LOCAL_FILES
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_CONNECT_ATTRS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_DEPRECATE_EOF
}

/// Capabilities switchyard uses towards every backend: one fixed set, the clients' set
/// without CONNECT_WITH_DB (the schema is set per lease). MULTI_STATEMENTS is toggled per
/// lease with COM_SET_OPTION to follow the client; FOUND_ROWS is per pool.
pub fn backend_capabilities(found_rows: bool) -> CapabilityFlags {
    let mut caps = client_capabilities() - CapabilityFlags::CLIENT_CONNECT_WITH_DB;
    caps.set(CapabilityFlags::CLIENT_FOUND_ROWS, found_rows);
    caps
}

impl ProtoError {
    /// The peer had closed the connection without reading what was sent: a reset (the
    /// kernel answers data sent to a closed socket with RST) or a broken pipe. A command
    /// that failed this way never ran. A clean EOF proves nothing: the peer may have read
    /// and run the command before it closed.
    pub fn never_read(&self) -> bool {
        use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
        matches!(self, ProtoError::Io(e) if matches!(e.kind(), ConnectionReset | BrokenPipe))
    }
}

/// Errors of the wire layer: the peer broke the protocol or the socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("packet of {0} bytes exceeds the limit of {1}")]
    TooLarge(usize, usize),
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("connection closed by peer")]
    Closed,
}
