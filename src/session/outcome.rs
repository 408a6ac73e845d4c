//! The typed outcome of a relayed command that did not end cleanly: who failed, whether
//! anything reached the client, and whether running it again is safe. Pure: the session
//! does what the verdict says; the rules are unit-tested here without sockets.

use crate::backend::relay::RelayError;
use crate::protocol::messages::Refusal;

/// Where the failed attempt stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attempt {
    /// It ran on a standby.
    pub standby: bool,
    /// On the connection the session held (a transaction, a pin): its state goes with it.
    pub from_held: bool,
    /// Its node's role is left to the probes (`role = "auto"`, discovery).
    pub auto: bool,
    /// Re-runs so far, and whether the write hold still has time for another.
    pub retries: u32,
    pub time_left: bool,
    /// A standby was already skipped once for this command.
    pub excluded: bool,
    /// One statement that is not a CALL (a procedure may have committed before a refusal).
    pub rerunnable: bool,
    /// Outside a transaction, a statement with no effect beyond its connection (a plain
    /// read, BEGIN): running it again is safe even if it ran.
    pub harmless: bool,
}

/// What to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Refused before it took effect (read-only, killed): run it again, on the primary
    /// when a standby refused a read that writes.
    Rerun { to_primary: bool },
    /// Refused, and it stays refused: the client gets the server's error.
    PassRefusal,
    /// The held connection was killed: its transaction or session state is lost.
    HeldLost,
    /// The backend died inside a packet the client has begun to receive: close the client.
    CloseClient,
    /// A standby failed before any byte reached the client: another one runs it.
    RetryElsewhere,
    /// The server had closed the connection without reading the command: it never ran.
    RerunUnread,
    /// The backend died after the command may have run: tell the client what was lost.
    Lost,
    /// The client went away mid-response.
    ClientGone,
}

/// Attempts at most: a refusal during a failover is re-run a few times within the write
/// hold, a connection closed unread twice.
const MAX_REFUSED_RERUNS: u32 = 8;
const MAX_UNREAD_RERUNS: u32 = 2;

pub fn judge(err: &RelayError, a: &Attempt) -> Verdict {
    match err {
        RelayError::Refused(e) => refused(e.refusal(), a),
        RelayError::Backend {
            mid_packet: true, ..
        } => Verdict::CloseClient,
        RelayError::Backend {
            client_touched: false,
            ..
        } if a.standby && !a.from_held && !a.excluded => Verdict::RetryElsewhere,
        RelayError::Backend {
            client_touched: false,
            err,
            ..
        } if (err.never_read() || a.harmless)
            && !a.from_held
            && a.retries < MAX_UNREAD_RERUNS
            && a.rerunnable =>
        {
            Verdict::RerunUnread
        }
        RelayError::Backend { .. } => Verdict::Lost,
        RelayError::Client(_) => Verdict::ClientGone,
    }
}

fn refused(kind: Option<Refusal>, a: &Attempt) -> Verdict {
    if a.from_held && kind == Some(Refusal::Killed) {
        return Verdict::HeldLost;
    }
    let to_primary = a.standby && kind == Some(Refusal::ReadOnly);
    let budget = a.retries < MAX_REFUSED_RERUNS && a.time_left && a.rerunnable;
    // a read-only refusal re-runs where probes decide roles (a failover is under way), or
    // from a standby; a killed connection's statement never ran
    let cause = kind == Some(Refusal::Killed) || a.auto || to_primary;
    if budget && !a.from_held && cause {
        Verdict::Rerun { to_primary }
    } else {
        Verdict::PassRefusal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::ErrInfo;
    use crate::protocol::ProtoError;

    fn refusal(code: u16, msg: &str) -> RelayError {
        RelayError::Refused(ErrInfo {
            code,
            state: *b"HY000",
            message: msg.as_bytes().to_vec(),
        })
    }

    fn backend(kind: std::io::ErrorKind, touched: bool, mid: bool) -> RelayError {
        RelayError::Backend {
            err: ProtoError::Io(std::io::Error::from(kind)),
            client_touched: touched,
            mid_packet: mid,
        }
    }

    fn free() -> Attempt {
        Attempt {
            time_left: true,
            rerunnable: true,
            ..Attempt::default()
        }
    }

    const READ_ONLY: &str = "The MariaDB server is running with the --read-only option";

    #[test]
    fn refusals() {
        let ro = refusal(1290, READ_ONLY);
        let killed = refusal(1927, "Connection was killed");
        assert_eq!(
            judge(&ro, &free()),
            Verdict::PassRefusal,
            "static roles: the client's"
        );
        let auto = Attempt {
            auto: true,
            ..free()
        };
        assert_eq!(judge(&ro, &auto), Verdict::Rerun { to_primary: false });
        assert_eq!(
            judge(&killed, &free()),
            Verdict::Rerun { to_primary: false }
        );
        let standby = Attempt {
            standby: true,
            ..free()
        };
        assert_eq!(judge(&ro, &standby), Verdict::Rerun { to_primary: true });
        let held = Attempt {
            from_held: true,
            auto: true,
            ..free()
        };
        assert_eq!(
            judge(&ro, &held),
            Verdict::PassRefusal,
            "a transaction stays put"
        );
        assert_eq!(judge(&killed, &held), Verdict::HeldLost);
        let call = Attempt {
            rerunnable: false,
            auto: true,
            ..free()
        };
        assert_eq!(
            judge(&ro, &call),
            Verdict::PassRefusal,
            "a CALL may have committed"
        );
        let spent = Attempt {
            retries: MAX_REFUSED_RERUNS,
            auto: true,
            ..free()
        };
        assert_eq!(judge(&ro, &spent), Verdict::PassRefusal);
        let late = Attempt {
            time_left: false,
            auto: true,
            ..free()
        };
        assert_eq!(judge(&ro, &late), Verdict::PassRefusal);
    }

    #[test]
    fn backend_failures() {
        use std::io::ErrorKind::{ConnectionReset, UnexpectedEof};
        let standby = Attempt {
            standby: true,
            ..free()
        };
        assert_eq!(
            judge(&backend(UnexpectedEof, false, false), &standby),
            Verdict::RetryElsewhere
        );
        let excluded = Attempt {
            excluded: true,
            ..standby
        };
        assert_eq!(
            judge(&backend(UnexpectedEof, false, false), &excluded),
            Verdict::Lost
        );
        assert_eq!(
            judge(&backend(ConnectionReset, false, false), &free()),
            Verdict::RerunUnread
        );
        assert_eq!(
            judge(&backend(UnexpectedEof, false, false), &free()),
            Verdict::Lost,
            "a clean EOF proves nothing: the write may have run"
        );
        let harmless = Attempt {
            harmless: true,
            ..free()
        };
        assert_eq!(
            judge(&backend(UnexpectedEof, false, false), &harmless),
            Verdict::RerunUnread,
            "a BEGIN or a read outside a transaction may run again, whether it ran or not"
        );
        assert_eq!(
            judge(&backend(ConnectionReset, true, false), &free()),
            Verdict::Lost
        );
        assert_eq!(
            judge(&backend(ConnectionReset, true, true), &free()),
            Verdict::CloseClient
        );
        let held = Attempt {
            from_held: true,
            ..free()
        };
        assert_eq!(
            judge(&backend(ConnectionReset, false, false), &held),
            Verdict::Lost
        );
        assert_eq!(
            judge(&RelayError::Client(ProtoError::Closed), &free()),
            Verdict::ClientGone
        );
    }
}
