//! A session's transaction state as one type with named transitions: the server's status
//! flags (autocommit, in transaction) and a transaction lost with its connection. Pure:
//! unit-tested without sockets.

use crate::protocol::StatusFlags;

/// What the lost-transaction gate decides about a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// No lost transaction: run it.
    Run,
    /// ROLLBACK of the lost transaction: answered by the proxy with OK.
    AnswerOk,
    /// Refused with 9003 until the lost transaction is ended.
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnState {
    status: u16,
    lost: bool,
}

impl Default for TxnState {
    fn default() -> Self {
        TxnState {
            status: StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits(),
            lost: false,
        }
    }
}

impl TxnState {
    /// The flags an OK written by the proxy carries: the session's real state.
    pub fn flags(&self) -> StatusFlags {
        let keep = StatusFlags::SERVER_STATUS_AUTOCOMMIT | StatusFlags::SERVER_STATUS_IN_TRANS;
        StatusFlags::from_bits_truncate(self.status) & keep
    }

    pub fn in_transaction(&self) -> bool {
        self.flags().contains(StatusFlags::SERVER_STATUS_IN_TRANS)
    }

    pub fn autocommit(&self) -> bool {
        self.flags().contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT)
    }

    pub fn lost(&self) -> bool {
        self.lost
    }

    /// The server's flags from an OK or EOF: they are the truth (an ERR has none, and
    /// leaves the state as it was).
    pub fn server_says(&mut self, status: u16) {
        self.status = status;
    }

    /// The proxy answered BEGIN itself (an optimistic transaction, opened later).
    pub fn begin_deferred(&mut self) {
        self.status |= StatusFlags::SERVER_STATUS_IN_TRANS.bits();
    }

    /// The proxy ended a transaction it answered for (nothing was opened, or it failed).
    pub fn end_deferred(&mut self) {
        self.status &= !StatusFlags::SERVER_STATUS_IN_TRANS.bits();
    }

    /// The connection holding the session's state is gone: an open transaction is lost
    /// (rolled back by the server); true when there was one.
    pub fn lose_connection(&mut self) -> bool {
        let was = self.in_transaction();
        self.status &= !StatusFlags::SERVER_STATUS_IN_TRANS.bits();
        self.lost = was;
        was
    }

    /// After a lost transaction only ROLLBACK (answered here) or a new transaction (BEGIN,
    /// START TRANSACTION: how retry loops restart) is accepted; either ends the lost one.
    /// Anything else would commit half a transaction in autocommit.
    pub fn gate(&mut self, rollback: bool, begins: bool) -> Gate {
        if !self.lost {
            return Gate::Run;
        }
        if rollback {
            self.lost = false;
            return Gate::AnswerOk;
        }
        if begins {
            self.lost = false;
            return Gate::Run;
        }
        Gate::Refuse
    }

    /// COM_RESET_CONNECTION, COM_CHANGE_USER: a new session's state.
    pub fn reset(&mut self) {
        *self = TxnState::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN_TRANS: u16 = 1 | 2;

    #[test]
    fn the_server_flags_are_the_state() {
        let mut t = TxnState::default();
        assert!(t.autocommit() && !t.in_transaction());
        t.server_says(IN_TRANS);
        assert!(t.in_transaction());
        t.server_says(0);
        assert!(!t.autocommit() && !t.in_transaction(), "autocommit=0");
        t.reset();
        assert_eq!(t, TxnState::default());
    }

    #[test]
    fn a_lost_transaction_accepts_only_rollback_or_begin() {
        let mut t = TxnState::default();
        assert!(!t.lose_connection(), "no transaction: nothing lost");
        assert_eq!(t.gate(false, false), Gate::Run);
        t.server_says(IN_TRANS);
        assert!(t.lose_connection());
        assert!(!t.in_transaction() && t.lost());
        assert_eq!(t.gate(false, false), Gate::Refuse);
        assert_eq!(t.gate(false, false), Gate::Refuse, "until it is ended");
        assert_eq!(t.gate(true, false), Gate::AnswerOk);
        assert_eq!(t.gate(false, false), Gate::Run);
        t.server_says(IN_TRANS);
        t.lose_connection();
        assert_eq!(t.gate(false, true), Gate::Run, "a new BEGIN ends it too");
        assert!(!t.lost());
    }

    #[test]
    fn deferred_begins_set_and_clear_the_flag() {
        let mut t = TxnState::default();
        t.begin_deferred();
        assert!(t.in_transaction() && t.autocommit());
        t.end_deferred();
        assert!(!t.in_transaction());
    }
}
