//! Fuzz the post-login frontend path of a runtime session: split arbitrary
//! bytes into frames as the relay does (`FrameHeader::parse` with a
//! `max_message` limit) and show every Query, Parse and FunctionCall to the
//! `Enforcer`, as `session::client_to_upstream` does. Asserts no panic,
//! that frames tile the input exactly, that a substitute for a refused
//! message is itself one well-formed frame of the same kind, and that
//! `PendingRefusals::take_for` copes with arbitrary ErrorResponse bodies.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rolegate::config::PolicyMode;
use rolegate::enforce::{Action, Enforcer, PendingRefusals, SessionInfo};
use rolegate::policy::{Switches, VerdictCache};
use rolegate::protocol::FrameHeader;

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
    let pending = Arc::new(PendingRefusals::new(Arc::from(
        &b"rolegate_refused_00ff_"[..],
    )));
    let mut enforcer = Enforcer::new(
        cache(),
        Arc::new(Switches::default()),
        if mode & 0x40 != 0 {
            PolicyMode::Report
        } else {
            PolicyMode::Enforce
        },
        pending.clone(),
        SessionInfo {
            session_id: 1,
            identity: "web".into(),
            role: "runtime",
            peer: "127.0.0.1:1".parse().expect("addr"),
        },
    );
    let mut at = 0usize;
    while at < input.len() {
        let header = match FrameHeader::parse(&input[at..], max) {
            Ok(Some(h)) => h,
            // Incomplete header or a length the relay refuses: it stops.
            Ok(None) | Err(_) => break,
        };
        assert!(header.len >= 4 && header.len as usize <= max);
        let total = header.total();
        if input.len() - at < total {
            break;
        }
        let frame = &input[at..at + total];
        if matches!(header.tag, b'Q' | b'P' | b'F') {
            match enforcer.inspect(header.tag, frame) {
                Action::Forward => {}
                Action::Substitute(sub) => {
                    let h = FrameHeader::parse(&sub, usize::MAX)
                        .expect("substitute header")
                        .expect("substitute header complete");
                    assert_eq!(h.total(), sub.len(), "substitute is one whole frame");
                    let expect = if header.tag == b'P' { b'P' } else { b'Q' };
                    assert_eq!(h.tag, expect);
                }
            }
        }
        at += total;
    }
    // The rest, read as the body of an ErrorResponse coming back.
    let _ = pending.take_for(&input[at..]);
    let _ = pending.take_for(input);
});
