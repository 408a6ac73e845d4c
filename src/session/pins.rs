//! Why a session keeps its backend connection between statements: every reason is a
//! named, counted thing, and every one ends when its cause ends.

use std::collections::{BTreeMap, BTreeSet};

use crate::router::{NameOp, PinReason};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pin {
    /// A statement's side effect (user variables, temp tables, LOCK TABLES, ...).
    Statement(PinReason),
    /// An open cursor of a prepared statement (COM_STMT_FETCH follows).
    Cursor(u32),
    /// COM_STMT_SEND_LONG_DATA was sent; the EXECUTE must run on the same connection.
    LongData(u32),
    /// The previous statement left warnings or an error: kept for the next statement
    /// only, which may read them (SHOW WARNINGS, @@warning_count).
    Diagnostics,
    /// A statement failed under autocommit=0: an ERR carries no status flags, so whether
    /// it opened a transaction is unknown until the next OK says.
    UnknownTransaction,
}

impl Pin {
    pub fn name(self) -> &'static str {
        match self {
            Pin::Statement(r) => r.name(),
            Pin::Cursor(_) => "cursor",
            Pin::LongData(_) => "send_long_data",
            Pin::Diagnostics => "diagnostics",
            Pin::UnknownTransaction => "unknown_transaction",
        }
    }

    /// State that dies with the connection and cannot be rebuilt elsewhere: everything a
    /// statement left there (temp tables, locks, user variables, unknown SETs, ...) except
    /// what only concerned the next statement or transaction.
    fn is_unrecoverable(self) -> bool {
        matches!(self, Pin::Statement(r) if !matches!(r, PinReason::NextTransaction | PinReason::FoundRows))
    }

    /// Pins that only concern the statement right after the one that set them.
    fn is_next_statement_only(self) -> bool {
        matches!(
            self,
            Pin::Diagnostics | Pin::Statement(PinReason::FoundRows)
        )
    }
}

/// What the pins of a session say after a statement.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ended {
    /// A temporary table pin ended: reset the connection before it is pooled (a name the
    /// proxy matched may have named another schema's table).
    pub reset: bool,
}

#[derive(Debug, Default)]
pub struct Pins {
    set: BTreeSet<Pin>,
    /// Open named things per reason (a multiset: GET_LOCK is re-entrant); `None` is a
    /// name the router could not read, which only a close-all ends.
    names: BTreeMap<PinReason, Vec<Option<String>>>,
}

impl Pins {
    /// Adds a pin; true when it is new.
    pub fn add(&mut self, p: Pin) -> bool {
        self.set.insert(p)
    }

    pub fn remove(&mut self, p: Pin) {
        self.set.remove(&p);
    }

    pub fn remove_stmt(&mut self, id: u32) {
        self.set
            .retain(|p| !matches!(p, Pin::Cursor(i) | Pin::LongData(i) if *i == id));
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Only the diagnostics of the previous statement hold the connection.
    pub fn only_diagnostics(&self) -> bool {
        self.set.len() == 1 && self.set.contains(&Pin::Diagnostics)
    }

    pub fn clear(&mut self) {
        self.set.clear();
        self.names.clear();
    }

    pub fn contains(&self, p: Pin) -> bool {
        self.set.contains(&p)
    }

    /// The first pin whose state would be lost with the connection, if any.
    pub fn unrecoverable(&self) -> Option<&'static str> {
        self.set
            .iter()
            .find(|p| p.is_unrecoverable())
            .map(|p| p.name())
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.set.iter().map(|p| p.name()).collect()
    }

    /// A statement finished: pins that concerned only it end (diagnostics, FOUND_ROWS),
    /// unless it set them again.
    pub fn next_statement(&mut self, set_again: &[PinReason]) {
        self.set.retain(|p| {
            !p.is_next_statement_only() || matches!(p, Pin::Statement(r) if set_again.contains(r))
        });
    }

    /// A transaction ended (or a statement ran outside one): `SET TRANSACTION`'s pin for
    /// the next transaction ends, unless this statement set it.
    pub fn transaction_ended(&mut self, set_again: &[PinReason]) {
        if !set_again.contains(&PinReason::NextTransaction) {
            self.set.remove(&Pin::Statement(PinReason::NextTransaction));
        }
    }

