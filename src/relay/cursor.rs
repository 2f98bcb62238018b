//! The frame cursor: walks 5-byte frame headers over a buffer without doing
//! any I/O, so both relay directions (and the benchmarks) share one scanner.
//!
//! Given the bytes not yet scanned, [`FrameCursor::next`] answers one of:
//! forward `n` bytes unexamined (whole frames, and of the last one the part
//! that has arrived — a frame is never held back for its tail), a frame of
//! a tag the caller marks begins, here is a whole frame of a tag the caller
//! asked to see whole, or nothing can be decided until `n` bytes are there. A frame partly forwarded across reads is
//! remembered, so its remaining bytes are forwarded as they come without
//! their contents ever being read as headers.

use crate::protocol::{FrameHeader, ProtocolError};

/// A set of message tags. Tags are ASCII; other bytes are in no set (and
/// so pass through unexamined).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tags(u128);

impl Tags {
    pub const NONE: Tags = Tags(0);

    pub const fn of(tags: &[u8]) -> Tags {
        let mut set = 0u128;
        let mut i = 0;
        while i < tags.len() {
            if tags[i] < 128 {
                set |= 1 << tags[i];
            }
            i += 1;
        }
        Tags(set)
    }

    pub const fn union(self, other: Tags) -> Tags {
        Tags(self.0 | other.0)
    }

    #[inline]
    pub const fn contains(self, tag: u8) -> bool {
        tag < 128 && (self.0 >> tag) & 1 == 1
    }
}

/// What to do next with the buffer at the scan position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Forward the next `n` bytes unexamined: frames, the part of the last
    /// one that has arrived, the rest of one begun earlier.
    Forward(usize),
    /// A frame of a [`marked`](FrameCursor::mark) tag begins: forward its
    /// first `n` bytes like [`Step::Forward`]; the tag is for bookkeeping.
    Marked { tag: u8, n: usize },
    /// A whole frame of a tag asked for [whole](FrameCursor::whole) is at
    /// the front, `len` bytes with its header. The caller consumes it
    /// (forwards or drops those bytes) before the next call.
    Whole { tag: u8, len: usize },
    /// Nothing can be decided until the buffer holds `n` bytes from here.
    Need(usize),
}

/// Frames of a whole-tag longer than this on the server side pass through
/// unexamined: nothing the proxy reads is ever this large, and the relay
/// must not buffer whatever the server sends.
pub const SERVER_WHOLE_LIMIT: usize = 64 * 1024;

/// The sans-I/O scanner for one direction of a session.
#[derive(Debug, Clone)]
pub struct FrameCursor {
    /// Bytes of the frame being forwarded that have not arrived yet.
    in_frame: usize,
    /// A longer frame is a protocol violation.
    max_len: usize,
    /// Whole-tag frames longer than this are forwarded unexamined.
    whole_limit: usize,
    whole: Tags,
    marked: Tags,
}

impl FrameCursor {
    /// For frontend messages: every frame is bounded by `max_message`.
    pub fn client(max_message: usize) -> FrameCursor {
        FrameCursor {
            in_frame: 0,
            max_len: max_message,
            whole_limit: usize::MAX,
            whole: Tags::NONE,
            marked: Tags::NONE,
        }
    }

    /// For backend messages: no limit (a DataRow may be up to 1 GB and
    /// streams through); whole-tag frames over [`SERVER_WHOLE_LIMIT`] are
    /// forwarded unexamined.
    pub fn server() -> FrameCursor {
        FrameCursor {
            in_frame: 0,
            max_len: u32::MAX as usize,
            whole_limit: SERVER_WHOLE_LIMIT,
            whole: Tags::NONE,
            marked: Tags::NONE,
        }
    }

    /// Report frames of these tags whole ([`Step::Whole`]).
    pub fn whole(mut self, tags: Tags) -> FrameCursor {
        self.whole = self.whole.union(tags);
        self
    }

    /// Report the start of frames of these tags ([`Step::Marked`]).
    pub fn mark(mut self, tags: Tags) -> FrameCursor {
        self.marked = self.marked.union(tags);
        self
    }

    /// The last byte forwarded ended a frame.
    #[inline]
    pub fn at_boundary(&self) -> bool {
        self.in_frame == 0
    }

    /// The next step for `buf`, the bytes from the scan position on. After
    /// `Forward(n)` or `Marked { n, .. }` the caller advances by `n`; after
    /// `Whole { len, .. }` by `len`. `Forward` spans as many frames as it
    /// can (every frame of a result set in one step); a marked or whole
    /// frame, or a length error, is reported on the call after the bytes
    /// before it. A length outside the limits is an error: the stream
    /// cannot be resynchronised.
    #[inline]
    pub fn next(&mut self, buf: &[u8]) -> Result<Step, ProtocolError> {
        let mut at = 0;
        if self.in_frame > 0 {
            if buf.is_empty() {
                return Ok(Step::Need(1));
            }
            let n = self.in_frame.min(buf.len());
            self.in_frame -= n;
            if self.in_frame > 0 {
                return Ok(Step::Forward(n));
            }
            at = n;
        }
        loop {
            let header = match FrameHeader::parse(&buf[at..], self.max_len) {
                Ok(Some(h)) => h,
                Ok(None) if at > 0 => return Ok(Step::Forward(at)),
                Ok(None) => return Ok(Step::Need(FrameHeader::SIZE)),
                Err(_) if at > 0 => return Ok(Step::Forward(at)),
                Err(e) => return Err(e),
            };
            let (tag, total) = (header.tag, header.total());
            let whole = self.whole.contains(tag) && total <= self.whole_limit;
            if whole || self.marked.contains(tag) {
                if at > 0 {
                    return Ok(Step::Forward(at));
                }
                return Ok(self.start(tag, total, whole, buf.len()));
            }
            let left = buf.len() - at;
            if left < total {
                self.in_frame = total - left;
                return Ok(Step::Forward(buf.len()));
            }
            at += total;
        }
    }

