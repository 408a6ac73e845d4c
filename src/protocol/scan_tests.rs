use super::*;
use crate::protocol::messages::{eof_payload, err_payload, ok_payload_with, OkInfo};

fn enc(deprecate_eof: bool) -> Encoding {
    Encoding {
        deprecate_eof,
        ..Encoding::default()
    }
}

/// Runs a list of payloads through a scanner; returns what a client would receive and
/// whether the response ended at the last packet.
fn run_with(kind: ResponseKind, e: Encoding, packets: &[Vec<u8>]) -> (Vec<Vec<u8>>, bool, Scanner) {
    let mut s = Scanner::new(kind, e);
    let mut out = Vec::new();
    let mut done = false;
    for (i, p) in packets.iter().enumerate() {
        assert!(!done, "packet {i} after the end");
        let want = s.wants(p.len(), p.first().copied());
        let want = s.wants(p.len(), p.first().copied()).max(want);
        let st = s.step(p.len(), &p[..want.min(p.len())]);
        match st.body {
            Body::Forward => out.push(p.clone()),
            Body::Rewrite => out.push(s.rewritten.clone()),
        }
        done = st.next == Next::Done;
    }
    (out, done, s)
}

fn run(
    kind: ResponseKind,
    deprecate_eof: bool,
    packets: &[Vec<u8>],
) -> (Vec<Vec<u8>>, bool, Scanner) {
    run_with(kind, enc(deprecate_eof), packets)
}

fn ok(header: u8, status: u16) -> Vec<u8> {
    ok_payload_with(
        header,
        &OkInfo {
            status,
            warnings: 1,
            ..OkInfo::default()
        },
    )
}

fn coldef(name: &str) -> Vec<u8> {
    let mut v = vec![3, b'd', b'e', b'f'];
    v.extend_from_slice(name.as_bytes());
    v
}

#[test]
fn simple_ok_ends() {
    let (out, done, s) = run(ResponseKind::Results, false, &[ok(0, 2)]);
    assert!(done);
    assert_eq!(out.len(), 1);
    assert_eq!(s.summary.status, Some(2));
}

#[test]
fn classic_result_set_passes_through_with_its_eofs() {
    let pk = vec![
        vec![2],
        coldef("a"),
        coldef("b"),
        eof_payload(3, 0x22).to_vec(),
        vec![1, b'x', 1, b'y'],
        eof_payload(1, 0x22).to_vec(),
    ];
    let (out, done, s) = run(ResponseKind::Results, false, &pk);
    assert!(done);
    assert_eq!(out, pk, "the server's own EOFs, warnings and flags");
    assert_eq!(s.summary.status, Some(0x22));
    assert_eq!(s.summary.last_ok.unwrap().warnings, 1);
}

#[test]
fn modern_result_set_passes_through() {
    let pk = vec![vec![1], coldef("a"), vec![1, b'x'], ok(0xFE, 2)];
    let (out, done, _) = run(ResponseKind::Results, true, &pk);
    assert!(done);
    assert_eq!(out, pk);
}

#[test]
fn classic_row_starting_with_fe_is_a_row() {
    let mut row = vec![0xFE];
    row.extend_from_slice(&[0; 12]);
    let pk = vec![
        vec![1],
        coldef("a"),
        eof_payload(0, 2).to_vec(),
        row,
        eof_payload(0, 2).to_vec(),
    ];
    let (out, done, _) = run(ResponseKind::Results, false, &pk);
    assert!(done);
    assert_eq!(out.len(), 5);
}

#[test]
fn more_results_continue_until_last() {
    let more = StatusFlags::SERVER_MORE_RESULTS_EXISTS.bits() | 2;
    let pk = vec![
        vec![1],
        coldef("a"),
        vec![1, b'1'],
        ok(0xFE, more),
        ok(0, more),
        vec![1],
        coldef("b"),
        ok(0xFE, 2),
    ];
    let (out, done, s) = run(ResponseKind::Results, true, &pk);
    assert!(done);
    assert_eq!(out.len(), pk.len());
    assert_eq!(s.summary.results, 3);
}

#[test]
fn error_mid_rows_ends_and_is_reported() {
    let pk = vec![
        vec![1],
        coldef("a"),
        eof_payload(0, 2).to_vec(),
        vec![1, b'1'],
        err_payload(1317, b"70100", b"interrupted"),
    ];
    let (out, done, s) = run(ResponseKind::Results, false, &pk);
    assert!(done);
    assert_eq!(out.len(), 5);
    assert_eq!(s.summary.error.unwrap().code, 1317);
}

#[test]
fn huge_row_continuations_are_not_inspected() {
    let mut big = vec![0xFEu8; MAX_WIRE_PAYLOAD];
    big[0] = 0xFC; // a row starting with a 2-byte length
    let tail = vec![0xFE, 0, 0, 0, 0, 0, 0]; // looks like a terminator but is a continuation
    let pk = vec![vec![1], coldef("a"), big, tail, ok(0xFE, 2)];
    let (out, done, _) = run(ResponseKind::Results, true, &pk);
    assert!(done);
    assert_eq!(out.len(), 5);
}

