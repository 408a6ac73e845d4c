//! Codec benchmarks: scanning a result set's packets (the relay's per-packet work) and
//! encoding packets.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use switchyard::protocol::messages::{ok_payload_with, OkInfo};
use switchyard::protocol::packet::{encode_packet, header};
use switchyard::protocol::scan::{Body, Encoding, Next, ResponseKind, Scanner};

/// A wire-format result set: column count, 4 column definitions, `rows` rows, final OK.
fn result_set(rows: usize) -> Vec<u8> {
    let mut w = Vec::new();
    let mut seq = encode_packet(&mut w, 1, &[4]);
    for i in 0..4u8 {
        let mut def = b"\x03def\x06sbtest\x07sbtest1\x07sbtest1\x01c\x01c\x0c".to_vec();
        def.extend_from_slice(&[45, 0, 120, 0, 0, 0, 254, 0, 0, 0, 0, 0, i]);
        seq = encode_packet(&mut w, seq, &def);
    }
    let row = [
        &[3u8][..],
        b"123",
        &[60],
        &[b'x'; 60],
        &[2],
        b"42",
        &[5],
        b"hello",
    ]
    .concat();
    for _ in 0..rows {
        seq = encode_packet(&mut w, seq, &row);
    }
    encode_packet(
        &mut w,
        seq,
        &ok_payload_with(
            0xFE,
            &OkInfo {
                status: 2,
                ..OkInfo::default()
            },
        ),
    );
    w
}

/// Walks the packets the way the relay does: header, first byte, terminators whole.
fn scan(wire: &[u8], backend_tracks: bool) -> usize {
    let enc = Encoding {
        deprecate_eof: true,
        backend_tracks,
        ..Encoding::default()
    };
    let mut s = Scanner::new(ResponseKind::Results, enc);
    let mut at = 0;
    let mut out = 0;
    loop {
        let (len, _) = header(&wire[at..at + 4]);
        let want = s.wants(len, wire.get(at + 4).copied());
        let st = s.step(len, &wire[at + 4..at + 4 + want]);
        out += usize::from(matches!(st.body, Body::Rewrite));
        at += 4 + len;
        if st.next == Next::Done {
            return out;
        }
    }
}

fn bench_scan(c: &mut Criterion) {
    for rows in [1usize, 100, 10_000] {
        let wire = result_set(rows);
        let mut g = c.benchmark_group(format!("scan_{rows}_rows"));
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function("untracked_backend", |b| {
            b.iter(|| scan(black_box(&wire), false))
        });
        g.bench_function("tracking_backend", |b| {
            b.iter(|| scan(black_box(&wire), true))
        });
        g.finish();
    }
}

fn bench_encode(c: &mut Criterion) {
    let payload = vec![7u8; 200];
    let mut out = Vec::with_capacity(1 << 16);
    c.bench_function("encode_200_byte_packet", |b| {
        b.iter(|| {
            out.clear();
            encode_packet(&mut out, 1, black_box(&payload))
        })
    });
}

criterion_group!(benches, bench_scan, bench_encode);
criterion_main!(benches);