    /// A frame the caller is told about begins at the scan position.
    fn start(&mut self, tag: u8, total: usize, whole: bool, have: usize) -> Step {
        if whole && have >= total {
            return Step::Whole { tag, len: total };
        }
        if whole {
            return Step::Need(total);
        }
        let n = total.min(have);
        self.in_frame = total - n;
        Step::Marked { tag, n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![tag];
        f.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    /// Every step for `stream` delivered in `chunk`-byte reads, the way the
    /// relay drives the cursor: consumed bytes leave the buffer.
    fn steps(mut cursor: FrameCursor, stream: &[u8], chunk: usize) -> Vec<Step> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for read in stream.chunks(chunk) {
            buf.extend_from_slice(read);
            let mut at = 0;
            loop {
                let step = cursor.next(&buf[at..]).expect("valid stream");
                out.push(step);
                match step {
                    Step::Forward(n) | Step::Marked { n, .. } => at += n,
                    Step::Whole { len, .. } => at += len,
                    Step::Need(_) => break,
                }
            }
            buf.drain(..at);
        }
        out
    }

    #[test]
    fn passthrough_frames_are_forwarded_as_they_arrive() {
        let mut s = frame(b'd', &[7; 20]);
        s.extend(frame(b'Z', b"I"));
        let got = steps(FrameCursor::server().whole(Tags::of(b"Z")), &s, 10);
        // 10 of the CopyData's 25 bytes, then 10, then the last 5 and the
        // first 5 of ReadyForQuery (its header), then ReadyForQuery whole.
        assert_eq!(
            got,
            vec![
                Step::Forward(10),
                Step::Need(1),
                Step::Forward(10),
                Step::Need(1),
                Step::Forward(5),
                Step::Need(6),
                Step::Whole { tag: b'Z', len: 6 },
                Step::Need(5),
            ]
        );
    }

    #[test]
    fn marked_and_whole_tags() {
        let mut s = frame(b'Q', b"SELECT 1\0");
        s.extend(frame(b'S', b""));
        s.extend(frame(b'X', b""));
        let cursor = FrameCursor::client(1024)
            .whole(Tags::of(b"QX"))
            .mark(Tags::of(b"S"));
        assert_eq!(
            steps(cursor, &s, 4),
            vec![
                Step::Need(5),
                Step::Need(14),
                Step::Need(14),
                Step::Whole { tag: b'Q', len: 14 },
                Step::Need(5),
                Step::Marked { tag: b'S', n: 5 },
                Step::Need(5),
                Step::Whole { tag: b'X', len: 5 },
                Step::Need(5),
            ]
        );
    }

    #[test]
    fn consecutive_passthrough_frames_are_one_step() {
        let mut s = frame(b'T', b"\0\0");
        for _ in 0..3 {
            s.extend(frame(b'D', b"\0\x01\0\0\0\x01x"));
        }
        let rows = s.len();
        s.extend(frame(b'C', b"SELECT 3\0"));
        s.extend(frame(b'Z', b"I"));
        let mut bad = s.clone();
        bad.extend([b'D', 0, 0, 0, 1]);
        let cursor = FrameCursor::server().whole(Tags::of(b"ZE"));
        assert_eq!(
            steps(cursor.clone(), &s, s.len()),
            vec![
                Step::Forward(rows + 14),
                Step::Whole { tag: b'Z', len: 6 },
                Step::Need(5),
            ]
        );
        // The bytes before a bad length first, then the error.
        let mut c = cursor;
        assert_eq!(c.next(&bad).ok(), Some(Step::Forward(rows + 14)));
        assert!(c.next(&bad[rows + 14..]).is_ok());
        assert!(c.next(&bad[rows + 20..]).is_err());
    }

    #[test]
    fn limits() {
        let mut c = FrameCursor::client(100);
        assert!(c.next(&frame(b'd', &[0; 200])).is_err());
        assert!(c.next(&[b'Q', 0, 0, 0, 3]).is_err());
        // A server frame of a whole-tag over the limit passes unexamined.
        let big = frame(b'E', &vec![b'x'; SERVER_WHOLE_LIMIT]);
        let mut c = FrameCursor::server().whole(Tags::of(b"E"));
        assert!(matches!(c.next(&big[..100]), Ok(Step::Forward(100))));
        assert!(!c.at_boundary());
        assert!(c.next(&big[100..]).is_ok());
        assert!(c.at_boundary());
        assert!(Tags::of(b"QP").contains(b'P'));
        assert!(!Tags::of(b"QP").contains(b'p'));
        assert!(!Tags::of(&[200]).contains(200));
    }
}
