//! Why a session keeps its backend connection between statements: every reason is a
//! named, counted thing.

use std::collections::BTreeSet;

use crate::router::PinReason;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pin {
    /// A statement's side effect (user variables, temp tables, LOCK TABLES, ...).
    Statement(PinReason),
    /// An open cursor of a prepared statement (COM_STMT_FETCH follows).
    Cursor(u32),
    /// COM_STMT_SEND_LONG_DATA was sent; the EXECUTE must run on the same connection.
    LongData(u32),
}

impl Pin {
    pub fn name(self) -> &'static str {
        match self {
            Pin::Statement(r) => r.name(),
            Pin::Cursor(_) => "cursor",
            Pin::LongData(_) => "send_long_data",
        }
    }

    /// State that dies with the connection and cannot be rebuilt elsewhere: everything a
    /// statement left there (temp tables, locks, user variables, unknown SETs, ...) except
    /// what only concerned the next statement or transaction.
    fn is_unrecoverable(self) -> bool {
        matches!(self, Pin::Statement(r) if !matches!(r, PinReason::NextTransaction | PinReason::FoundRows))
    }
}

#[derive(Debug, Default)]
pub struct Pins {
    set: BTreeSet<Pin>,
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

    pub fn clear(&mut self) {
        self.set.clear();
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
}