#[test]
fn a_row_of_exactly_max_payload_starting_with_fe_is_a_row() {
    let mut s = Scanner::new(ResponseKind::Rows, enc(true));
    assert_eq!(s.wants(MAX_WIRE_PAYLOAD, Some(0xFE)), 1);
    let st = s.step(MAX_WIRE_PAYLOAD, &[0xFE]);
    assert_eq!(st.next, Next::More);
}

#[test]
fn local_infile_then_ok() {
    let mut s = Scanner::new(ResponseKind::Results, enc(false));
    let st = s.step(5, &[0xFB, b'/', b't', b'm', b'p']);
    assert_eq!(st.next, Next::LocalInfile);
    s.resume();
    let okp = ok(0, 2);
    assert_eq!(s.step(okp.len(), &okp).next, Next::Done);
}

#[test]
fn classic_cursor_open_ends_at_the_columns_eof() {
    let cursor = StatusFlags::SERVER_STATUS_CURSOR_EXISTS.bits() | 2;
    let pk = vec![vec![1], coldef("a"), eof_payload(0, cursor).to_vec()];
    let (out, done, s) = run(ResponseKind::Results, false, &pk);
    assert!(done, "rows come with COM_STMT_FETCH");
    assert_eq!(out.len(), 3);
    assert_eq!(s.summary.status, Some(cursor));
}

#[test]
fn field_list_ends_at_terminator() {
    let pk = vec![coldef("a"), coldef("b"), eof_payload(0, 2).to_vec()];
    let (out, done, _) = run(ResponseKind::FieldList, false, &pk);
    assert!(done);
    assert_eq!(out, pk);
}

#[test]
fn malformed_first_packet_ends_with_error() {
    let (_, done, s) = run(ResponseKind::Results, true, &[vec![0xFC]]);
    assert!(done);
    assert_eq!(s.summary.error.unwrap().code, 2027);
}

/// An OK with info and a session-state block holding `last_gtid` and `autocommit`.
fn tracked_ok() -> Vec<u8> {
    let mut state = Vec::new();
    for (name, value) in [("last_gtid", "0-1-42"), ("autocommit", "ON")] {
        let mut data = Vec::new();
        write_lenenc(&mut data, name.len() as u64);
        data.extend_from_slice(name.as_bytes());
        write_lenenc(&mut data, value.len() as u64);
        data.extend_from_slice(value.as_bytes());
        state.push(0);
        write_lenenc(&mut state, data.len() as u64);
        state.extend_from_slice(&data);
    }
    let status = 2 | StatusFlags::SERVER_SESSION_STATE_CHANGED.bits();
    let mut p = ok_payload_with(
        0,
        &OkInfo {
            affected_rows: 2,
            status,
            ..OkInfo::default()
        },
    );
    let info = b"Records: 2  Duplicates: 0  Warnings: 0";
    write_lenenc(&mut p, info.len() as u64);
    p.extend_from_slice(info);
    write_lenenc(&mut p, state.len() as u64);
    p.extend_from_slice(&state);
    p
}

#[test]
fn gtid_is_taken_and_state_dropped_for_a_client_without_tracking() {
    let e = Encoding {
        backend_tracks: true,
        ..enc(true)
    };
    let (out, _, s) = run_with(ResponseKind::Results, e, &[tracked_ok()]);
    assert_eq!(s.summary.gtid.as_deref(), Some(b"0-1-42".as_slice()));
    let mut want = ok_payload_with(
        0,
        &OkInfo {
            affected_rows: 2,
            status: 2,
            ..OkInfo::default()
        },
    );
    want.push(38);
    want.extend_from_slice(b"Records: 2  Duplicates: 0  Warnings: 0");
    assert_eq!(
        out[0], want,
        "info as the server sends it, no state, no flag"
    );
}

#[test]
fn a_tracking_client_keeps_its_trackers_but_not_the_proxys() {
    let e = Encoding {
        backend_tracks: true,
        client_tracks: true,
        ..enc(true)
    };
    let (out, _, s) = run_with(ResponseKind::Results, e, &[tracked_ok()]);
    assert_eq!(s.summary.gtid.as_deref(), Some(b"0-1-42".as_slice()));
    let text = String::from_utf8_lossy(&out[0]).into_owned();
    assert!(
        text.contains("autocommit") && !text.contains("last_gtid"),
        "{text}"
    );
    let flags = parse_ok(&out[0]).unwrap().flags();
    assert!(flags.contains(StatusFlags::SERVER_SESSION_STATE_CHANGED));
    let wanting = Encoding {
        client_wants_gtid: true,
        ..e
    };
    let (out, _, _) = run_with(ResponseKind::Results, wanting, &[tracked_ok()]);
    assert_eq!(out[0], tracked_ok(), "asked for: relayed as it is");
}
