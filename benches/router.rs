//! Router benchmarks: the statements sysbench sends (fast path) and ones that need the
//! sqlparser walk; what a query digest and the statement metrics cost per statement.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use switchyard::router::{classify, classify_multi};

fn bench_router(c: &mut Criterion) {
    let cases: [(&str, &[u8]); 7] = [
        ("point_select", b"SELECT c FROM sbtest1 WHERE id=4213"),
        (
            "range_order",
            b"SELECT c FROM sbtest1 WHERE id BETWEEN 100 AND 199 ORDER BY c",
        ),
        ("update", b"UPDATE sbtest1 SET k=k+1 WHERE id=4213"),
        ("begin", b"BEGIN"),
        ("set_autocommit", b"SET AUTOCOMMIT = 0"),
        (
            "for_update_subquery",
            b"SELECT c FROM (SELECT c FROM sbtest1 WHERE id = 5 FOR UPDATE) x",
        ),
        ("last_insert_id", b"SELECT LAST_INSERT_ID()"),
    ];
    let mut g = c.benchmark_group("classify");
    for (name, sql) in cases {
        g.bench_function(name, |b| b.iter(|| classify(black_box(sql))));
    }
    g.finish();
    c.bench_function("classify_multi_3_reads", |b| {
        b.iter(|| {
            classify_multi(black_box(
                b"SELECT 1; SELECT c FROM t WHERE id = 2; SHOW TABLES",
            ))
        })
    });
}

/// What a query digest costs per statement: the digest text and hash (into a reused
/// buffer), then the store's update of an existing entry.
fn bench_digest(c: &mut Criterion) {
    use switchyard::digest::{Digests, Observation};
    use switchyard::router::digest::digest;
    let sql: &[u8] = b"SELECT c FROM sbtest1 WHERE id=4213";
    let mut buf = String::new();
    c.bench_function("digest_text_point_select", |b| {
        b.iter(|| digest(black_box(sql), &mut buf))
    });
    let store = Digests::new(4 << 20);
    let hash = digest(sql, &mut buf);
    c.bench_function("digest_record_point_select", |b| {
        b.iter(|| {
            store.record(black_box(&Observation {
                user: "sbtest",
                schema: Some("sbtest"),
                text: &buf,
                hash,
                took: std::time::Duration::from_micros(80),
                rows: 1,
                error: false,
                standby: true,
            }))
        })
    });
    let metrics = switchyard::metrics::Metrics::new();
    c.bench_function("metrics_statement", |b| {
        b.iter(|| {
            metrics.statement(
                black_box(true),
                black_box(3),
                std::time::Duration::from_micros(80),
            )
        })
    });
}

criterion_group!(benches, bench_router, bench_digest);
criterion_main!(benches);
