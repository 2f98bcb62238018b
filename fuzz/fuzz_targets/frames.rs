//! Fuzz the post-login frontend path of a runtime session: split arbitrary
//! bytes into frames with the relay's own `FrameCursor` (with a
//! `max_message` limit, Query/Parse/FunctionCall collected whole) and show
//! every statement message to the runtime policy's `Inspector`, as the
//! relay does. Asserts no panic, that the cursor's steps tile the input
//! exactly, that a substitute for a refused message is itself one
//! well-formed frame of the same kind, and that the policy copes with
//! arbitrary ErrorResponse and ParameterStatus frames coming back.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rolegate::config::PolicyMode;
use rolegate::enforce::{RuntimePolicy, SessionInfo};
use rolegate::policy::{Switches, VerdictCache};
use rolegate::protocol::FrameHeader;
use rolegate::protocol::backend::{ParameterStatus, ServerError};
use rolegate::relay::{Backend, FrameCursor, Frontend, FrontendAction, Inspector, Step, Tags};

fn cache() -> Arc<VerdictCache> {
    static C: OnceLock<Arc<VerdictCache>> = OnceLock::new();
    // Small, so eviction runs too.
    C.get_or_init(|| Arc::new(VerdictCache::with_limits(256, 64 * 1024)))
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    // A small max_message so the length limit is reachable.
    let max = 16 + usize::from(mode & 0x3f) * 64;
    let mut policy = RuntimePolicy::new(
        cache(),
        Arc::new(Switches::default()),
        if mode & 0x40 != 0 {
            PolicyMode::Report
        } else {
            PolicyMode::Enforce
        },
        Arc::from(&b"rolegate_refused_00ff_"[..]),
        SessionInfo {
            session_id: 1,
            identity: "web".into(),
            role: "runtime",
            peer: "127.0.0.1:1".parse().expect("addr"),
        },
    );
    let mut cursor = FrameCursor::client(max)
        .whole(Tags::of(b"QPFX"))
        .mark(Tags::of(b"SBDEC"));
    let mut at = 0usize;
    while at < input.len() {
        let step = match cursor.next(&input[at..]) {
            Ok(s) => s,
            // A length the relay refuses: it stops.
            Err(_) => break,
        };
        let (tag, len) = match step {
            Step::Forward(n) | Step::Marked { n, .. } => {
                assert!(n > 0 && n <= input.len() - at);
                at += n;
                continue;
            }
            Step::Whole { tag, len } => (tag, len),
            Step::Need(_) => break,
        };
        assert!(len >= 5 && len <= max + 1 && len <= input.len() - at);
        let frame = &input[at..at + len];
        if tag != b'X' {
            let msg = Frontend {
                tag,
                frame,
                pipelined: mode & 0x80 != 0,
            };
            if let FrontendAction::Substitute(sub) = policy.frontend(&msg) {
                let h = FrameHeader::parse(&sub, usize::MAX)
                    .expect("substitute header")
                    .expect("substitute header complete");
                assert_eq!(h.total(), sub.len(), "substitute is one whole frame");
                assert_eq!(h.tag, if tag == b'P' { b'P' } else { b'Q' });
            }
        }
        at += len;
    }
    // The rest, read as frames coming back.
    let rest = &input[at..];
    if let Some(e) = ServerError::from_frame(rest) {
        let _ = policy.backend(&Backend::Error(&e));
    }
    let p = ParameterStatus::from_frame(rest);
    let _ = policy.backend(&Backend::ParameterStatus(p.as_ref()));
});
