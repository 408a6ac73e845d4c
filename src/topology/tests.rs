use super::*;
use crate::backend::ConnectParams;
use crate::pool::PoolLimits;

fn node(id: usize) -> Arc<Node> {
    let limits = PoolLimits {
        max_per_user: 1,
        max_per_backend: 1,
        min_idle: 0,
        idle_timeout: Duration::from_secs(1),
        max_lifetime: Duration::from_secs(1),
    };
    let params = ConnectParams {
        address: String::new(),
        user: String::new(),
        password: String::new(),
        connect_timeout: Duration::from_secs(1),
        max_packet: 1024,
        statement_cache: 1,
        found_rows: false,
    };
    let pools = NodePools::new("n", "127.0.0.1:1", &[], &limits, &params);
    Arc::new(Node {
        id,
        name: format!("n{id}"),
        address: String::new(),
        pools,
    })
}

fn snap(entries: Vec<Entry>) -> Snapshot {
    Snapshot {
        entries,
        version: 1,
    }
}

fn probed(role: Role, epoch: Option<u64>) -> Result<Probed, String> {
    Ok(Probed {
        role,
        epoch,
        lag_ms: Some(0),
    })
}

const JUDGE: Judge = Judge { max_lag: None };

#[test]
fn one_primary_and_standbys() {
    let s = snap(vec![
        Entry::new(node(0), Role::Primary),
        Entry::new(node(1), Role::Standby),
    ]);
    assert_eq!(s.primary().map(|n| n.id), Some(0));
    assert_eq!(s.standby(None, 0).map(|n| n.id), Some(1));
    assert_eq!(s.standby(Some(1), 0).map(|n| n.id), None);
}

#[test]
fn two_primaries_trust_the_higher_epoch_or_neither() {
    let mut a = Entry::new(node(0), Role::Auto);
    let mut b = Entry::new(node(1), Role::Auto);
    assert!(apply_probe(&mut a, probed(Role::Primary, Some(3)), &JUDGE));
    assert!(apply_probe(&mut b, probed(Role::Primary, Some(4)), &JUDGE));
    assert_eq!(
        snap(vec![a.clone(), b.clone()]).primary().map(|n| n.id),
        Some(1)
    );
    apply_probe(&mut b, probed(Role::Primary, Some(3)), &JUDGE);
    assert_eq!(
        snap(vec![a.clone(), b.clone()]).primary().map(|n| n.id),
        None,
        "equal epochs: no primary"
    );
    apply_probe(&mut a, probed(Role::Primary, None), &JUDGE);
    apply_probe(&mut b, probed(Role::Primary, None), &JUDGE);
    assert!(
        snap(vec![a, b]).primary().is_none(),
        "no epochs: cannot tell, no writes"
    );
}

#[test]
fn auto_roles_follow_probes_and_read_only_errors() {
    let mut s = snap(vec![
        Entry::new(node(0), Role::Auto),
        Entry::new(node(1), Role::Auto),
    ]);
    assert!(s.primary().is_none() && !s.ready(), "unprobed");
    assert!(apply(
        &mut s,
        Update::Probe {
            id: 0,
            result: probed(Role::Primary, None)
        },
        &[],
        &JUDGE
    ));
    assert!(apply(
        &mut s,
        Update::Probe {
            id: 1,
            result: probed(Role::Standby, None)
        },
        &[],
        &JUDGE
    ));
    assert!(s.ready());
    assert_eq!(s.primary().map(|n| n.id), Some(0));
    assert!(
        apply(&mut s, Update::ReadOnly { id: 0 }, &[], &JUDGE),
        "a refused write demotes at once"
    );
    assert!(s.primary().is_none());
    assert!(
        !apply(
            &mut s,
            Update::Probe {
                id: 1,
                result: probed(Role::Standby, None)
            },
            &[],
            &JUDGE
        ),
        "no change, no new snapshot"
    );
    apply(
        &mut s,
        Update::Probe {
            id: 1,
            result: probed(Role::Primary, None),
        },
        &[],
        &JUDGE,
    );
    assert_eq!(s.primary().map(|n| n.id), Some(1));
}

#[test]
fn static_roles_ignore_probes_but_not_health() {
    let mut e = Entry::new(node(0), Role::Primary);
    apply_probe(&mut e, probed(Role::Standby, None), &JUDGE);
    assert_eq!(e.role, Some(Role::Primary));
    apply_probe(&mut e, Err("down".into()), &JUDGE);
    assert!(!e.healthy);
    assert!(snap(vec![e]).primary().is_none());
}

#[test]
fn lagging_standbys_leave_the_rotation() {
    let judge = Judge {
        max_lag: Some(Duration::from_millis(500)),
    };
    let mut e = Entry::new(node(0), Role::Standby);
    apply_probe(
        &mut e,
        Ok(Probed {
            role: Role::Standby,
            epoch: None,
            lag_ms: Some(2000),
        }),
        &judge,
    );
    assert!(snap(vec![e.clone()]).standby(None, 0).is_none());
    apply_probe(
        &mut e,
        Ok(Probed {
            role: Role::Standby,
            epoch: None,
            lag_ms: None,
        }),
        &judge,
    );
    assert!(!e.lag_ok, "stopped replication counts as lagging");
    apply_probe(
        &mut e,
        Ok(Probed {
            role: Role::Standby,
            epoch: None,
            lag_ms: Some(100),
        }),
        &judge,
    );
    assert!(snap(vec![e]).standby(None, 0).is_some());
}