    /// Applies a statement's named opens and closes; a reason's pin ends with its last
    /// open name.
    pub fn apply_names(&mut self, ops: &[NameOp]) -> Ended {
        let mut ended = Ended::default();
        for op in ops {
            let reason = match op {
                NameOp::Open(r, n) => {
                    self.names.entry(*r).or_default().push(n.clone());
                    continue;
                }
                NameOp::Close(r, Some(n)) => {
                    let open = self.names.entry(*r).or_default();
                    match open.iter().position(|o| o.as_deref() == Some(n)) {
                        Some(i) => {
                            open.remove(i);
                        }
                        None => continue,
                    }
                    *r
                }
                NameOp::Close(_, None) => continue,
                NameOp::CloseAll(r) => {
                    self.names.remove(r);
                    *r
                }
            };
            if self.names.get(&reason).is_none_or(Vec::is_empty)
                && self.set.remove(&Pin::Statement(reason))
            {
                ended.reset |= reason == PinReason::TempTable;
            }
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_pins_and_cursor_pins() {
        let mut p = Pins::default();
        assert!(p.add(Pin::Statement(PinReason::FoundRows)));
        assert!(!p.add(Pin::Statement(PinReason::FoundRows)));
        p.add(Pin::Cursor(3));
        assert_eq!(
            p.unrecoverable(),
            None,
            "the next statement's business only"
        );
        p.add(Pin::Statement(PinReason::TempTable));
        assert_eq!(p.unrecoverable(), Some(PinReason::TempTable.name()));
        p.remove_stmt(3);
        assert!(!p.contains(Pin::Cursor(3)));
        p.clear();
        assert!(p.is_empty());
    }

    fn open(p: &mut Pins, r: PinReason, n: Option<&str>) {
        p.add(Pin::Statement(r));
        p.apply_names(&[NameOp::Open(r, n.map(str::to_string))]);
    }

    fn close(p: &mut Pins, r: PinReason, n: &str) -> Ended {
        p.apply_names(&[NameOp::Close(r, Some(n.to_string()))])
    }

    #[test]
    fn a_named_pin_ends_with_its_last_name() {
        let mut p = Pins::default();
        open(&mut p, PinReason::GetLock, Some("a"));
        open(&mut p, PinReason::GetLock, Some("a"));
        open(&mut p, PinReason::GetLock, Some("b"));
        close(&mut p, PinReason::GetLock, "a");
        close(&mut p, PinReason::GetLock, "zzz");
        close(&mut p, PinReason::GetLock, "b");
        assert!(
            !p.is_empty(),
            "GET_LOCK is re-entrant: one 'a' is still held"
        );
        close(&mut p, PinReason::GetLock, "a");
        assert!(p.is_empty());
    }

    #[test]
    fn an_unreadable_name_ends_only_with_close_all() {
        let mut p = Pins::default();
        open(&mut p, PinReason::GetLock, None);
        close(&mut p, PinReason::GetLock, "x");
        assert!(!p.is_empty());
        p.apply_names(&[NameOp::CloseAll(PinReason::GetLock)]);
        assert!(p.is_empty());
    }

    #[test]
    fn a_dropped_temp_table_ends_its_pin_and_asks_for_a_reset() {
        let mut p = Pins::default();
        open(&mut p, PinReason::TempTable, Some("t1"));
        open(&mut p, PinReason::TextPrepare, Some("s1"));
        assert_eq!(
            close(&mut p, PinReason::TempTable, "t1"),
            Ended { reset: true }
        );
        assert_eq!(p.names(), vec!["text_prepare"]);
        assert_eq!(
            close(&mut p, PinReason::TextPrepare, "s1"),
            Ended::default()
        );
        assert!(p.is_empty());
    }

    #[test]
    fn next_statement_pins_end_after_one_statement() {
        let mut p = Pins::default();
        p.add(Pin::Statement(PinReason::FoundRows));
        p.add(Pin::Diagnostics);
        p.next_statement(&[PinReason::FoundRows]);
        assert_eq!(p.names(), vec!["found_rows"], "set again by this statement");
        p.next_statement(&[]);
        assert!(p.is_empty());
        p.add(Pin::Statement(PinReason::NextTransaction));
        p.transaction_ended(&[PinReason::NextTransaction]);
        assert!(!p.is_empty(), "the SET TRANSACTION itself");
        p.transaction_ended(&[]);
        assert!(p.is_empty());
    }
}
