use std::time::Duration;

use super::owner::apply_probe;
use super::*;

fn node(id: usize) -> Arc<Node> {
    Arc::new(Node {
        id,
        name: format!("n{id}"),
        address: String::new(),
        outstanding: Default::default(),
        lag_ms: LAG_UNKNOWN.into(),
    })
}

fn entry(id: usize, configured: Role, label: Option<Role>) -> Entry {
    Entry::new(node(id), &format!("n{id}"), configured, label)
}

fn snap(entries: Vec<Entry>) -> Snapshot {
    Snapshot {
        entries,
        version: 1,
        discovered: true,
        discovery_error: None,
    }
}

fn probed(role: Role, epoch: Option<u64>) -> Result<Probed, String> {
    Ok(Probed {
        role,
        epoch,
        lag_ms: Some(0),
        reported_lags: Vec::new(),
    })
}

#[test]
fn one_primary_and_standbys() {
    let s = snap(vec![
        entry(0, Role::Primary, None),
        entry(1, Role::Standby, None),
    ]);
    assert_eq!(s.primary().map(|n| n.id), Some(0));
    assert_eq!(s.standby(None, 0).map(|n| n.id), Some(1));
    assert_eq!(s.standby(Some(1), 0).map(|n| n.id), None);
}

#[test]
fn two_primaries_trust_the_higher_epoch_or_neither() {
    let (mut a, mut b) = (entry(0, Role::Auto, None), entry(1, Role::Auto, None));
    assert!(apply_probe(&mut a, probed(Role::Primary, Some(3)), None));
    assert!(apply_probe(&mut b, probed(Role::Primary, Some(4)), None));
    assert_eq!(
        snap(vec![a.clone(), b.clone()]).primary().map(|n| n.id),
        Some(1)
    );
    apply_probe(&mut b, probed(Role::Primary, Some(3)), None);
    assert_eq!(
        snap(vec![a.clone(), b.clone()]).primary().map(|n| n.id),
        None,
        "equal epochs: no primary"
    );
    apply_probe(&mut a, probed(Role::Primary, None), None);
    apply_probe(&mut b, probed(Role::Primary, None), None);
    assert!(
        snap(vec![a, b]).primary().is_none(),
        "no epochs: cannot tell, no writes"
    );
}

#[test]
fn auto_roles_follow_probes() {
    let mut a = entry(0, Role::Auto, None);
    assert!(!snap(vec![a.clone()]).ready(), "unprobed");
    assert_eq!(a.role, None);
    apply_probe(&mut a, probed(Role::Primary, None), None);
    assert_eq!(a.role, Some(Role::Primary));
    assert!(snap(vec![a.clone()]).ready());
    assert!(
        !apply_probe(&mut a, probed(Role::Primary, None), None),
        "no change, no new snapshot"
    );
    apply_probe(&mut a, probed(Role::Standby, None), None);
    assert_eq!(a.role, Some(Role::Standby));
}

#[test]
fn a_discovered_primary_needs_label_and_probe_to_agree() {
    let mut e = entry(0, Role::Auto, Some(Role::Primary));
    apply_probe(&mut e, probed(Role::Standby, None), None);
    assert_eq!(
        e.role,
        Some(Role::Standby),
        "labelled primary, not yet promoted"
    );
    apply_probe(&mut e, probed(Role::Primary, None), None);
    assert_eq!(e.role, Some(Role::Primary));
    e.label = Some(Role::Standby);
    assert_eq!(
        e.effective_role(),
        Some(Role::Standby),
        "relabelled standby: no more writes"
    );
}

#[test]
fn static_roles_ignore_probes_but_not_health() {
    let mut e = entry(0, Role::Primary, None);
    apply_probe(&mut e, probed(Role::Standby, None), None);
    assert_eq!(e.role, Some(Role::Primary));
    apply_probe(&mut e, Err("down".into()), None);
    assert!(!e.healthy);
    assert!(snap(vec![e]).primary().is_none());
}

#[test]
fn lagging_standbys_leave_the_rotation() {
    let max = Some(Duration::from_millis(500));
    let mut e = entry(0, Role::Standby, None);
    apply_probe(
        &mut e,
        Ok(Probed {
            role: Role::Standby,
            epoch: None,
            lag_ms: Some(2000),
            reported_lags: Vec::new(),
        }),
        max,
    );
    assert!(snap(vec![e.clone()]).standby(None, 0).is_none());
    apply_probe(
        &mut e,
        Ok(Probed {
            role: Role::Standby,
            epoch: None,
            lag_ms: None,
            reported_lags: Vec::new(),
        }),
        max,
    );
    assert!(!e.lag_ok, "stopped replication counts as lagging");
    apply_probe(
        &mut e,
        Ok(Probed {
            role: Role::Standby,
            epoch: None,
            lag_ms: Some(100),
            reported_lags: Vec::new(),
        }),
        max,
    );
    assert!(snap(vec![e]).standby(None, 0).is_some());
}

#[test]
fn no_discovery_yet_is_not_ready() {
    let s = Snapshot::default();
    assert!(!s.ready());
}

#[test]
fn a_claim_without_an_epoch_makes_several_claims_undecidable_in_any_order() {
    let mk = |id, epoch| {
        let mut e = entry(id, Role::Auto, None);
        apply_probe(&mut e, probed(Role::Primary, epoch), None);
        e
    };
    let (a, b, c) = (mk(0, Some(5)), mk(1, None), mk(2, Some(7)));
    assert!(snap(vec![a.clone(), b.clone(), c.clone()])
        .primary()
        .is_none());
    assert!(snap(vec![b, a, c]).primary().is_none());
}

#[test]
fn dolt_standbys_take_the_lag_their_primary_reports() {
    let max = Some(Duration::from_millis(500));
    let mut s = snap(vec![
        entry(0, Role::Primary, None),
        entry(1, Role::Standby, None),
        entry(2, Role::Standby, None),
    ]);
    for e in &mut s.entries {
        e.key = format!("dolt-{}", e.node.id);
    }
    // a Dolt standby's own lag is NULL: on its own it would leave the rotation
    let standby = |lag| {
        Ok(Probed {
            role: Role::Standby,
            epoch: Some(1),
            lag_ms: lag,
            reported_lags: Vec::new(),
        })
    };
    apply_probe(&mut s.entries[1], standby(None), max);
    assert!(!s.entries[1].lag_ok);
    s.entries[0].reported_lags = vec![("dolt-1".into(), Some(20)), ("dolt-2".into(), Some(9000))];
    assert!(super::owner::dolt_standby_lags(&mut s, max));
    assert!(s.entries[1].lag_ok, "its own row: 20 ms");
    assert!(!s.entries[2].lag_ok, "its own row: 9 s");
    s.entries[0].reported_lags = vec![("standby".into(), Some(10))];
    super::owner::dolt_standby_lags(&mut s, max);
    assert!(
        s.entries[1].lag_ok && s.entries[2].lag_ok,
        "no row names them: the largest lag"
    );
    s.entries[0].reported_lags = vec![("standby".into(), None)];
    super::owner::dolt_standby_lags(&mut s, max);
    assert!(!s.entries[1].lag_ok, "an unknown lag counts as lagging");
}
