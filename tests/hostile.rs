//! Hostile network input against a live proxy (`rolegate serve` in front of
//! the harness's PostgreSQL): negative, zero and huge lengths in the startup
//! packet and after login; a declared length longer than the data followed
//! by silence; garbage before the StartupMessage; a StartupMessage with
//! thousands of parameters; unterminated strings in the startup packet and
//! in frontend messages; a flood of connections that never authenticate
//! (the `max_connections` limit, the startup timeout, RSS and fd bounds);
//! a client that pipelines far faster than it reads (backpressure, bounded
//! RSS); and guessed CancelRequest keys (they must cancel nothing). After
//! each attack the proxy must still be running and serve a normal login.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use common::raw::{self, Msg, Raw, Recv};
use common::{ProxyProcess, WEB_PASSWORD, harness};
use rand::{RngExt, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: the machine may be loaded by other builds and tests.
const WAIT: Duration = Duration::from_secs(30);

fn web_params() -> Vec<(&'static str, String)> {
    vec![
        ("user", "web".to_string()),
        ("database", harness().model.database.clone()),
    ]
}

async fn login_web(port: u16) -> (Raw, Vec<Msg>) {
    let params = web_params();
    let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match Raw::login(port, &p, WEB_PASSWORD).await {
        Ok(r) => r,
        Err(m) => panic!(
            "login as web failed: {:?} {:?}",
            m.sqlstate(),
            m.field(b'M')
        ),
    }
}

/// Expect an ErrorResponse with severity FATAL and one of `codes`, then
/// the connection to close. Notices and other messages before it are
/// skipped. Returns the error.
async fn expect_fatal(raw: &mut Raw, codes: &[&str], what: &str) -> Msg {
    loop {
        match raw.recv_within(WAIT).await {
            Recv::Msg(m) if m.tag == b'E' => {
                let code = m.sqlstate().unwrap_or_default();
                assert!(
                    codes.contains(&code.as_str()),
                    "{what}: expected SQLSTATE {codes:?}, got {code} ({:?})",
                    m.field(b'M')
                );
                assert_eq!(
                    m.field(b'S').as_deref(),
                    Some("FATAL"),
                    "{what}: severity of {:?}",
                    m.field(b'M')
                );
                match raw.recv_within(WAIT).await {
                    Recv::Closed => return m,
                    other => panic!("{what}: connection still open after FATAL: {other:?}"),
                }
            }
            Recv::Msg(_) => continue,
            other => panic!("{what}: expected a FATAL {codes:?}, got {other:?}"),
        }
    }
}

/// Expect the connection to be closed (possibly after some messages, none
/// of which may be a ReadyForQuery).
async fn expect_closed(raw: &mut Raw, what: &str) {
    loop {
        match raw.recv_within(WAIT).await {
            Recv::Closed => return,
            Recv::Msg(m) if m.tag != b'Z' => continue,
            other => panic!("{what}: expected the connection to close, got {other:?}"),
        }
    }
}

/// Run `SELECT 1` on a logged-in raw session.
async fn select_one(raw: &mut Raw, what: &str) {
    raw.send(&raw::query("SELECT 1")).await;
    let msgs = raw.until_ready().await;
    assert_eq!(
        raw::tags(&msgs),
        "TDCZ",
        "{what}: SELECT 1 after the attack"
    );
}

/// The proxy process is up and a normal login runs a query.
async fn assert_serving(proxy: &mut ProxyProcess, what: &str) {
    assert!(
        proxy.is_running(),
        "{what}: rolegate exited\n{}",
        proxy.logs()
    );
    let (mut raw, _) = login_web(proxy.port).await;
    select_one(&mut raw, what).await;
    // And through a real driver.
    let url = proxy.url("web", WEB_PASSWORD, "disable");
    let client = common::connect_plain(&url)
        .await
        .unwrap_or_else(|e| panic!("{what}: tokio-postgres login failed: {e}"));
    let row = client
        .query_one("SELECT 1::int4", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, i32>(0), 1);
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Open file descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Make sure this process (and the proxies it starts) may open `n` files.
fn raise_nofile(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < n {
            assert!(
                lim.rlim_max >= n,
                "RLIMIT_NOFILE hard limit {} is below the {n} this test needs; raise it (ulimit -Hn)",
                lim.rlim_max
            );
            lim.rlim_cur = n;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

/// A startup packet's length field followed by `rest`, as raw bytes.
fn with_len(len: i32, rest: &[u8]) -> Vec<u8> {
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(rest);
    v
}

/// Negative, zero, too-small and huge lengths in the first packet: a FATAL
/// 08P01 and the connection closes; the proxy keeps serving.
#[tokio::test]
async fn startup_packet_bad_lengths() {
    let mut proxy = harness().start_proxy();
    // Only the length is sent: the proxy decides from it alone, and unread
    // bytes would turn its close into a reset.
    for len in [-1, i32::MIN, -8, 0, 1, 4, 7, 10_001, 1 << 20, i32::MAX] {
        let mut raw = Raw::connect(proxy.port).await;
        raw.send(&len.to_be_bytes()).await;
        let e = expect_fatal(&mut raw, &["08P01"], &format!("startup length {len}")).await;
        assert!(
            e.field(b'M').unwrap_or_default().contains("length"),
            "message names the length: {:?}",
            e.field(b'M')
        );
    }
    // Fixed-size requests with the wrong size.
    for (len, code) in [(12, 80_877_103u32), (8, 80_877_102), (20, 80_877_102)] {
        let mut raw = Raw::connect(proxy.port).await;
        let mut p = with_len(len, &code.to_be_bytes());
        p.resize(len as usize, 0);
        raw.send(&p).await;
        expect_fatal(
            &mut raw,
            &["08P01"],
            &format!("request {code} of length {len}"),
        )
        .await;
    }
    // A length cut short by the client closing: nothing to answer.
    let mut raw = Raw::connect(proxy.port).await;
    raw.send(&[0, 0]).await;
    raw.stream.shutdown().await.expect("shutdown");
    expect_closed(&mut raw, "half a length").await;
    assert_serving(&mut proxy, "after bad startup lengths").await;
}

/// Negative, zero, too-small and over-limit lengths after login, on
/// inspected (Query, Parse) and relayed (Bind, CopyData) messages: the
/// session ends with FATAL 08P01 and the proxy keeps serving.
#[tokio::test]
async fn post_login_bad_lengths() {
    let mut proxy = harness()
        .start_proxy_with(|c| c.replace("[listen]\n", "[listen]\nmax_message_size = \"1MiB\"\n"));
    for tag in [b'Q', b'P', b'B', b'd'] {
        for len in [-1, i32::MIN, 0, 3, (1 << 20) + 1, i32::MAX] {
            let (mut raw, _) = login_web(proxy.port).await;
            let mut m = vec![tag];
            m.extend_from_slice(&len.to_be_bytes());
            raw.send(&m).await;
            let what = format!("{} with length {len}", tag as char);
            let e = expect_fatal(&mut raw, &["08P01"], &what).await;
            assert!(
                e.field(b'M').unwrap_or_default().contains("length"),
                "{what}: {:?}",
                e.field(b'M')
            );
        }
    }
    // The largest message allowed still passes (a 1 MiB - 5 byte query).
    let (mut raw, _) = login_web(proxy.port).await;
    let mut sql = String::from("SELECT length('");
    let pad = (1 << 20) - 4 - 1 - sql.len() - "')".len();
    sql.push_str(&"x".repeat(pad));
    sql.push_str("')");
    raw.send(&raw::query(&sql)).await;
    let msgs = raw.until_ready().await;
    assert_eq!(
        raw::tags(&msgs),
        "TDCZ",
        "a query of exactly max_message_size"
    );
    assert_serving(&mut proxy, "after bad post-login lengths").await;
}

/// A length larger than the data, then silence. Before login the startup
/// timeout closes the connection; after login the session waits for the
/// rest of the message (as PostgreSQL does) without being closed by the
/// startup timeout, and answers once the message is complete.
#[tokio::test]
async fn declared_length_longer_than_data_then_silence() {
    let mut proxy = harness()
        .start_proxy_with(|c| c.replace("[listen]\n", "[listen]\nstartup_timeout = \"2s\"\n"));
    // Startup packet: claims 100 bytes, sends 10.
    let started = Instant::now();
    let mut raw = Raw::connect(proxy.port).await;
    raw.send(&with_len(100, &[0, 3, 0, 0, b'u', b's'])).await;
    expect_closed(&mut raw, "truncated startup packet").await;
    println!(
        "truncated startup packet closed after {:?}",
        started.elapsed()
    );

    // A connection that sends nothing at all is reaped too.
    let mut silent = Raw::connect(proxy.port).await;
    expect_closed(&mut silent, "silent connection").await;

    // After login: a Query header claiming more than was sent.
    let (mut raw, _) = login_web(proxy.port).await;
    let mut sql = "SELECT 7".to_string();
    sql.push_str(&" ".repeat(100));
    let full = raw::query(&sql);
    raw.send(&full[..12]).await;
    // Longer than the startup timeout: the logged-in session must not be
    // reaped by it.
    match raw.recv_within(Duration::from_secs(4)).await {
        Recv::Quiet => {}
        other => panic!("a partial message got an answer before it was complete: {other:?}"),
    }
    raw.send(&full[12..]).await;
    let msgs = raw.until_ready().await;
    assert_eq!(raw::tags(&msgs), "TDCZ");
    assert_eq!(msgs[1].body[6..], *b"7", "the completed query ran");
    assert!(
        proxy.logs().contains("startup timeout"),
        "the reaped connections are logged"
    );
    assert_serving(&mut proxy, "after truncated messages").await;
}

/// Garbage where the StartupMessage belongs: an HTTP request, a made-up
/// protocol version, zeros, and TLS-looking junk.
#[tokio::test]
async fn garbage_before_startup() {
    let mut proxy = harness().start_proxy();
    // "GET " read as a length is about 1.2 GB.
    let mut raw = Raw::connect(proxy.port).await;
    raw.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    expect_fatal(&mut raw, &["08P01"], "HTTP request").await;

    // A plausible length with an unknown protocol version. PostgreSQL
    // answers 0A000 here; 08P01 is an equally clean refusal.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6a7b);
    for _ in 0..20 {
        let mut body = vec![0u8; 28];
        rng.fill(&mut body[..]);
        // Keep the version's major away from 3 and from the request codes.
        body[0] = 0x10 | (body[0] & 0x0f);
        let mut raw = Raw::connect(proxy.port).await;
        raw.send(&with_len(32, &body)).await;
        expect_fatal(&mut raw, &["08P01", "0A000"], "unknown protocol version").await;
    }

    // Protocol 2.0 (no longer supported by anyone).
    let mut raw = Raw::connect(proxy.port).await;
    let mut p = with_len(0, &0x0002_0000u32.to_be_bytes());
    p.extend_from_slice(b"user\0web\0\0");
    let n = p.len() as i32;
    p[..4].copy_from_slice(&n.to_be_bytes());
    raw.send(&p).await;
    expect_fatal(&mut raw, &["08P01", "0A000"], "protocol 2.0").await;

    // Zeros: a length of 0.
    let mut raw = Raw::connect(proxy.port).await;
    raw.send(&[0; 4]).await;
    expect_fatal(&mut raw, &["08P01"], "zeros").await;

    // 0x16 starts a direct-TLS handshake: junk after it fails the handshake
    // and the connection closes (no PostgreSQL message is possible there).
    let mut raw = Raw::connect(proxy.port).await;
    let mut junk = vec![0x16, 0x03, 0x01, 0x00, 0x20];
    junk.extend_from_slice(&[0xab; 32]);
    raw.send(&junk).await;
    expect_closed(&mut raw, "TLS junk").await;

    // An SSLRequest answered 'S', then plaintext instead of a handshake.
    let mut raw = Raw::connect(proxy.port).await;
    raw.send(&with_len(8, &80_877_103u32.to_be_bytes())).await;
    let mut s = [0u8; 1];
    tokio::time::timeout(WAIT, raw.stream.read_exact(&mut s))
        .await
        .expect("answer to SSLRequest")
        .expect("read");
    assert_eq!(&s, b"S");
    raw.send(&raw::startup_packet(&[("user", "web")])).await;
    expect_closed(&mut raw, "plaintext after SSLRequest").await;

    // Too many SSLRequest/GSSENCRequest negotiations: GSSENC is answered
    // 'N' each time, the fourth packet is refused.
    let mut raw = Raw::connect(proxy.port).await;
    for _ in 0..3 {
        raw.send(&with_len(8, &80_877_104u32.to_be_bytes())).await;
        tokio::time::timeout(WAIT, raw.stream.read_exact(&mut s))
            .await
            .expect("answer to GSSENCRequest")
            .expect("read");
        assert_eq!(&s, b"N");
    }
    raw.send(&with_len(8, &80_877_104u32.to_be_bytes())).await;
    expect_fatal(&mut raw, &["08P01"], "fourth negotiation").await;
    assert_serving(&mut proxy, "after garbage").await;
}

/// Startup packets with thousands of parameters: over PostgreSQL's 10,000
/// byte limit they are refused with 08P01; just under it, every parameter
/// reaches the server.
#[tokio::test]
async fn startup_with_thousands_of_parameters() {
    let mut proxy = harness().start_proxy();
    let db = harness().model.database.clone();

    let names: Vec<(String, String)> = (0..5000)
        .map(|i| (format!("x.p{i}"), format!("v{i}")))
        .collect();
    let mut params: Vec<(&str, &str)> = vec![("user", "web"), ("database", &db)];
    params.extend(names.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut raw = Raw::connect(proxy.port).await;
    raw.send(&raw::startup_packet(&params)).await;
    expect_fatal(&mut raw, &["08P01"], "5,000 parameters").await;

    // As many placeholder settings as fit in 10,000 bytes, less headroom
    // for what the proxy adds upstream (its role name, the pinned
    // client_encoding and standard_conforming_strings): see
    // `startup_packet_at_the_limit_logs_in` for the packet at the limit.
    let params = fill_startup(&names, &db, 10_000 - 200);
    let n = params.len() - 2;
    assert!(n > 700, "{n} parameters fit");
    let (mut raw, _) = Raw::login(proxy.port, &params, WEB_PASSWORD)
        .await
        .unwrap_or_else(|m| panic!("{n} parameters: {:?}", m.field(b'M')));
    let last = n - 1;
    raw.send(&raw::query(&format!("SELECT current_setting('x.p{last}')")))
        .await;
    let msgs = raw.until_ready().await;
    assert_eq!(raw::tags(&msgs), "TDCZ");
    assert!(
        msgs[1].body.ends_with(format!("v{last}").as_bytes()),
        "the last of {n} parameters reached the server"
    );

    // Thousands of parameters that the policy must each look at: a refused
    // one at the very end is still found.
    let mut params: Vec<(&str, &str)> = vec![("user", "web"), ("database", &db)];
    params.extend(names[..600].iter().map(|(k, v)| (k.as_str(), v.as_str())));
    params.push(("row_security", "off"));
    // SCRAM comes first, then the parameter check refuses the login.
    match Raw::login(proxy.port, &params, WEB_PASSWORD).await {
        Ok(_) => panic!("row_security=off after 600 parameters was accepted"),
        Err(m) => assert_eq!(m.sqlstate().as_deref(), Some("42501")),
    }
    assert_serving(&mut proxy, "after huge startup packets").await;
}

/// `user`, `database`, then as many of `names` as fit in `limit` bytes.
fn fill_startup<'a>(
    names: &'a [(String, String)],
    db: &'a str,
    limit: usize,
) -> Vec<(&'a str, &'a str)> {
    let mut params: Vec<(&str, &str)> = vec![("user", "web"), ("database", db)];
    for (k, v) in names {
        params.push((k.as_str(), v.as_str()));
        if raw::startup_packet(&params).len() > limit {
            params.pop();
            break;
        }
    }
    params
}

/// A StartupMessage of exactly PostgreSQL's 10,000-byte limit is accepted
/// by PostgreSQL, so through the proxy it should log in (or be refused with
/// a clean 08P01/54000 naming the size): the proxy adds its role, database
/// and pinned parameters upstream, so it checks the upstream packet's size
/// and refuses with 08P01 rather than letting the server drop it.
#[tokio::test]
async fn startup_packet_at_the_limit_logs_in() {
    let proxy = harness().start_proxy();
    let db = harness().model.database.clone();
    let names: Vec<(String, String)> = (0..2000)
        .map(|i| (format!("x.p{i}"), format!("v{i}")))
        .collect();
    let params = fill_startup(&names, &db, 10_000);
    match Raw::login(proxy.port, &params, WEB_PASSWORD).await {
        Ok(_) => {}
        Err(m) => {
            let code = m.sqlstate().unwrap_or_default();
            assert!(
                code == "08P01" || code == "54000",
                "a {}-byte startup packet: {code} {:?}",
                raw::startup_packet(&params).len(),
                m.field(b'M')
            );
        }
    }
}

/// Unterminated strings: in the startup packet (refused, 08P01), in a
/// Query or Parse message body (refused as malformed, 42501, session
/// usable), and unterminated SQL literals/comments/identifiers inside a
/// well-formed Query (refused, 42501, session usable).
#[tokio::test]
async fn unterminated_strings() {
    let mut proxy = harness().start_proxy();

    // No terminator at all.
    let mut raw = Raw::connect(proxy.port).await;
    let mut p = with_len(0, &196_608u32.to_be_bytes());
    p.extend_from_slice(b"user\0web");
    let n = p.len() as i32;
    p[..4].copy_from_slice(&n.to_be_bytes());
    raw.send(&p).await;
    expect_fatal(&mut raw, &["08P01"], "unterminated startup value").await;

    let (mut raw, _) = login_web(proxy.port).await;
    // Query body without its NUL.
    raw.send(&raw::msg(b'Q', b"SELECT 1")).await;
    let msgs = raw.until_ready().await;
    assert_eq!(raw::tags(&msgs), "EZ", "unterminated Query body");
    assert_eq!(msgs[0].sqlstate().as_deref(), Some("42501"));
    select_one(&mut raw, "after an unterminated Query body").await;

    // Parse with an unterminated statement name / text.
    for body in [&b"stmt"[..], b"stmt\0SELECT 1"] {
        raw.send(&raw::msg(b'P', body)).await;
        raw.send(&raw::sync()).await;
        let msgs = raw.until_ready().await;
        assert_eq!(raw::tags(&msgs), "EZ", "unterminated Parse {body:?}");
        assert_eq!(msgs[0].sqlstate().as_deref(), Some("42501"));
    }
    select_one(&mut raw, "after unterminated Parse bodies").await;

    // Unterminated SQL tokens in a well-formed message.
    for sql in [
        "SELECT 'abc",
        "SELECT E'abc\\'",
        "SELECT $$abc",
        "SELECT $tag$abc$ta",
        "SELECT \"abc",
        "SELECT 1 /* comment",
        "SELECT 1 /* nested /* */",
        "SELECT U&'abc",
        "SELECT 'a' '",
        "SELECT 1; CREATE TABLE t (a text DEFAULT 'x",
    ] {
        raw.send(&raw::query(sql)).await;
        let msgs = raw.until_ready().await;
        assert_eq!(raw::tags(&msgs), "EZ", "{sql}");
        assert_eq!(msgs[0].sqlstate().as_deref(), Some("42501"), "{sql}");
    }
    select_one(&mut raw, "after unterminated SQL").await;
    assert_serving(&mut proxy, "after unterminated strings").await;
}

/// A startup packet whose last parameter name has no value
/// (`user\0web\0database\0`, no list terminator): PostgreSQL refuses it
/// with 08P01 ("invalid startup packet layout"), and so does the proxy
/// (pgwire's decoder alone would accept it).
#[tokio::test]
async fn startup_packet_without_list_terminator_is_refused() {
    let proxy = harness().start_proxy();
    // A name without its value.
    let mut raw = Raw::connect(proxy.port).await;
    let mut p = with_len(0, &196_608u32.to_be_bytes());
    p.extend_from_slice(b"user\0web\0database\0");
    let n = p.len() as i32;
    p[..4].copy_from_slice(&n.to_be_bytes());
    raw.send(&p).await;
    let mut saw = Vec::new();
    loop {
        match raw.recv_within(WAIT).await {
            Recv::Msg(m) if m.tag == b'E' => {
                saw.push(m.sqlstate().unwrap_or_default());
                break;
            }
            Recv::Msg(m) if m.tag == b'R' => {
                // It was taken for a complete packet: report what happened.
                saw.push("auth-request".into());
                break;
            }
            Recv::Msg(_) => continue,
            other => {
                saw.push(format!("{other:?}"));
                break;
            }
        }
    }
    assert_eq!(
        saw,
        ["08P01"],
        "a startup packet whose last name has no value (PostgreSQL: 08P01)"
    );
}

/// How one flood connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FloodEnd {
    /// ErrorResponse with this SQLSTATE, then close.
    Refused(String),
    /// Closed without a word (the startup timeout).
    Reaped,
    Other(String),
}

async fn flood_one(mut s: TcpStream) -> FloodEnd {
    let mut buf = BytesMut::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(120), s.read_buf(&mut buf)).await {
            Err(_) => return FloodEnd::Other("still open after 120 s".into()),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
        }
    }
    if buf.is_empty() {
        return FloodEnd::Reaped;
    }
    let m = Msg {
        tag: buf[0],
        body: buf.get(5..).unwrap_or_default().to_vec(),
    };
    if m.tag == b'E' {
        FloodEnd::Refused(m.sqlstate().unwrap_or_default())
    } else {
        FloodEnd::Other(format!("tag {:?}", m.tag as char))
    }
}

/// One round of 2,000 connections that never authenticate. Returns the
/// outcomes, the highest fd count and the highest RSS seen meanwhile.
async fn flood_round(proxy: &ProxyProcess, total: usize) -> (Vec<FloodEnd>, usize, u64) {
    let pid = proxy.pid();
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(total);
    let mut max_fds = 0;
    let mut max_rss = 0;
    for batch in 0..total / 200 {
        for _ in 0..200 {
            let s = tokio::time::timeout(WAIT, TcpStream::connect(("127.0.0.1", proxy.port)))
                .await
                .expect("connect timed out")
                .unwrap_or_else(|e| panic!("connect in batch {batch}: {e}"));
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                let end = flood_one(s).await;
                done.fetch_add(1, Ordering::Relaxed);
                end
            }));
        }
        max_fds = max_fds.max(fd_count(pid));
        max_rss = max_rss.max(rss_kib(pid));
    }
    // Sample while the held connections wait for the startup timeout.
    while done.load(Ordering::Relaxed) < total {
        max_fds = max_fds.max(fd_count(pid));
        max_rss = max_rss.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ends = Vec::with_capacity(total);
    for t in tasks {
        ends.push(t.await.expect("flood task"));
    }
    (ends, max_fds, max_rss)
}

