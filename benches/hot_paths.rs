//! Hot-path benchmarks: statement classification (verdict-cache hit and a
//! fresh classification of a realistic ORM mix, per statement) and frame
//! scanning of a server response stream (bare header walk, and the relay's
//! own frame cursor over 16 KiB reads). Run with `cargo bench --bench
//! hot_paths`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rolegate::policy::{Switches, VerdictCache, classify};
use rolegate::protocol::FrameHeader;
use rolegate::protocol::backend::ready_for_query;
use rolegate::relay::{FrameCursor, Step, Tags};

/// Statements shaped like what ActiveRecord, Django, SQLAlchemy, Hibernate,
/// Prisma and pgbench send: joins and IN lists, INSERT ... RETURNING, UPDATE,
/// DELETE, upserts, CTEs, transaction control, savepoints, SET LOCAL, SHOW,
/// set_config. Extended-protocol statements carry `$n` placeholders; Django
/// and psycopg interpolate literals client-side, so some carry constants.
const ORM_MIX: &[&str] = &[
    // ActiveRecord
    "SELECT \"users\".* FROM \"users\" WHERE \"users\".\"id\" = $1 LIMIT $2",
    "SELECT \"posts\".* FROM \"posts\" INNER JOIN \"authors\" ON \"authors\".\"id\" = \"posts\".\"author_id\" WHERE \"posts\".\"author_id\" IN ($1, $2, $3, $4, $5) ORDER BY \"posts\".\"created_at\" DESC",
    "INSERT INTO \"orders\" (\"user_id\", \"total\", \"created_at\") VALUES ($1, $2, $3) RETURNING \"orders\".\"id\"",
    "UPDATE \"accounts\" SET \"balance\" = \"accounts\".\"balance\" + $1 WHERE \"accounts\".\"id\" = $2",
    "SELECT 1 AS one FROM \"sessions\" WHERE \"sessions\".\"token\" = $1 LIMIT $2",
    "SAVEPOINT active_record_1",
    "RELEASE SAVEPOINT active_record_1",
    // Django (literals interpolated by the driver)
    "SELECT \"shop_order\".\"id\", \"shop_order\".\"customer_id\", \"shop_customer\".\"email\" FROM \"shop_order\" LEFT OUTER JOIN \"shop_customer\" ON (\"shop_order\".\"customer_id\" = \"shop_customer\".\"id\") WHERE (\"shop_order\".\"status\" IN ('paid', 'shipped') AND \"shop_order\".\"created_at\" >= '2026-11-01T00:00:00+00:00'::timestamptz) ORDER BY \"shop_order\".\"id\" DESC LIMIT 21",
    "SELECT COUNT(*) AS \"__count\" FROM \"blog_comment\" WHERE \"blog_comment\".\"post_id\" = 42",
    "DELETE FROM \"django_session\" WHERE \"django_session\".\"expire_date\" < '2026-11-23T12:00:00+00:00'::timestamptz",
    // SQLAlchemy
    "SELECT users.id AS users_id, users.email AS users_email, users.created_at AS users_created_at FROM users WHERE users.id = $1",
    "BEGIN",
    "SET LOCAL statement_timeout = '5s'",
    "COMMIT",
    // Hibernate / JDBC
    "select o1_0.id,o1_0.customer_id,o1_0.status,c1_0.id,c1_0.name from orders o1_0 join customers c1_0 on c1_0.id=o1_0.customer_id where o1_0.status=$1 fetch first $2 rows only",
    "SHOW TRANSACTION ISOLATION LEVEL",
    // Prisma
    "SELECT \"public\".\"Post\".\"id\", \"public\".\"Post\".\"title\" FROM \"public\".\"Post\" WHERE (\"public\".\"Post\".\"authorId\" = $1 AND \"public\".\"Post\".\"published\" = $2) ORDER BY \"public\".\"Post\".\"createdAt\" DESC LIMIT $3 OFFSET $4",
    // Hand-written application SQL
    "WITH recent AS (SELECT id, amount FROM payments WHERE created_at > now() - interval '1 day') SELECT sum(amount) FROM recent",
    "DELETE FROM cart_items WHERE cart_id = $1 AND product_id = ANY($2)",
    "INSERT INTO events (kind, payload) VALUES ($1, $2::jsonb) ON CONFLICT (id) DO UPDATE SET payload = EXCLUDED.payload",
    "SELECT set_config('app.current_tenant_id', $1, true)",
    // pgbench
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
];

