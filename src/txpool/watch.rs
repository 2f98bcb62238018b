//! The inspector of a transaction-mode runtime session: the runtime policy,
//! unchanged (it sees and decides every message first), plus a note of
//! whether the lease's statements may have changed a session setting, so
//! the setting can follow the client to its next upstream
//! ([`super::settings`]).
//!
//! The note is deliberately coarse: any `Query` or `Parse` whose text
//! contains `set` in any case (`SET`, `RESET`, `set_config`, but also
//! `OFFSET`, `settings`…). A false alarm costs one small query when the
//! lease ends; a miss would lose a setting, so it errs on the side of
//! asking. Custom settings (`app.tenant`) are invisible in `pg_settings`,
//! so the dotted names in such a text are noted too, as candidates the
//! snapshot asks about by name (most are table-qualified columns; the
//! snapshot keeps only names that turn out to be settings).

use std::sync::{Arc, Mutex};

use crate::relay::{Backend, BackendAction, Frontend, FrontendAction, Inspector, Wants};

/// Candidate names noted per lease, at most (the rest are not asked
/// about: bounded work for a text full of qualified names).
const MAX_CANDIDATES: usize = 256;

/// Shared between the inspector (inside the relay) and the session loop.
#[derive(Debug, Clone, Default)]
pub struct SettingsTouched(Arc<Mutex<Touched>>);

/// What the lease's statements may have set.
#[derive(Debug, Default)]
pub struct Touched {
    pub any: bool,
    /// Dotted names seen (lower case): possible custom settings.
    pub names: Vec<String>,
}

impl SettingsTouched {
    /// What statements since the last call may have set.
    pub fn take(&self) -> Touched {
        match self.0.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            // A poisoned note: assume anything was set.
            Err(_) => Touched {
                any: true,
                names: Vec::new(),
            },
        }
    }

    fn mark(&self, text: &[u8]) {
        if let Ok(mut t) = self.0.lock() {
            t.any = true;
            for name in dotted_names(text) {
                if t.names.len() >= MAX_CANDIDATES {
                    break;
                }
                if !t.names.contains(&name) {
                    t.names.push(name);
                }
            }
        }
    }
}

/// The session's own inspector, and the note.
pub struct Watch<I> {
    inner: I,
    touched: SettingsTouched,
}

impl<I> Watch<I> {
    pub fn new(inner: I, touched: SettingsTouched) -> Self {
        Watch { inner, touched }
    }
}

impl<I: Inspector> Inspector for Watch<I> {
    fn wants(&self) -> Wants {
        self.inner.wants()
    }

    fn frontend(&mut self, msg: &Frontend<'_>) -> FrontendAction {
        if matches!(msg.tag, b'Q' | b'P') && may_set(msg.body()) {
            self.touched.mark(msg.body());
        }
        self.inner.frontend(msg)
    }

    fn backend(&mut self, msg: &Backend<'_>) -> BackendAction {
        self.inner.backend(msg)
    }
}

/// `set` anywhere in the text, in any case.
fn may_set(text: &[u8]) -> bool {
    text.windows(3).any(|w| w.eq_ignore_ascii_case(b"set"))
}

/// `a.b` names (letters, digits, `_`, `$`; starting with a letter or
/// `_`), lower-cased: what a custom setting's name looks like.
pub fn dotted_names(text: &[u8]) -> Vec<String> {
    let is_start = |b: u8| b.is_ascii_alphabetic() || b == b'_';
    let is_part = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if !is_start(text[i]) || (i > 0 && (is_part(text[i - 1]) || text[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < text.len() && is_part(text[i]) {
            i += 1;
        }
        if i + 1 < text.len() && text[i] == b'.' && is_start(text[i + 1]) {
            i += 1;
            while i < text.len() && is_part(text[i]) {
                i += 1;
            }
            if let Ok(name) = std::str::from_utf8(&text[start..i]) {
                out.push(name.to_ascii_lowercase());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{dotted_names, may_set};

    #[test]
    fn dotted_names_are_candidates() {
        assert_eq!(
            dotted_names(
                b"SET app.Tenant = 'x'; select set_config('app.user_id', '1', false), t.a.b, 1.5"
            ),
            vec!["app.tenant", "app.user_id", "t.a"]
        );
    }

    #[test]
    fn anything_that_could_set_is_noticed() {
        assert!(may_set(b"SET search_path = a"));
        assert!(may_set(b"reset all"));
        assert!(may_set(b"select pg_catalog.SET_config('a', 'b', false)"));
        assert!(!may_set(b"SELECT 1"));
    }
}
