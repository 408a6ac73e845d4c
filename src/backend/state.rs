//! Session state that must match between a client's session and the backend connection
//! that runs its command: schema, character set, known session variables, the
//! MULTI_STATEMENTS option. The session holds the state it wants; each backend connection
//! holds the state it has; `sync_plan` says what to send to make them equal.

use std::collections::BTreeMap;

use mysql_common::collations::{Collation, CollationId};

/// The character set of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Charset {
    /// Not known (after COM_RESET_CONNECTION: the server's global default).
    #[default]
    Unknown,
    /// Chosen by collation id in a handshake.
    Collation(u8),
    /// The server's global defaults (a handshake collation the server does not know).
    ServerDefault,
    /// Chosen by SET NAMES.
    Names {
        charset: String,
        collation: Option<String>,
    },
    /// Chosen by SET CHARACTER SET.
    CharacterSet(String),
}

impl Charset {
    /// SQL for `SET NAMES ...` (without SET), None when unknown.
    fn names_sql(&self) -> Option<String> {
        match self {
            Charset::Unknown => None,
            Charset::ServerDefault => Some(
                "character_set_client = DEFAULT, character_set_results = DEFAULT, collation_connection = DEFAULT".into(),
            ),
            Charset::Collation(id) => {
                let c = Collation::resolve(CollationId::from(u16::from(*id)));
                if c.charset().is_empty() {
                    return Some("NAMES utf8mb4".into());
                }
                Some(format!("NAMES {} COLLATE {}", c.charset(), c.collation()))
            }
            Charset::CharacterSet(cs) => Some(format!("CHARACTER SET {cs}")),
            Charset::Names { charset, collation } => Some(match collation {
                Some(col) => format!("NAMES {charset} COLLATE {col}"),
                None => format!("NAMES {charset}"),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnState {
    pub schema: Option<String>,
    pub charset: Charset,
    /// Known session variables set away from their defaults: name -> SQL literal.
    pub vars: BTreeMap<String, String>,
    /// `SET SESSION TRANSACTION ...` characteristics, as SQL after TRANSACTION.
    pub transaction: Option<String>,
    /// MULTI_STATEMENTS option; None: unknown.
    pub multi_statements: Option<bool>,
}

/// What a backend connection must be sent before it runs a session's command.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncPlan {
    pub multi_statements: Option<bool>,
    pub init_db: Option<String>,
    pub set_sql: Option<String>,
    pub transaction_sql: Option<String>,
}

impl SyncPlan {
    pub fn is_empty(&self) -> bool {
        self.multi_statements.is_none()
            && self.init_db.is_none()
            && self.set_sql.is_none()
            && self.transaction_sql.is_none()
    }
}

/// Plans how to bring `have` to `want`; `mariadb` names the server's transaction
/// variables (`tx_isolation` there, `transaction_isolation` in MySQL 8).
pub fn sync_plan(want: &ConnState, have: &ConnState, mariadb: bool) -> SyncPlan {
    let mut parts: Vec<String> = Vec::new();
    if want.charset != have.charset {
        parts.extend(want.charset.names_sql());
    }
    for (k, v) in &want.vars {
        if have.vars.get(k) != Some(v) {
            parts.push(format!("SESSION {k} = {v}"));
        }
    }
    for k in have.vars.keys().filter(|k| !want.vars.contains_key(*k)) {
        parts.push(format!("SESSION {k} = DEFAULT"));
    }
    let set_sql = (!parts.is_empty()).then(|| format!("SET {}", parts.join(", ")));
    // its own statement: a batch would need MULTI_STATEMENTS, which follows the client
    let transaction_sql = (want.transaction != have.transaction).then(|| {
        match &want.transaction {
            Some(t) => format!("SET SESSION TRANSACTION {t}"),
            // back to the server's own defaults, whatever they are
            None if mariadb => "SET SESSION tx_isolation = DEFAULT, tx_read_only = DEFAULT".into(),
            None => "SET SESSION transaction_isolation = DEFAULT, transaction_read_only = DEFAULT"
                .into(),
        }
    });
    SyncPlan {
        multi_statements: want
            .multi_statements
            .filter(|w| have.multi_statements != Some(*w)),
        init_db: want
            .schema
            .as_ref()
            .filter(|s| have.schema.as_ref() != Some(*s))
            .cloned(),
        set_sql,
        transaction_sql,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_states_need_nothing() {
        let s = ConnState {
            schema: Some("sbtest".into()),
            charset: Charset::Collation(45),
            multi_statements: Some(true),
            ..ConnState::default()
        };
        assert!(sync_plan(&s, &s.clone(), true).is_empty());
    }

    #[test]
    fn differences_become_one_set_and_init_db() {
        let mut want = ConnState {
            schema: Some("a".into()),
            charset: Charset::Collation(8),
            multi_statements: Some(false),
            ..ConnState::default()
        };
        want.vars.insert("sql_mode".into(), "'ANSI'".into());
        let mut have = ConnState {
            schema: Some("b".into()),
            charset: Charset::Collation(45),
            multi_statements: Some(true),
            ..ConnState::default()
        };
        have.vars.insert("time_zone".into(), "'+01:00'".into());
        let p = sync_plan(&want, &have, true);
        assert_eq!(p.init_db.as_deref(), Some("a"));
        assert_eq!(p.multi_statements, Some(false));
        assert_eq!(
            p.set_sql.as_deref(),
            Some("SET NAMES latin1 COLLATE latin1_swedish_ci, SESSION sql_mode = 'ANSI', SESSION time_zone = DEFAULT")
        );
    }

    #[test]
    fn unknown_wanted_charset_is_left_alone() {
        let want = ConnState::default();
        let have = ConnState {
            charset: Charset::Collation(45),
            ..ConnState::default()
        };
        assert!(sync_plan(&want, &have, true).is_empty());
    }
}