/// 2,000 connections (twice) that never authenticate, against
/// `max_connections = 200`: the excess is refused with 53300, the held ones
/// are reaped by the startup timeout, the proxy never holds many more than
/// 200 sockets, its RSS stays bounded and returns near its baseline (no
/// growth from one round to the next), and a normal login works after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connection_flood() {
    raise_nofile(8192);
    let mut proxy = harness().start_proxy_with(|c| {
        c.replace(
            "[listen]\n",
            "[listen]\nmax_connections = 200\nstartup_timeout = \"3s\"\n",
        )
    });
    let pid = proxy.pid();
    assert_serving(&mut proxy, "before the flood").await;
    let base_fds = fd_count(pid);
    let base_rss = rss_kib(pid);
    let mut after = Vec::new();
    for round in 1..=2 {
        let (ends, max_fds, max_rss) = flood_round(&proxy, 2000).await;
        let refused = ends
            .iter()
            .filter(|e| matches!(e, FloodEnd::Refused(c) if c == "53300"))
            .count();
        let reaped = ends.iter().filter(|e| **e == FloodEnd::Reaped).count();
        let other: Vec<_> = ends
            .iter()
            .filter(|e| !matches!(e, FloodEnd::Reaped) && **e != FloodEnd::Refused("53300".into()))
            .collect();
        println!(
            "round {round}: {refused} refused (53300), {reaped} reaped; fds {base_fds} -> max {max_fds}; \
             RSS {base_rss} KiB -> max {max_rss} KiB"
        );
        assert!(other.is_empty(), "unexpected outcomes: {other:?}");
        assert!(refused >= 1, "nothing refused at max_connections = 200");
        assert!(reaped >= 1, "nothing held until the startup timeout");
        // 200 held sockets plus the listener, the admin port and a few in
        // the middle of being refused.
        assert!(
            max_fds <= base_fds + 200 + 100,
            "the proxy held {max_fds} fds (baseline {base_fds}) with max_connections = 200"
        );
        assert!(
            max_rss < 200 * 1024,
            "RSS reached {max_rss} KiB during the flood"
        );
        // Every connection is gone: the proxy's fds return to baseline.
        let deadline = Instant::now() + WAIT;
        while fd_count(pid) > base_fds + 5 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            fd_count(pid) <= base_fds + 5,
            "fds did not return to baseline: {} vs {base_fds}",
            fd_count(pid)
        );
        let rss = rss_kib(pid);
        println!("round {round}: RSS after {rss} KiB");
        assert!(
            rss < base_rss + 64 * 1024,
            "RSS after the flood {rss} KiB vs baseline {base_rss} KiB"
        );
        after.push(rss);
        assert_serving(&mut proxy, &format!("after flood round {round}")).await;
    }
    assert!(
        after[1] < after[0] + 32 * 1024,
        "RSS grew from round to round: {after:?} KiB"
    );
}

