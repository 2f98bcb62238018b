//! Fuzz the frontend's first bytes: the untyped startup packet as
//! `login` reads it (`protocol::read_startup_packet` from an in-memory
//! reader that hands out bytes in fuzzer-chosen chunk sizes), the
//! StartupMessage parameter check (`policy::check_startup`, both on
//! packets that decode and directly on arbitrary name/value pairs), and
//! the authentication-phase reads that follow (`protocol::read_message`
//! with `MAX_AUTH_MESSAGE`, `take_cstr`). Asserts no panic and that every
//! accepted packet respects the documented limits.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rolegate::protocol::{
    self, MAX_AUTH_MESSAGE, MAX_STARTUP_PACKET, ProtocolError, StartupPacket,
};
use tokio::io::{AsyncRead, ReadBuf};

/// Hands out at most `chunk` bytes per read, so partial reads (a client
/// that trickles its packet) are exercised as well as whole ones.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 0x80 != 0 {
        // Direct parameter check: NUL-separated name/value pairs, decoded
        // lossily (the wire path only ever passes UTF-8 here).
        let parts: Vec<String> = rest
            .split(|b| *b == 0)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        let params: Vec<(String, String)> = parts
            .chunks(2)
            .map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or_default()))
            .collect();
        let first = rolegate::policy::check_startup(&params);
        assert_eq!(first, rolegate::policy::check_startup(&params));
        return;
    }
    let chunk = usize::from(mode & 0x7f).max(1) * 7;
    runtime().block_on(async {
        let mut reader = Trickle { data: rest, chunk };
        match protocol::read_startup_packet(&mut reader).await {
            Ok(StartupPacket::Startup(s)) => {
                // A packet that decodes was within PostgreSQL's limit.
                let used = rest.len() - reader.data.len();
                assert!(used <= MAX_STARTUP_PACKET, "accepted {used} bytes");
                assert_eq!(s.protocol_number_major, 3);
                // What login passes to the policy check.
                let params: Vec<(String, String)> = s
                    .parameters
                    .iter()
                    .filter(|(k, _)| {
                        !matches!(k.as_str(), "user" | "database") && !k.starts_with("_pq_.")
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let _ = rolegate::policy::check_startup(&params);
            }
            Ok(StartupPacket::Cancel { .. })
            | Ok(StartupPacket::SslRequest)
            | Ok(StartupPacket::GssEncRequest) => {
                let used = rest.len() - reader.data.len();
                assert!(used == 8 || used == 16, "fixed-size packet of {used} bytes");
            }
            Err(ProtocolError::BadStartupLength(_)) => {
                // Refused from the length alone: nothing past the header
                // may have been consumed for an out-of-range length.
            }
            Err(_) => {}
        }
        // Whatever follows is read as authentication-phase messages.
        let mut pending = BytesMut::new();
        for _ in 0..8 {
            match protocol::read_message(&mut reader, &mut pending, MAX_AUTH_MESSAGE).await {
                Ok((_tag, body)) => {
                    assert!(body.len() + 4 <= MAX_AUTH_MESSAGE);
                    let mut b: &[u8] = &body;
                    while protocol::take_cstr(&mut b).is_some() {}
                }
                Err(_) => break,
            }
            // A hostile header must never make the buffer grow past it.
            assert!(pending.len() <= MAX_AUTH_MESSAGE + 5 + chunk);
        }
    });
});
