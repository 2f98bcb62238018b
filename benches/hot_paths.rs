//! Hot-path benchmarks: statement classification (verdict-cache hit and a
//! fresh classification of a realistic ORM mix) and frame scanning of a
//! server response stream. Run with `cargo bench --bench hot_paths`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rolegate::policy::{Switches, VerdictCache, classify};
use rolegate::protocol::FrameHeader;

/// Statements shaped like what SQLAlchemy, Django, ActiveRecord, Prisma,
/// Hibernate and pgbench send.
const ORM_MIX: &[&str] = &[
    "SELECT users.id AS users_id, users.email AS users_email, users.created_at AS users_created_at FROM users WHERE users.id = $1",
    "INSERT INTO \"orders\" (\"user_id\", \"total\", \"created_at\") VALUES ($1, $2, $3) RETURNING \"orders\".\"id\"",
    "UPDATE \"accounts\" SET \"balance\" = \"accounts\".\"balance\" + $1 WHERE \"accounts\".\"id\" = $2",
    "SELECT 1 AS one FROM \"sessions\" WHERE \"sessions\".\"token\" = $1 LIMIT $2",
    "SELECT \"public\".\"Post\".\"id\", \"public\".\"Post\".\"title\" FROM \"public\".\"Post\" WHERE (\"public\".\"Post\".\"authorId\" = $1 AND \"public\".\"Post\".\"published\" = $2) ORDER BY \"public\".\"Post\".\"createdAt\" DESC LIMIT $3 OFFSET $4",
    "select o1_0.id,o1_0.customer_id,o1_0.status from orders o1_0 where o1_0.status=$1 fetch first $2 rows only",
    "WITH recent AS (SELECT id, amount FROM payments WHERE created_at > now() - interval '1 day') SELECT sum(amount) FROM recent",
    "DELETE FROM cart_items WHERE cart_id = $1 AND product_id = ANY($2)",
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    "INSERT INTO events (kind, payload) VALUES ($1, $2::jsonb) ON CONFLICT (id) DO UPDATE SET payload = EXCLUDED.payload",
    "SAVEPOINT \"s140_x1\"",
    "SELECT set_config('app.current_tenant_id', $1, true)",
];

fn classification(c: &mut Criterion) {
    let switches = Switches::default();
    let cache = VerdictCache::new(10_000);
    for sql in ORM_MIX {
        cache.classify(sql.as_bytes(), &switches);
    }
    let mut i = 0usize;
    c.bench_function("verdict_cache_hit", |b| {
        b.iter(|| {
            i = (i + 1) % ORM_MIX.len();
            black_box(cache.classify(black_box(ORM_MIX[i].as_bytes()), &switches));
        })
    });
    let mut j = 0usize;
    c.bench_function("classify_miss_orm_mix", |b| {
        b.iter(|| {
            j = (j + 1) % ORM_MIX.len();
            black_box(classify(black_box(ORM_MIX[j].as_bytes()), &switches));
        })
    });
}

/// A result set as the server sends it: RowDescription, 1,000 DataRows,
/// CommandComplete, ReadyForQuery.
fn response_stream() -> Vec<u8> {
    let mut out = Vec::new();
    let frame = |out: &mut Vec<u8>, tag: u8, body: &[u8]| {
        out.push(tag);
        out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(body);
    };
    frame(&mut out, b'T', &[0u8; 60]);
    for i in 0..1000u32 {
        let mut row = vec![0, 3];
        for col in [
            i.to_string(),
            format!("user{i}@example.com"),
            "2026-11-23 12:00:00+00".to_string(),
        ] {
            row.extend_from_slice(&(col.len() as i32).to_be_bytes());
            row.extend_from_slice(col.as_bytes());
        }
        frame(&mut out, b'D', &row);
    }
    frame(&mut out, b'C', b"SELECT 1000\0");
    frame(&mut out, b'Z', b"I");
    out
}

fn frame_scanning(c: &mut Criterion) {
    let stream = response_stream();
    c.bench_function("scan_1000_row_response", |b| {
        b.iter(|| {
            let mut at = 0usize;
            let mut frames = 0u32;
            while let Ok(Some(h)) = FrameHeader::parse(black_box(&stream[at..]), usize::MAX) {
                at += h.total();
                frames += 1;
            }
            black_box(frames)
        })
    });
}

criterion_group!(benches, classification, frame_scanning);
criterion_main!(benches);
