//! One direction of the relay: the bytes read from one side and what has
//! been decided about them, and the non-blocking reads and writes that move
//! them. The driver in `mod.rs` polls both directions on one task; nothing
//! here ever waits, so neither direction can hold the other up.
//!
//! The buffer holds, in order: bytes decided and waiting to be written
//! (`ready`), then at most one splice (bytes to write in place of the frame
//! that follows), then bytes not yet scanned. Scanning stops at a splice
//! until it is written, so the stream stays in order without copying what
//! passes through.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::cursor::{FrameCursor, Step};
use crate::protocol::ProtocolError;

/// Read size: large enough that a result set streams in few syscalls,
/// small enough that 1,000 idle sessions stay cheap (buffers grow on
/// demand). Also the most a direction holds before it stops reading
/// (backpressure), unless a whole frame needs more.
pub const READ_CHUNK: usize = 16 * 1024;

/// Bytes to write in place of the `skip` bytes that follow `ready`.
#[derive(Debug)]
struct Splice {
    bytes: BytesMut,
    written: usize,
    skip: usize,
}

/// How a read attempt went.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    Read(usize),
    Eof,
    /// Nothing to read now (a wake-up is registered), or the buffer is full.
    Blocked,
}

#[derive(Debug)]
pub struct Pipe {
    pub buf: BytesMut,
    pub cursor: FrameCursor,
    /// `buf[..ready]` is decided and waits to be written.
    ready: usize,
    splice: Option<Splice>,
    /// Bytes from the scan position the buffer must hold before scanning
    /// can go on (a frame being collected whole, or a header).
    need: usize,
    /// Written but not yet flushed (TLS keeps records until flushed).
    unflushed: bool,
}

impl Pipe {
    pub fn new(buf: BytesMut, cursor: FrameCursor) -> Pipe {
        Pipe {
            buf,
            cursor,
            ready: 0,
            splice: None,
            need: 0,
            unflushed: false,
        }
    }

    /// The next scan step, or `None` while a splice waits to be written.
    #[inline]
    pub fn next_step(&mut self) -> Option<Result<Step, ProtocolError>> {
        if self.splice.is_some() {
            return None;
        }
        let step = self.cursor.next(&self.buf[self.ready..]);
        if let Ok(Step::Need(n)) = step {
            self.need = n;
        }
        Some(step)
    }

    /// The tag of the next frame, if it begins at the scan position (not
    /// mid-frame, nothing spliced) and has arrived.
    pub fn next_tag(&self) -> Option<u8> {
        if self.splice.is_some() || !self.cursor.at_boundary() {
            return None;
        }
        self.buf.get(self.ready).copied()
    }

    /// The `len` bytes at the scan position (a whole frame just reported).
    #[inline]
    pub fn frame(&self, len: usize) -> &[u8] {
        &self.buf[self.ready..self.ready + len]
    }

    /// Decide to pass the next `n` bytes on as they are.
    #[inline]
    pub fn forward(&mut self, n: usize) {
        self.ready += n;
    }

    /// Decide to write `bytes` in place of the next `skip` bytes.
    pub fn splice(&mut self, skip: usize, bytes: BytesMut) {
        self.need = 0;
        self.splice = Some(Splice {
            bytes,
            written: 0,
            skip,
        });
    }

    /// Nothing decided is left unwritten or unflushed.
    pub fn is_drained(&self) -> bool {
        self.ready == 0 && self.splice.is_none() && !self.unflushed
    }

    /// Everything written so far ended a frame: the peer's stream is in
    /// step (no frame half-sent).
    pub fn at_boundary(&self) -> bool {
        self.cursor.at_boundary() && self.is_drained()
    }

