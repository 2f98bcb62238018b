//! A minimal raw-protocol client for tests that need exact control of the
//! messages sent (pipelines without Sync, hostile packets, raw startup
//! parameters). Plaintext only; SCRAM via postgres-protocol.

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

/// A backend message: tag and body.
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// For ErrorResponse/NoticeResponse: the value of field `code`.
    pub fn field(&self, code: u8) -> Option<String> {
        let mut b = &self.body[..];
        while let Some((&f, rest)) = b.split_first() {
            if f == 0 {
                return None;
            }
            let end = rest.iter().position(|c| *c == 0)?;
            if f == code {
                return Some(String::from_utf8_lossy(&rest[..end]).into_owned());
            }
            b = &rest[end + 1..];
        }
        None
    }
    pub fn sqlstate(&self) -> Option<String> {
        self.field(b'C')
    }
}

pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut p = BytesMut::new();
    p.put_i32(0);
    p.put_i32(196608);
    for (k, v) in params {
        p.put_slice(k.as_bytes());
        p.put_u8(0);
        p.put_slice(v.as_bytes());
        p.put_u8(0);
    }
    p.put_u8(0);
    let len = p.len() as i32;
    p[..4].copy_from_slice(&len.to_be_bytes());
    p.to_vec()
}

pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 5);
    v.push(tag);
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut b = sql.as_bytes().to_vec();
    b.push(0);
    msg(b'Q', &b)
}

pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    b.extend_from_slice(sql.as_bytes());
    b.push(0);
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'P', &b)
}

/// Bind with no parameters and text results.
pub fn bind(portal: &str, stmt: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(portal.as_bytes());
    b.push(0);
    b.extend_from_slice(stmt.as_bytes());
    b.push(0);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'B', &b)
}

pub fn execute(portal: &str) -> Vec<u8> {
    let mut b = portal.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(&0i32.to_be_bytes());
    msg(b'E', &b)
}

pub fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

/// A CancelRequest packet for the given BackendKeyData.
pub fn cancel_request(pid: i32, secret: i32) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&16i32.to_be_bytes());
    v.extend_from_slice(&80_877_102u32.to_be_bytes());
    v.extend_from_slice(&pid.to_be_bytes());
    v.extend_from_slice(&secret.to_be_bytes());
    v
}

/// The (pid, secret) of the BackendKeyData among login messages.
pub fn backend_key(msgs: &[Msg]) -> Option<(i32, i32)> {
    let k = msgs.iter().find(|m| m.tag == b'K' && m.body.len() >= 8)?;
    let b = &k.body;
    Some((
        i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    ))
}

/// What [`Raw::recv_within`] saw.
#[derive(Debug)]
pub enum Recv {
    Msg(Msg),
    /// The peer closed the connection (or it broke).
    Closed,
    /// Nothing complete arrived within the wait.
    Quiet,
}

impl Raw {
    /// Open a TCP connection without doing anything.
    pub async fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Log in with SCRAM; returns the messages after authentication up to
    /// and including ReadyForQuery, or the error message.
    pub async fn login(
        port: u16,
        params: &[(&str, &str)],
        password: &str,
    ) -> Result<(Raw, Vec<Msg>), Msg> {
        let mut raw = Raw::connect(port).await;
        raw.send(&startup_packet(params)).await;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let m = raw.recv().await.expect("message during login");
            match m.tag {
                b'E' => return Err(m),
                b'R' => {
                    let code = i32::from_be_bytes([m.body[0], m.body[1], m.body[2], m.body[3]]);
                    match code {
                        0 => break,
                        10 => {
                            let s = ScramSha256::new(
                                password.as_bytes(),
                                ChannelBinding::unsupported(),
                            );
                            let mut b = b"SCRAM-SHA-256\0".to_vec();
                            b.extend_from_slice(&(s.message().len() as i32).to_be_bytes());
                            b.extend_from_slice(s.message());
                            raw.send(&msg(b'p', &b)).await;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().expect("scram");
                            s.update(&m.body[4..]).expect("scram update");
                            let reply = s.message().to_vec();
                            raw.send(&msg(b'p', &reply)).await;
                        }
                        12 => {
                            scram
                                .as_mut()
                                .expect("scram")
                                .finish(&m.body[4..])
                                .expect("scram final");
                        }
                        other => panic!("unexpected auth code {other}"),
                    }
                }
                _ => {}
            }
        }
        let mut after = Vec::new();
        loop {
            let m = raw.recv().await.expect("message after auth");
            let done = m.tag == b'Z';
            if m.tag == b'E' {
                return Err(m);
            }
            after.push(m);
            if done {
                return Ok((raw, after));
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Next message, or None when the connection closed.
    pub async fn recv(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() > len {
                    let frame = self.buf.split_to(len + 1);
                    return Some(Msg {
                        tag: frame[0],
                        body: frame[5..].to_vec(),
                    });
                }
            }
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                self.stream.read_buf(&mut self.buf),
            )
            .await
            .expect("timed out waiting for the server")
            .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Like [`Raw::recv`], but never panics: waits at most `wait` for the
    /// next whole message. For hostile and property tests, where silence
    /// and resets are legitimate outcomes.
    pub async fn recv_within(&mut self, wait: std::time::Duration) -> Recv {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                if len < 4 {
                    // Not a frame a server would send: treat as a broken stream.
                    return Recv::Closed;
                }
                if self.buf.len() > len as usize {
                    let frame = self.buf.split_to(len as usize + 1);
                    return Recv::Msg(Msg {
                        tag: frame[0],
                        body: frame[5..].to_vec(),
                    });
                }
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Recv::Quiet,
                Ok(Ok(0)) | Ok(Err(_)) => return Recv::Closed,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The socket and any bytes already read but not yet returned, for
    /// tests that split the connection into reader and writer halves.
    pub fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.buf)
    }

    /// Messages up to and including the next ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await {
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                break;
            }
        }
        out
    }
}

/// The tags of a message list as a string, e.g. "1TDCZ".
pub fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}
