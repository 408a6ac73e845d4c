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

/// MariaDB's extended capabilities (the handshake's otherwise reserved bytes), as bits of
/// their own 32-bit word. A MariaDB server clears CLIENT_LONG_PASSWORD (its `CLIENT_MYSQL`)
/// in its greeting to say it reads them.
pub mod mariadb {
    pub const CLIENT_PROGRESS: u32 = 1;
    pub const CLIENT_STMT_BULK_OPERATIONS: u32 = 1 << 2;
    pub const CLIENT_EXTENDED_TYPE_INFO: u32 = 1 << 3;
    pub const CLIENT_CACHE_METADATA: u32 = 1 << 4;
    /// The extended capabilities switchyard relays: extended type info (a column's format
    /// name, `json`) changes only column definitions, which are relayed raw.
    pub const SUPPORTED: u32 = CLIENT_EXTENDED_TYPE_INFO;
}

/// Capabilities switchyard can offer clients; the greeting offers those the backends
/// have too (see `ServerProfile`).
pub fn client_capabilities() -> CapabilityFlags {
    CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_FOUND_ROWS
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB
        | CapabilityFlags::CLIENT_LOCAL_FILES
        | CapabilityFlags::CLIENT_IGNORE_SPACE
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_INTERACTIVE
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_CONNECT_ATTRS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_SESSION_TRACK
        | CapabilityFlags::CLIENT_DEPRECATE_EOF
}

/// Client capabilities that change how a server encodes its replies or sets up the
/// session. A backend connection is opened with the client's own choice of each, so
/// replies are relayed as the server wrote them; pools are kept per class.
pub fn class_capabilities() -> CapabilityFlags {
    CapabilityFlags::CLIENT_FOUND_ROWS
        | CapabilityFlags::CLIENT_IGNORE_SPACE
        | CapabilityFlags::CLIENT_INTERACTIVE
        | CapabilityFlags::CLIENT_DEPRECATE_EOF
}

/// The class of a backend connection: the encoding- and session-relevant capabilities it
/// was opened with (standard bits and MariaDB extended bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct ConnClass {
    caps: u32,
    ext: u32,
}

impl ConnClass {
    /// The class a client's negotiated capabilities ask for.
    pub fn of(caps: CapabilityFlags, ext: u32) -> Self {
        ConnClass {
            caps: (caps & class_capabilities()).bits(),
            ext: ext & mariadb::SUPPORTED,
        }
    }

    /// The class of a client that set every class capability off but DEPRECATE_EOF
    /// (mysql_async, the monitor).
    pub fn modern() -> Self {
        Self::of(CapabilityFlags::CLIENT_DEPRECATE_EOF, 0)
    }

    pub fn caps(self) -> CapabilityFlags {
        CapabilityFlags::from_bits_truncate(self.caps)
    }

    pub fn ext(self) -> u32 {
        self.ext
    }

    pub fn found_rows(self) -> bool {
        self.caps().contains(CapabilityFlags::CLIENT_FOUND_ROWS)
    }

    pub fn deprecate_eof(self) -> bool {
        self.caps().contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    /// A short name for /status and logs, e.g. `found_rows+deprecate_eof`.
    pub fn name(self) -> String {
        let mut parts = Vec::new();
        let c = self.caps();
        for (flag, n) in [
            (CapabilityFlags::CLIENT_FOUND_ROWS, "found_rows"),
            (CapabilityFlags::CLIENT_IGNORE_SPACE, "ignore_space"),
            (CapabilityFlags::CLIENT_INTERACTIVE, "interactive"),
            (CapabilityFlags::CLIENT_DEPRECATE_EOF, "deprecate_eof"),
        ] {
            if c.contains(flag) {
                parts.push(n);
            }
        }
        if self.ext & mariadb::CLIENT_EXTENDED_TYPE_INFO != 0 {
            parts.push("extended_type_info");
        }
        if parts.is_empty() {
            return "classic".into();
        }
        parts.join("+")
    }
}

/// Capabilities switchyard uses towards a backend for a connection of `class`: its own
/// base set (session tracking always, so the proxy sees GTIDs) plus the class's bits.
/// MULTI_STATEMENTS is toggled per lease with COM_SET_OPTION to follow the client.
pub fn backend_capabilities(class: ConnClass) -> CapabilityFlags {
    let base =
        client_capabilities() - CapabilityFlags::CLIENT_CONNECT_WITH_DB - class_capabilities();
    base | class.caps()
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
