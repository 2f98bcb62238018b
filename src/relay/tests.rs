//! The relay against in-memory streams: framing across reads, the request
//! cycle, splices in both directions, the closing FATALs, backpressure
//! without deadlock, flushing of buffering streams, and the lease.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![tag];
    f.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    frame(b'Q', &body)
}

fn ready(status: u8) -> Vec<u8> {
    frame(b'Z', &[status])
}

fn error(severity: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!("S{severity}\0V{severity}\0C{code}\0M{message}\0\0");
    frame(b'E', body.as_bytes())
}

/// An upstream lease over an in-memory stream. With `hold`, written bytes
/// are kept back until flushed, as a TLS stream keeps its records.
struct TestUpstream {
    io: DuplexStream,
    ahead: BytesMut,
    hold: Option<Vec<u8>>,
}

impl Upstream for TestUpstream {
    fn read_ahead(&mut self) -> &mut BytesMut {
        &mut self.ahead
    }
}

impl AsyncRead for TestUpstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TestUpstream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match &mut this.hold {
            Some(held) => {
                held.extend_from_slice(b);
                Poll::Ready(Ok(b.len()))
            }
            None => Pin::new(&mut this.io).poll_write(cx, b),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(held) = &mut this.hold {
            while !held.is_empty() {
                match Pin::new(&mut this.io).poll_write(cx, held) {
                    Poll::Ready(Ok(n)) => {
                        held.drain(..n);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// What the stub inspector saw and how it answers.
#[derive(Default)]
struct Script {
    seen: Mutex<Vec<(u8, bool)>>,
    /// Substitute every Query whose text starts with "DROP".
    substitute_drops: bool,
    /// Replace every ErrorResponse whose message is "swap me".
    swap_errors: bool,
    /// Close the session on any ParameterStatus.
    close_on_setting: bool,
}

struct Stub(Arc<Script>);

impl Inspector for Stub {
    fn wants(&self) -> Wants {
        Wants {
            errors: self.0.swap_errors,
            parameter_status: self.0.close_on_setting,
            ..Wants::default()
        }
    }

    fn frontend(&mut self, msg: &Frontend<'_>) -> FrontendAction {
        if let Ok(mut seen) = self.0.seen.lock() {
            seen.push((msg.tag, msg.pipelined));
        }
        if msg.body().starts_with(b"SKIP") {
            return FrontendAction::Substitute(BytesMut::new());
        }
        if self.0.substitute_drops && msg.body().starts_with(b"DROP") {
            return FrontendAction::Substitute(BytesMut::from(&query("substitute")[..]));
        }
        FrontendAction::Forward
    }

    fn backend(&mut self, msg: &Backend<'_>) -> BackendAction {
        match msg {
            Backend::Error(e) if e.message == "swap me" => {
                BackendAction::Replace(BytesMut::from(&error("ERROR", "42501", "swapped")[..]))
            }
            Backend::ParameterStatus(_) => BackendAction::Close {
                code: "42501",
                message: "closed".into(),
            },
            _ => BackendAction::Pass,
        }
    }
}

struct Session {
    /// The client's end.
    client: DuplexStream,
    /// The server's end.
    server: DuplexStream,
    relay: tokio::task::JoinHandle<RelayEnd<TestUpstream>>,
}

fn start(script: Arc<Script>, buffer: usize, hold: bool, stops: Stops) -> Session {
    start_with(script, buffer, hold, stops, BytesMut::new())
}

fn start_with(
    script: Arc<Script>,
    buffer: usize,
    hold: bool,
    stops: Stops,
    ahead: BytesMut,
) -> Session {
    let (client, client_side) = tokio::io::duplex(buffer);
    let (server, server_side) = tokio::io::duplex(buffer);
    let upstream = TestUpstream {
        io: server_side,
        ahead,
        hold: hold.then(Vec::new),
    };
    let limits = Limits { max_message: 4096 };
    let relay = tokio::spawn(async move {
        let mut relay = Relay::new(client_side, BytesMut::new(), Stub(script), limits, stops);
        assert!(relay.lend(upstream).is_ok());
        let end = match relay.run().await {
            Event::Ended(end) => end,
            other => panic!("unexpected {other:?}"),
        };
        relay.finish(end).await
    });
    Session {
        client,
        server,
        relay,
    }
}

async fn read_exact(io: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(WAIT, io.read_exact(&mut buf))
        .await
        .expect("bytes in time")
        .expect("read");
    buf
}

async fn read_to_end(io: &mut DuplexStream) -> Vec<u8> {
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, io.read_to_end(&mut buf))
        .await
        .expect("closed in time")
        .expect("read");
    buf
}

async fn ended(s: Session) -> RelayEnd<TestUpstream> {
    tokio::time::timeout(WAIT, s.relay)
        .await
        .expect("relay ended in time")
        .expect("relay task")
}

#[tokio::test]
async fn a_round_trip_then_terminate_leaves_a_reusable_upstream() {
    let script = Arc::new(Script::default());
    let mut s = start(script.clone(), 64 * 1024, false, Stops::new(None));
    let q = query("SELECT 1");
    // Split mid-header and mid-body across writes.
    s.client.write_all(&q[..3]).await.expect("write");
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.client.write_all(&q[3..9]).await.expect("write");
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.client.write_all(&q[9..]).await.expect("write");
    assert_eq!(read_exact(&mut s.server, q.len()).await, q);
    let mut answer = frame(b'T', b"\0\0");
    answer.extend(frame(b'D', b"\0\0"));
    answer.extend(frame(b'C', b"SELECT 1\0"));
    answer.extend(ready(b'I'));
    s.server.write_all(&answer).await.expect("write");
    assert_eq!(read_exact(&mut s.client, answer.len()).await, answer);
    s.client.write_all(&frame(b'X', b"")).await.expect("write");
    let end = ended(s).await;
    assert!(matches!(end.end, SessionEnd::Terminated), "{:?}", end.end);
    assert!(end.reusable);
    assert_eq!(end.stats.statements, 1);
    assert_eq!(end.stats.bytes_to_upstream, q.len() as u64);
    assert_eq!(end.stats.bytes_to_client, answer.len() as u64);
    assert_eq!(
        script.seen.lock().map(|s| s.clone()).unwrap_or_default(),
        vec![(b'Q', false)]
    );
}

/// The once-seen COPY hang: bytes of a passthrough frame must go out as
/// they arrive, and a stream that buffers writes (TLS) must be flushed.
#[tokio::test]
async fn copy_data_is_never_held_back() {
    for hold in [false, true] {
        let mut s = start(
            Arc::new(Script::default()),
            64 * 1024,
            hold,
            Stops::new(None),
        );
        let data = frame(b'd', &[b'x'; 1000]);
        s.client.write_all(&data[..600]).await.expect("write");
        assert_eq!(read_exact(&mut s.server, 600).await, data[..600]);
        s.client.write_all(&data[600..]).await.expect("write");
        assert_eq!(read_exact(&mut s.server, 405).await, data[600..]);
        // And the other way.
        s.server.write_all(&data[..10]).await.expect("write");
        assert_eq!(read_exact(&mut s.client, 10).await, data[..10]);
        let Session {
            client,
            server,
            relay,
        } = s;
        drop(client);
        let end = tokio::time::timeout(WAIT, relay)
            .await
            .expect("relay ended in time")
            .expect("relay task");
        drop(server);
        assert!(matches!(end.end, SessionEnd::ClientGone));
        // Mid-frame both ways: not reusable.
        assert!(!end.reusable);
    }
}

/// A client that pipelines without reading stalls once the buffers are
/// full; it never deadlocks the relay, and everything arrives once it reads.
#[tokio::test]
async fn pipelining_without_reading_is_backpressure_not_deadlock() {
    const N: usize = 2_000;
    let s = start(Arc::new(Script::default()), 1024, false, Stops::new(None));
    let (mut client_r, mut client_w) = tokio::io::split(s.client);
    let (mut server_r, mut server_w) = tokio::io::split(s.server);
    let server = tokio::spawn(async move {
        // A server answering each query as it reads it.
        let answer = [frame(b'C', &[b'y'; 200]), ready(b'I')].concat();
        let q = query("SELECT 1");
        let mut got = vec![0; q.len()];
        for _ in 0..N {
            server_r.read_exact(&mut got).await.expect("query");
            server_w.write_all(&answer).await.expect("answer");
        }
        (server_r, server_w)
    });
    let writer = tokio::spawn(async move {
        let q = query("SELECT 1");
        for _ in 0..N {
            client_w.write_all(&q).await.expect("write");
        }
        client_w
    });
    // Let the writer run into backpressure before reading anything.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let per = frame(b'C', &[b'y'; 200]).len() + 6;
    let mut all = vec![0; per * N];
    tokio::time::timeout(WAIT, client_r.read_exact(&mut all))
        .await
        .expect("all answers in time")
        .expect("read");
    let mut client_w = writer.await.expect("writer");
    let _server = server.await.expect("server");
    client_w
        .write_all(&frame(b'X', b""))
        .await
        .expect("terminate");
    let end = tokio::time::timeout(WAIT, s.relay)
        .await
        .expect("ended")
        .expect("task");
    assert!(matches!(end.end, SessionEnd::Terminated));
    assert!(end.reusable);
    assert_eq!(end.stats.statements, N as u64);
}

#[tokio::test]
async fn substitutes_and_replacements_keep_the_streams_in_order() {
    let script = Arc::new(Script {
        substitute_drops: true,
        swap_errors: true,
        ..Default::default()
    });
    let mut s = start(script.clone(), 64 * 1024, false, Stops::new(None));
    let mut batch = query("SELECT 1");
    batch.extend(query("DROP TABLE t"));
    batch.extend(query("SELECT 2"));
    s.client.write_all(&batch).await.expect("write");
    let expect = [query("SELECT 1"), query("substitute"), query("SELECT 2")].concat();
    assert_eq!(read_exact(&mut s.server, expect.len()).await, expect);
    let answers = [
        ready(b'I'),
        error("ERROR", "42601", "swap me"),
        ready(b'I'),
        error("ERROR", "42601", "keep me"),
        ready(b'I'),
    ]
    .concat();
    s.server.write_all(&answers).await.expect("write");
    let expect = [
        ready(b'I'),
        error("ERROR", "42501", "swapped"),
        ready(b'I'),
        error("ERROR", "42601", "keep me"),
        ready(b'I'),
    ]
    .concat();
    assert_eq!(read_exact(&mut s.client, expect.len()).await, expect);
    let seen = script.seen.lock().map(|s| s.clone()).unwrap_or_default();
    // The second and third were pipelined behind the first.
    assert_eq!(seen, vec![(b'Q', false), (b'Q', true), (b'Q', true)]);
    s.client.write_all(&frame(b'X', b"")).await.expect("write");
    assert!(ended(s).await.reusable);
}

/// An empty substitute drops the client's message and nothing else.
#[tokio::test]
async fn an_empty_substitute_drops_the_message() {
    let mut s = start(
        Arc::new(Script::default()),
        64 * 1024,
        false,
        Stops::new(None),
    );
    let batch = [query("SKIP this"), query("SELECT 1")].concat();
    s.client.write_all(&batch).await.expect("write");
    let expect = query("SELECT 1");
    assert_eq!(read_exact(&mut s.server, expect.len()).await, expect);
    s.server.write_all(&ready(b'I')).await.expect("write");
    assert_eq!(read_exact(&mut s.client, 6).await, ready(b'I'));
}

#[tokio::test]
async fn an_inspector_close_drops_the_frame_and_sends_its_fatal() {
    let script = Arc::new(Script {
        close_on_setting: true,
        ..Default::default()
    });
    let mut s = start(script, 64 * 1024, false, Stops::new(None));
    let before = frame(b'N', b"Mnotice\0\0");
    let stream = [before.clone(), frame(b'S', b"a\0b\0"), ready(b'I')].concat();
    s.server.write_all(&stream).await.expect("write");
    let got = read_to_end(&mut s.client).await;
    let fatal = error("FATAL", "42501", "closed");
    // pgwire writes S, V, C, M in that order, as the helper does.
    assert_eq!(got, [before, fatal].concat());
    let end = ended(s).await;
    assert!(matches!(end.end, SessionEnd::PolicyViolation));
    assert!(!end.reusable);
}

#[tokio::test]
async fn a_bad_frontend_length_gets_08p01() {
    let mut s = start(
        Arc::new(Script::default()),
        64 * 1024,
        false,
        Stops::new(None),
    );
    s.client
        .write_all(&[b'Q', 0, 0, 0, 2])
        .await
        .expect("write");
    let got = read_to_end(&mut s.client).await;
    assert_eq!(got[0], b'E');
    assert!(String::from_utf8_lossy(&got).contains("08P01"));
    let end = ended(s).await;
    assert!(matches!(end.end, SessionEnd::ClientProtocol(_)));
    // A frame over max_message is the same.
    let mut s = start(
        Arc::new(Script::default()),
        64 * 1024,
        false,
        Stops::new(None),
    );
    s.client
        .write_all(&frame(b'd', &[0; 5000])[..100])
        .await
        .expect("write");
    assert!(String::from_utf8_lossy(&read_to_end(&mut s.client).await).contains("08P01"));
}

#[tokio::test]
async fn a_lost_upstream_gets_08006_unless_the_server_said_goodbye() {
    // The server's own FATAL: passed on, nothing added.
    let mut s = start(
        Arc::new(Script::default()),
        64 * 1024,
        false,
        Stops::new(None),
    );
    let bye = error("FATAL", "57P01", "terminating connection");
    s.server.write_all(&bye).await.expect("write");
    drop(s.server);
    assert_eq!(read_to_end(&mut s.client).await, bye);
    // Silence then EOF between frames: 08006, after the whole frames.
    let mut s = start(
        Arc::new(Script::default()),
        64 * 1024,
        false,
        Stops::new(None),
    );
    let notice = frame(b'N', b"Mhello\0\0");
    s.server
        .write_all(&[notice.clone(), vec![b'Z', 0]].concat())
        .await
        .expect("write");
    drop(s.server);
    let got = read_to_end(&mut s.client).await;
    assert!(got.starts_with(&notice));
    assert!(String::from_utf8_lossy(&got[notice.len()..]).contains("08006"));
    // EOF inside a passthrough frame: nothing can be added.
    let mut s = start(
        Arc::new(Script::default()),
        64 * 1024,
        false,
        Stops::new(None),
    );
    let row = frame(b'D', &[1; 50]);
    s.server.write_all(&row[..20]).await.expect("write");
    drop(s.server);
    assert_eq!(read_to_end(&mut s.client).await, row[..20]);
    // A corrupt length: the whole frames before it, then 08006.
    let mut s = start(
        Arc::new(Script::default()),
        64 * 1024,
        false,
        Stops::new(None),
    );
    s.server
        .write_all(&[notice.clone(), vec![b'D', 0, 0, 0, 1]].concat())
        .await
        .expect("write");
    let got = read_to_end(&mut s.client).await;
    assert!(got.starts_with(&notice));
    assert!(String::from_utf8_lossy(&got[notice.len()..]).contains("08006"));
    assert!(matches!(ended(s).await.end, SessionEnd::UpstreamGone));
}

#[tokio::test]
async fn a_drain_waits_for_the_transaction_and_the_idle_timeout_for_quiet() {
    // Shutdown requested mid-transaction: the session runs on until it is
    // idle, then closes with 57P01.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stops = Stops::new(None).drain_on(StopCause::Shutdown, async move {
        let _ = rx.await;
        std::time::Instant::now() + WAIT
    });
    let mut s = start(Arc::new(Script::default()), 64 * 1024, false, stops);
    s.client.write_all(&query("BEGIN")).await.expect("write");
    read_exact(&mut s.server, query("BEGIN").len()).await;
    let _ = tx.send(());
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.server.write_all(&ready(b'T')).await.expect("write");
    assert_eq!(read_exact(&mut s.client, 6).await, ready(b'T'));
    s.client.write_all(&query("COMMIT")).await.expect("write");
    read_exact(&mut s.server, query("COMMIT").len()).await;
    s.server.write_all(&ready(b'I')).await.expect("write");
    let got = read_to_end(&mut s.client).await;
    assert_eq!(got[..6], ready(b'I'));
    assert!(String::from_utf8_lossy(&got[6..]).contains("57P01"));
    assert!(matches!(
        ended(s).await.end,
        SessionEnd::Stopped(StopCause::Shutdown)
    ));

    // Idle timeout: not while a query runs, then from the last message.
    let stops = Stops::new(Some(Duration::from_millis(150)));
    let mut s = start(Arc::new(Script::default()), 64 * 1024, false, stops);
    s.client
        .write_all(&query("SELECT pg_sleep(1)"))
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.server.write_all(&ready(b'I')).await.expect("write");
    assert_eq!(read_exact(&mut s.client, 6).await, ready(b'I'));
    let got = read_to_end(&mut s.client).await;
    assert!(String::from_utf8_lossy(&got).contains("idle timeout"));
    assert!(matches!(ended(s).await.end, SessionEnd::IdleTimeout));
}

/// The lease: between transactions the upstream is handed back and
/// another lent; the session carries on over the new one.
#[tokio::test]
async fn the_upstream_can_be_swapped_between_transactions() {
    let (mut client, client_side) = tokio::io::duplex(4096);
    let (mut server_a, a_side) = tokio::io::duplex(4096);
    let (mut server_b, b_side) = tokio::io::duplex(4096);
    let lease = |io| TestUpstream {
        io,
        ahead: BytesMut::new(),
        hold: None,
    };
    let limits = Limits { max_message: 4096 };
    let mut relay = Relay::new(
        client_side,
        BytesMut::new(),
        Stub(Arc::new(Script::default())),
        limits,
        Stops::new(None),
    );
    assert!(relay.lend(lease(a_side)).is_ok());
    relay.pause_between_transactions(true);
    // Nothing sent yet: already between transactions.
    assert!(matches!(relay.run().await, Event::BetweenTransactions));
    relay.pause_between_transactions(false);
    client.write_all(&query("BEGIN")).await.expect("write");
    server_a.write_all(&ready(b'T')).await.expect("write");
    let run = tokio::time::timeout(Duration::from_millis(200), relay.run()).await;
    assert!(run.is_err(), "no event while the transaction is open");
    assert!(!relay.can_hand_back());
    assert_eq!(read_exact(&mut server_a, 11).await, query("BEGIN"));
    client.write_all(&query("COMMIT")).await.expect("write");
    server_a.write_all(&ready(b'I')).await.expect("write");
    relay.pause_between_transactions(true);
    assert!(matches!(
        tokio::time::timeout(WAIT, relay.run()).await,
        Ok(Event::BetweenTransactions)
    ));
    let a = relay.hand_back().expect("handed back");
    assert!(relay.hand_back().is_none());
    drop(a);
    // Without an upstream the client's next query waits for one.
    client.write_all(&query("SELECT 2")).await.expect("write");
    assert!(matches!(
        tokio::time::timeout(WAIT, relay.run()).await,
        Ok(Event::NeedsUpstream)
    ));
    assert!(relay.lend(lease(b_side)).is_ok());
    relay.pause_between_transactions(false);
    let expect = query("SELECT 2");
    let pump = tokio::spawn(async move {
        let event = relay.run().await;
        (relay, event)
    });
    assert_eq!(read_exact(&mut server_b, expect.len()).await, expect);
    server_b.write_all(&ready(b'I')).await.expect("write");
    let got = read_exact(&mut client, 6 + 6 + 6).await;
    assert_eq!(got, [ready(b'T'), ready(b'I'), ready(b'I')].concat());
    client.write_all(&frame(b'X', b"")).await.expect("write");
    let (relay, event) = tokio::time::timeout(WAIT, pump)
        .await
        .expect("ended")
        .expect("task");
    let Event::Ended(end) = event else {
        panic!("unexpected {event:?}");
    };
    let end = relay.finish(end).await;
    assert!(matches!(end.end, SessionEnd::Terminated));
    assert!(end.reusable);
}

/// A session that always has bytes to move still meets its drain
/// deadline.
#[tokio::test]
async fn a_busy_stream_cannot_starve_the_drain_deadline() {
    let stops = Stops::new(None).drain_on(StopCause::Shutdown, async {
        std::time::Instant::now() + Duration::from_millis(200)
    });
    let mut s = start(Arc::new(Script::default()), 64 * 1024, false, stops);
    // A query in flight, so the drain waits for its deadline.
    s.client
        .write_all(&query("COPY t TO STDOUT"))
        .await
        .expect("write");
    let Session {
        mut client,
        mut server,
        relay,
    } = s;
    let feed = tokio::spawn(async move {
        let row = frame(b'd', &[b'r'; 1000]).repeat(16);
        while server.write_all(&row).await.is_ok() {}
    });
    let drain = tokio::spawn(async move {
        let mut sink = vec![0; 64 * 1024];
        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let end = tokio::time::timeout(WAIT, relay)
        .await
        .expect("the deadline ended the session")
        .expect("relay task");
    assert!(matches!(end.end, SessionEnd::Stopped(StopCause::Shutdown)));
    feed.abort();
    drain.abort();
}