    /// Write what is decided, then flush. Returns the bytes written now;
    /// `Ok(0)` with [`Pipe::is_drained`] false means blocked (a wake-up is
    /// registered).
    pub fn poll_drain<W>(&mut self, cx: &mut Context<'_>, w: &mut W) -> io::Result<usize>
    where
        W: AsyncWrite + Unpin,
    {
        let mut written = 0;
        loop {
            let chunk = if self.ready > 0 {
                &self.buf[..self.ready]
            } else if let Some(s) = &self.splice {
                if s.written == s.bytes.len() {
                    // Written (or empty: the frame is just dropped).
                    let skip = s.skip;
                    self.splice = None;
                    self.buf.advance(skip);
                    continue;
                }
                &s.bytes[s.written..]
            } else {
                break;
            };
            let n = match Pin::new(&mut *w).poll_write(cx, chunk) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(written),
            };
            written += n;
            self.unflushed = true;
            if self.ready > 0 {
                self.buf.advance(n);
                self.ready -= n;
            } else if let Some(s) = &mut self.splice {
                s.written += n;
            }
        }
        if self.unflushed {
            match Pin::new(&mut *w).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(written)
    }

    /// Read more, unless the buffer already holds enough: backpressure is
    /// per direction, so a side that does not read stops only the bytes
    /// meant for it.
    pub fn poll_fill<R>(&mut self, cx: &mut Context<'_>, r: &mut R) -> io::Result<Fill>
    where
        R: AsyncRead + Unpin,
    {
        let wanted = (self.ready + self.need).max(READ_CHUNK);
        if self.buf.len() >= wanted {
            return Ok(Fill::Blocked);
        }
        let spare = self.buf.capacity() - self.buf.len();
        if spare < 1024 || self.buf.len() + spare < wanted {
            self.buf.reserve((wanted - self.buf.len()).max(READ_CHUNK));
        }
        let read = pin!(r.read_buf(&mut self.buf));
        match read.poll(cx) {
            Poll::Ready(Ok(0)) => Ok(Fill::Eof),
            Poll::Ready(Ok(n)) => Ok(Fill::Read(n)),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Ok(Fill::Blocked),
        }
    }

    /// Give the buffer's memory back when it holds nothing: an idle session
    /// then keeps no read buffer (the next read takes a fresh one, usually
    /// the block another session just gave back). Called when the relay has
    /// nothing left to move, so a busy stream keeps its buffer.
    pub fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.splice.is_none() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Empty the pipe, returning its buffer: what is unwritten and what is
    /// unscanned (only the latter once drained — then it starts at a frame
    /// boundary when the cursor is at one).
    pub fn take_unwritten(&mut self) -> BytesMut {
        self.ready = 0;
        self.splice = None;
        self.need = 0;
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read `input`, pass every frame on, write it out: what an idle
    /// session's pipe went through since its last message.
    fn round_trip(pipe: &mut Pipe, mut input: &[u8]) -> Vec<u8> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            pipe.poll_fill(&mut cx, &mut input),
            Ok(Fill::Read(_))
        ));
        while let Some(Ok(step)) = pipe.next_step() {
            match step {
                Step::Forward(n) | Step::Marked { n, .. } | Step::Whole { len: n, .. } => {
                    pipe.forward(n)
                }
                Step::Need(_) => break,
            }
        }
        let mut out = Vec::new();
        pipe.poll_drain(&mut cx, &mut out).unwrap();
        out
    }

    #[test]
    fn an_idle_pipe_gives_its_buffer_back_and_a_busy_one_keeps_it() {
        let ready_for_query = b"Z\0\0\0\x05I";
        let cursor = FrameCursor::server().whole(crate::relay::cursor::Tags::of(b"Z"));
        let mut pipe = Pipe::new(BytesMut::new(), cursor);
        assert_eq!(round_trip(&mut pipe, ready_for_query), ready_for_query);
        assert!(pipe.buf.capacity() > READ_CHUNK / 2);
        pipe.release_if_empty();
        assert_eq!(pipe.buf.capacity(), 0);
        // Half a frame waits for its rest: the buffer stays.
        let out = round_trip(&mut pipe, &ready_for_query[..3]);
        assert!(out.is_empty());
        pipe.release_if_empty();
        assert_eq!(&pipe.buf[..], &ready_for_query[..3]);
        // And a released pipe reads again.
        assert_eq!(
            round_trip(&mut pipe, &ready_for_query[3..]),
            ready_for_query
        );
    }
}
