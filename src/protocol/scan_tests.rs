use super::*;
use crate::protocol::messages::{err_payload, ok_payload_with, OkInfo};

/// Runs a list of payloads through a scanner; returns what a client would receive
/// (payloads after translation) and whether the response ended at the last packet.
fn run(kind: ResponseKind, classic: bool, packets: &[Vec<u8>]) -> (Vec<Vec<u8>>, bool, Scanner) {
    let mut s = Scanner::new(kind, classic);
    let mut out = Vec::new();
    let mut done = false;
    for (i, p) in packets.iter().enumerate() {
        assert!(!done, "packet {i} after the end");
        let want = s.wants(p.len(), p.first().copied());
        let want = s.wants(p.len(), p.first().copied()).max(want);
        let st = s.step(p.len(), &p[..want.min(p.len())]);
        if let Some(e) = st.pre_eof {
            out.push(e.to_vec());
        }
        match st.body {
            Body::Forward => out.push(p.clone()),
            Body::ReplaceEof(e) => out.push(e.to_vec()),
        }
        done = st.next == Next::Done;
    }
    (out, done, s)
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
    let (out, done, s) = run(ResponseKind::Results, true, &[ok(0, 2)]);
    assert!(done);
    assert_eq!(out.len(), 1);
    assert_eq!(s.summary.status, Some(2));
}

#[test]
fn result_set_classic_client_gets_eofs() {
    let pk = vec![
        vec![2],
        coldef("a"),
        coldef("b"),
        vec![1, b'x', 1, b'y'],
        ok(0xFE, 0x22),
    ];
    let (out, done, s) = run(ResponseKind::Results, true, &pk);
    assert!(done);
    assert_eq!(out.len(), 6, "EOF inserted after the columns");
    assert_eq!(out[3][0], 0xFE);
    assert_eq!(out[3].len(), 5);
    assert_eq!(
        out[5],
        vec![0xFE, 1, 0, 0x22, 0],
        "final OK became an EOF with its flags"
    );
    assert_eq!(s.summary.status, Some(0x22));
}

#[test]
fn result_set_modern_client_passes_through() {
    let pk = vec![vec![1], coldef("a"), vec![1, b'x'], ok(0xFE, 2)];
    let (out, done, _) = run(ResponseKind::Results, false, &pk);
    assert!(done);
    assert_eq!(out, pk);
}

#[test]
fn empty_result_classic_gets_two_eofs() {
    let pk = vec![vec![1], coldef("a"), ok(0xFE, 2)];
    let (out, done, _) = run(ResponseKind::Results, true, &pk);
    assert!(done);
    assert_eq!(out.len(), 4);
    assert!(out[2][0] == 0xFE && out[3][0] == 0xFE);
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
    let (out, done, s) = run(ResponseKind::Results, false, &pk);
    assert!(done);
    assert_eq!(out.len(), pk.len());
    assert_eq!(s.summary.results, 3);
}

#[test]
fn error_mid_rows_ends_and_is_reported() {
    let pk = vec![
        vec![1],
        coldef("a"),
        vec![1, b'1'],
        err_payload(1317, b"70100", "interrupted"),
    ];
    let (out, done, s) = run(ResponseKind::Results, true, &pk);
    assert!(done);
    assert_eq!(out.len(), 5);
    assert_eq!(s.summary.error.unwrap().code, 1317);
    assert_eq!(s.summary.status, None, "an ERR carries no flags");
}

#[test]
fn error_right_after_columns_gets_eof_first_for_classic() {
    let pk = vec![vec![1], coldef("a"), err_payload(1105, b"HY000", "x")];
    let (out, _, _) = run(ResponseKind::Results, true, &pk);
    assert_eq!(out.len(), 4);
    assert_eq!(out[2].len(), 5);
    assert_eq!(out[3][0], 0xFF);
}

#[test]
fn huge_row_continuations_are_not_inspected() {
    let mut big = vec![0xFEu8; MAX_WIRE_PAYLOAD];
    big[0] = 0xFC; // a row starting with a 2-byte length
    let tail = vec![0xFE, 0, 0, 0, 0, 0, 0]; // looks like a terminator but is a continuation
    let pk = vec![vec![1], coldef("a"), big, tail, ok(0xFE, 2)];
    let (out, done, _) = run(ResponseKind::Results, false, &pk);
    assert!(done);
    assert_eq!(out.len(), 5);
}

#[test]
fn a_row_of_exactly_max_payload_starting_with_fe_is_a_row() {
    let mut s = Scanner::new(ResponseKind::Rows, false);
    assert_eq!(s.wants(MAX_WIRE_PAYLOAD, Some(0xFE)), 1);
    let st = s.step(MAX_WIRE_PAYLOAD, &[0xFE]);
    assert_eq!(st.next, Next::More);
}

#[test]
fn local_infile_then_ok() {
    let mut s = Scanner::new(ResponseKind::Results, true);
    let st = s.step(5, &[0xFB, b'/', b't', b'm', b'p']);
    assert_eq!(st.next, Next::LocalInfile);
    s.resume();
    let okp = ok(0, 2);
    assert_eq!(s.step(okp.len(), &okp).next, Next::Done);
}

#[test]
fn cursor_open_classic_gets_one_eof() {
    let cursor = StatusFlags::SERVER_STATUS_CURSOR_EXISTS.bits() | 2;
    let pk = vec![vec![1], coldef("a"), ok(0xFE, cursor)];
    let mut s = Scanner::new(ResponseKind::Results, true);
    s.summary.status = Some(cursor); // the scanner learns the cursor from the terminator itself
    let mut out = 0;
    for p in &pk {
        let st = s.step(p.len(), p);
        out += 1 + usize::from(st.pre_eof.is_some());
    }
    assert_eq!(out, 3, "column count, column, one EOF");
}

#[test]
fn field_list_ends_at_terminator() {
    let pk = vec![coldef("a"), coldef("b"), ok(0xFE, 2)];
    let (out, done, _) = run(ResponseKind::FieldList, true, &pk);
    assert!(done);
    assert_eq!(out[2], vec![0xFE, 1, 0, 2, 0]);
}

#[test]
fn malformed_first_packet_ends_with_error() {
    let (_, done, s) = run(ResponseKind::Results, false, &[vec![0xFC]]);
    assert!(done);
    assert_eq!(s.summary.error.unwrap().code, 2027);
}