fn classification(c: &mut Criterion) {
    let switches = Switches::default();
    // A mix the policy refused would measure the refusal path, not the
    // statements applications really send.
    for sql in ORM_MIX {
        let verdict = classify(sql.as_bytes(), &switches);
        assert!(
            verdict.allowed,
            "ORM_MIX statement refused ({verdict:?}): {sql}"
        );
    }
    let cache = VerdictCache::new(10_000);
    for sql in ORM_MIX {
        cache.classify(sql.as_bytes(), &switches);
    }
    // One statement per iteration, cycling through the mix: criterion's
    // time per iteration is the time per statement over the mix.
    let mut i = 0usize;
    c.bench_function("verdict_cache_hit", |b| {
        b.iter(|| {
            i = (i + 1) % ORM_MIX.len();
            black_box(cache.classify(black_box(ORM_MIX[i].as_bytes()), &switches));
        })
    });
    // Literal-heavy texts (benches/pgbench/select_literals.sql's shape):
    // every text is new, so the exact-bytes lookup misses and the shape
    // (constants folded) hits.
    let literal_texts: Vec<String> = (0..64u32)
        .map(|n| {
            format!(
                "SELECT aid, bid, abalance FROM pgbench_accounts WHERE aid IN ({}, {}, {}) \
                 AND abalance > -{} AND filler <> 'req-{}' ORDER BY aid",
                n * 7919 % 100_000,
                n * 104_729 % 100_000,
                n + 3,
                n * 31,
                n * 2_654_435_761 % 1_000_000
            )
        })
        .collect();
    cache.classify(literal_texts[0].as_bytes(), &switches);
    let mut k = 0usize;
    c.bench_function("verdict_cache_shape_hit", |b| {
        b.iter(|| {
            k = (k + 1) % literal_texts.len();
            let (v, hit) = cache.classify(black_box(literal_texts[k].as_bytes()), &switches);
            assert!(hit && v.allowed);
            black_box(v);
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

fn frame(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
}

/// A result set as the server sends it for a 3-column query: RowDescription,
/// 1,000 DataRows, CommandComplete, ReadyForQuery.
fn response_stream() -> Vec<u8> {
    let mut out = Vec::new();
    let mut desc = 3i16.to_be_bytes().to_vec();
    // name, table OID, column number, type OID (int8, text, timestamptz),
    // type size, type modifier, format code.
    for (n, (name, type_oid, size)) in [
        ("id", 20u32, 8i16),
        ("email", 25, -1),
        ("created_at", 1184, 8),
    ]
    .into_iter()
    .enumerate()
    {
        desc.extend_from_slice(name.as_bytes());
        desc.push(0);
        desc.extend_from_slice(&16_384u32.to_be_bytes());
        desc.extend_from_slice(&(n as i16 + 1).to_be_bytes());
        desc.extend_from_slice(&type_oid.to_be_bytes());
        desc.extend_from_slice(&size.to_be_bytes());
        desc.extend_from_slice(&(-1i32).to_be_bytes());
        desc.extend_from_slice(&0i16.to_be_bytes());
    }
    frame(&mut out, b'T', &desc);
    for i in 0..1000u32 {
        let mut row = 3i16.to_be_bytes().to_vec();
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

/// The server-to-client scan of the relay, minus the sockets: bytes arrive
/// in `chunk`-sized reads and go through the relay's [`FrameCursor`] as
/// the relay drives it — ordinary frames passed on by length without being
/// buffered whole, ReadyForQuery and ErrorResponse collected whole and
/// ReadyForQuery's status read. Returns (bytes passed on, last transaction
/// status).
fn relay_scan(stream: &[u8], chunk: usize, buf: &mut Vec<u8>) -> (usize, u8) {
    buf.clear();
    let mut cursor = FrameCursor::server().whole(Tags::of(b"ZE"));
    let mut passed = 0usize;
    let mut status = 0u8;
    for read in stream.chunks(chunk) {
        buf.extend_from_slice(read);
        let mut ready = 0usize;
        loop {
            match cursor.next(&buf[ready..]) {
                Ok(Step::Forward(n)) | Ok(Step::Marked { n, .. }) => ready += n,
                Ok(Step::Whole { tag, len }) => {
                    let frame = &buf[ready..ready + len];
                    if tag == b'Z' {
                        status = ready_for_query(frame).map_or(0, |s| s as u8);
                    }
                    ready += len;
                }
                Ok(Step::Need(_)) => break,
                Err(e) => panic!("corrupt stream: {e}"),
            }
        }
        // What the relay writes to the client; the rest waits for more bytes.
        black_box(&buf[..ready]);
        passed += ready;
        buf.drain(..ready);
    }
    (passed, status)
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
    let mut buf = Vec::with_capacity(64 * 1024);
    assert_eq!(
        relay_scan(&stream, 16 * 1024, &mut buf),
        (stream.len(), b'I')
    );
    c.bench_function("relay_scan_1000_row_response_16k_reads", |b| {
        b.iter(|| black_box(relay_scan(black_box(&stream), 16 * 1024, &mut buf)))
    });
}

criterion_group!(benches, classification, frame_scanning);
criterion_main!(benches);
