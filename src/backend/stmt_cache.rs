//! Per-connection prepared statement cache: SQL (and schema) -> server statement id,
//! bounded (LRU); evicted statements are closed on the server.

use std::num::NonZeroUsize;

use lru::LruCache;

/// A statement prepared on one backend connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStmt {
    pub id: u32,
    pub params: u16,
    pub columns: u16,
    /// The parameter types the server last received for this statement: an EXECUTE
    /// without types is decoded with these, whichever session sent them.
    pub types: Option<std::sync::Arc<[u8]>>,
}

#[derive(Hash, PartialEq, Eq, Clone, Debug)]
pub struct StmtKey {
    pub sql: std::sync::Arc<[u8]>,
    pub schema: Option<String>,
}

pub struct StmtCache {
    map: LruCache<StmtKey, BackendStmt>,
    evicted: Vec<u32>,
}

impl StmtCache {
    pub fn new(cap: usize) -> Self {
        StmtCache {
            map: LruCache::new(NonZeroUsize::new(cap.max(1)).unwrap_or(NonZeroUsize::MIN)),
            evicted: Vec::new(),
        }
    }

    pub fn get(&mut self, key: &StmtKey) -> Option<&mut BackendStmt> {
        self.map.get_mut(key)
    }

    pub fn insert(&mut self, key: StmtKey, stmt: BackendStmt) {
        let id = stmt.id;
        if let Some((_, old)) = self.map.push(key, stmt) {
            if old.id != id {
                self.evicted.push(old.id);
            }
        }
    }

    /// Drops a statement the server no longer knows (closed or failed).
    pub fn forget(&mut self, key: &StmtKey) {
        self.map.pop(key);
    }

    pub fn take_evicted(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.evicted)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// After COM_RESET_CONNECTION the server already dropped them all.
    pub fn clear_without_close(&mut self) {
        self.map.clear();
        self.evicted.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> StmtKey {
        StmtKey {
            sql: s.as_bytes().into(),
            schema: None,
        }
    }

    #[test]
    fn evicts_least_recently_used_and_reports_it() {
        let mut c = StmtCache::new(2);
        let st = |id| BackendStmt {
            id,
            params: 0,
            columns: 0,
            types: None,
        };
        c.insert(key("a"), st(1));
        c.insert(key("b"), st(2));
        assert!(c.get(&key("a")).is_some());
        c.insert(key("c"), st(3));
        assert_eq!(c.take_evicted(), vec![2]);
        assert!(c.get(&key("b")).is_none());
        assert_eq!(c.len(), 2);
        assert!(c.take_evicted().is_empty());
    }
}
