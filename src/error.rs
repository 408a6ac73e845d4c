//! The errors switchyard itself returns to clients, in one place: each is a MySQL error
//! code, SQLSTATE and message. README.md lists them in its error table.

use crate::protocol::messages::{err_payload, ErrInfo};

/// An error switchyard reports to a client as an ERR packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("Access denied for user '{user}'@'{host}' (using password: {using})")]
    AccessDenied {
        user: String,
        /// The client's address, as the server names it.
        host: String,
        using: &'static str,
    },
    #[error("Too many connections")]
    TooManyConnections,
    #[error("Unknown command: {0}")]
    UnknownCommand(String),
    #[error("Got a packet bigger than 'max_allowed_packet' bytes")]
    PacketTooLarge,
    #[error("Malformed communication packet: {0}")]
    Malformed(&'static str),
    #[error("switchyard: timed out after {ms} ms waiting for a connection to {backend}")]
    LeaseTimeout { backend: String, ms: u64 },
    #[error("switchyard: no {role} backend is available{detail}")]
    BackendUnavailable { role: &'static str, detail: String },
    #[error("switchyard: lost the connection to backend {backend} during the query: {detail}")]
    BackendLost { backend: String, detail: String },
    #[error("switchyard: the backend connection was lost inside a transaction, which was rolled back; only ROLLBACK is accepted until the transaction is ended")]
    TransactionLost,
    #[error("switchyard: the transaction was lost; send ROLLBACK before anything else")]
    InLostTransaction,
    #[error("switchyard: the backend connection holding this session's {0} was lost; closing the connection")]
    SessionStateLost(&'static str),
    #[error("Unknown prepared statement handler ({0}) given to {1}")]
    UnknownStatement(u32, &'static str),
    #[error("Unknown thread id: {0}")]
    NoSuchThread(u64),
    #[error("Bad handshake")]
    BadHandshake,
    #[error(
        "Connections using insecure transport are prohibited while --require_secure_transport=ON."
    )]
    InsecureTransport,
    #[error("switchyard: {0}")]
    Internal(String),
    #[error("You are not owner of thread {0}")]
    KillDenied(u64),
    #[error("Can't create more than max_prepared_stmt_count statements (current value: {0})")]
    TooManyStatements(usize),
    #[error("Unknown command")]
    UnknownOption,
    #[error("Out of memory; restart server and try again (needed {0} bytes)")]
    OutOfMemory(usize),
    #[error("The statement ({0}) has no open cursor")]
    NoCursor(u32),
    #[error("Connection was killed")]
    ConnectionKilled,
    #[error("Deadlock found when trying to get lock; try restarting transaction (switchyard: the transaction's reads changed when it moved to the primary)")]
    OptimisticConflict,
    /// An error the server returned: relayed with its own code, SQLSTATE and bytes.
    #[error("{}", .0.text())]
    Server(ErrInfo),
}

impl From<ErrInfo> for ClientError {
    fn from(e: ErrInfo) -> Self {
        ClientError::Server(e)
    }
}

impl ClientError {
    /// MySQL error code and SQLSTATE.
    pub fn code(&self) -> (u16, &'static [u8; 5]) {
        use ClientError::*;
        match self {
            AccessDenied { .. } => (1045, b"28000"),
            TooManyConnections => (1040, b"08004"),
            UnknownCommand(_) => (1047, b"08S01"),
            PacketTooLarge => (1153, b"08S01"),
            Malformed(_) => (1835, b"HY000"),
            LeaseTimeout { .. } => (9001, b"HY000"),
            BackendUnavailable { .. } => (9002, b"HY000"),
            BackendLost { .. } => (2013, b"08S01"),
            TransactionLost => (1213, b"40001"),
            InLostTransaction => (9003, b"25000"),
            SessionStateLost(_) => (9004, b"08S01"),
            UnknownStatement(..) => (1243, b"HY000"),
            NoSuchThread(_) => (1094, b"HY000"),
            BadHandshake => (1043, b"08S01"),
            InsecureTransport => (3159, b"HY000"),
            Internal(_) => (9005, b"HY000"),
            KillDenied(_) => (1095, b"HY000"),
            TooManyStatements(_) => (1461, b"42000"),
            UnknownOption => (1047, b"08S01"),
            OutOfMemory(_) => (1037, b"HY001"),
            NoCursor(_) => (1421, b"HY000"),
            ConnectionKilled => (1927, b"70100"),
            OptimisticConflict => (1213, b"40001"),
            Server(e) => (e.code, b"HY000"),
        }
    }

    /// The ERR payload.
    pub fn payload(&self) -> Vec<u8> {
        if let ClientError::Server(e) = self {
            return err_payload(e.code, &e.state, &e.message);
        }
        let (code, state) = self.code();
        err_payload(code, state, self.to_string().as_bytes())
    }
}