/// A client writes 200,000 queries returning 1 kB each without reading
/// for a while: the proxy's RSS stays bounded (it stops reading from the
/// client when the client stops reading from it), and then the client
/// reads every result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_without_reading_is_bounded() {
    const N: usize = 200_000;
    let mut proxy = harness().start_proxy();
    let pid = proxy.pid();
    let (raw, _) = login_web(proxy.port).await;
    let base_rss = rss_kib(pid);
    let (stream, mut leftover) = raw.into_parts();
    let (mut rd, mut wr) = stream.into_split();

    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let written = written.clone();
        tokio::spawn(async move {
            let q = raw::query("SELECT repeat('x', 1000)");
            let mut chunk = Vec::with_capacity(q.len() * 1000);
            for _ in 0..1000 {
                chunk.extend_from_slice(&q);
            }
            for _ in 0..N / 1000 {
                wr.write_all(&chunk).await.expect("write queries");
                written.fetch_add(chunk.len(), Ordering::Relaxed);
            }
            wr
        })
    };

    // Not reading: wait until the writer stalls (or finishes), sampling RSS.
    let total_bytes = raw::query("SELECT repeat('x', 1000)").len() * N;
    let mut max_rss = 0;
    let mut last = (0, Instant::now());
    let paused = Instant::now();
    loop {
        max_rss = max_rss.max(rss_kib(pid));
        let w = written.load(Ordering::Relaxed);
        if w != last.0 {
            last = (w, Instant::now());
        }
        if w == total_bytes || last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        assert!(
            paused.elapsed() < Duration::from_secs(120),
            "the writer neither stalled nor finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let w = written.load(Ordering::Relaxed);
    println!(
        "not reading: the client wrote {w} of {total_bytes} bytes before stalling; \
         proxy RSS {base_rss} KiB -> max {max_rss} KiB"
    );
    assert!(
        max_rss < 300 * 1024,
        "proxy RSS reached {max_rss} KiB while the client did not read"
    );

    // Drain: count every ReadyForQuery; no errors.
    let mut buf = std::mem::take(&mut leftover);
    let (mut ready, mut rows) = (0usize, 0usize);
    while ready < N {
        while buf.len() >= 5 {
            let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < len + 1 {
                break;
            }
            match buf[0] {
                b'Z' => ready += 1,
                b'D' => {
                    assert_eq!(len, 4 + 2 + 4 + 1000, "DataRow size");
                    rows += 1;
                }
                b'E' => panic!(
                    "error in the pipeline: {:?}",
                    Msg {
                        tag: b'E',
                        body: buf[5..len + 1].to_vec()
                    }
                    .field(b'M')
                ),
                _ => {}
            }
            buf.advance(len + 1);
        }
        if ready == N {
            break;
        }
        let n = tokio::time::timeout(Duration::from_secs(60), rd.read_buf(&mut buf))
            .await
            .expect("results stopped arriving")
            .expect("read results");
        assert!(n > 0, "connection closed after {ready} results");
    }
    assert_eq!(rows, N);
    let mut wr = tokio::time::timeout(WAIT, writer)
        .await
        .expect("writer finished")
        .expect("writer task");
    let after = rss_kib(pid);
    println!("drained {N} results; proxy RSS after {after} KiB");
    assert!(after < 300 * 1024, "RSS after draining {after} KiB");
    wr.write_all(&raw::msg(b'X', &[])).await.expect("terminate");
    assert_serving(&mut proxy, "after the pipeline").await;
}

/// Thousands of CancelRequests with guessed keys (random pid/secret pairs,
/// and the right pid with wrong secrets) while a session runs
/// `pg_sleep(3)`: the query completes normally. The right key, sent to
/// another session, does cancel (so the attempts were real).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessed_cancel_keys_cancel_nothing() {
    let mut proxy = harness().start_proxy();
    let (mut victim, msgs) = login_web(proxy.port).await;
    let (pid, secret) = raw::backend_key(&msgs).expect("BackendKeyData");
    victim.send(&raw::query("SELECT pg_sleep(3)")).await;

    let started = Instant::now();
    let port = proxy.port;
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(0xca9c_e100 + t);
            for i in 0..750 {
                let (p, s) = match i % 3 {
                    // The right pid, a wrong secret.
                    0 => {
                        let mut s: i32 = rng.random();
                        if s == secret {
                            s = s.wrapping_add(1);
                        }
                        (pid, s)
                    }
                    // Pids near the victim's (they are handed out in order).
                    1 => (pid + rng.random_range(-50..50), rng.random()),
                    _ => (rng.random(), rng.random()),
                };
                if (p, s) == (pid, secret) {
                    continue;
                }
                let mut c = TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect for cancel");
                c.write_all(&raw::cancel_request(p, s))
                    .await
                    .expect("send cancel");
                // The proxy answers nothing and closes when it is done.
                let mut sink = [0u8; 16];
                let n = tokio::time::timeout(WAIT, c.read(&mut sink))
                    .await
                    .expect("cancel connection not closed")
                    .unwrap_or(0);
                assert_eq!(n, 0, "a CancelRequest got an answer");
            }
        }));
    }
    for t in tasks {
        t.await.expect("cancel task");
    }
    println!("3,000 guessed cancels sent in {:?}", started.elapsed());
    let msgs = victim.until_ready().await;
    assert_eq!(
        raw::tags(&msgs),
        "TDCZ",
        "pg_sleep(3) was disturbed: {:?}",
        msgs.iter().map(|m| m.field(b'M')).collect::<Vec<_>>()
    );
    select_one(&mut victim, "victim after the cancel barrage").await;

    // Control: the right key cancels.
    let (mut other, msgs) = login_web(proxy.port).await;
    let (pid, secret) = raw::backend_key(&msgs).expect("BackendKeyData");
    other.send(&raw::query("SELECT pg_sleep(60)")).await;
    // Cancel until it lands (the query may not have started yet).
    let canceller = tokio::spawn(async move {
        for _ in 0..60 {
            let mut c = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect for cancel");
            c.write_all(&raw::cancel_request(pid, secret))
                .await
                .expect("send cancel");
            let mut sink = [0u8; 1];
            let _ = tokio::time::timeout(WAIT, c.read(&mut sink)).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let msgs = other.until_ready().await;
    canceller.abort();
    let err = msgs.iter().find(|m| m.tag == b'E').expect("cancelled");
    assert_eq!(err.sqlstate().as_deref(), Some("57014"));
    assert_serving(&mut proxy, "after the cancel barrage").await;
}

/// A query whose bytes arrive in several reads (here: a header and part of
/// the body, then the rest) must leave the session idle once answered:
/// the idle timeout then closes it with 57P01.
#[tokio::test]
async fn split_query_leaves_session_idle() {
    let mut proxy = harness()
        .start_proxy_with(|c| c.replace("[listen]\n", "[listen]\nidle_timeout = \"2s\"\n"));
    let (mut raw, _) = login_web(proxy.port).await;
    let full = raw::query("SELECT 1");
    raw.send(&full[..7]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    raw.send(&full[7..]).await;
    let msgs = raw.until_ready().await;
    assert_eq!(raw::tags(&msgs), "TDCZ");
    // Now idle: the idle timeout must close the session.
    expect_fatal(&mut raw, &["57P01"], "idle timeout after a split query").await;
    assert_serving(&mut proxy, "after the idle timeout").await;
}
