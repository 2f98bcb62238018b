//! `rolegate report`: what enforcing would refuse, from the JSON logs of a
//! proxy running with `mode = "report"` (or enforcing). Groups the
//! `statement_refused` events by fingerprint, class and reason.
//!
//! Only the fields rolegate itself writes are read (fingerprints and
//! reasons never carry literals); lines that are not JSON objects, or are
//! other events, are skipped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;

use serde::Serialize;

/// One group of refusals.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Row {
    pub fingerprint: String,
    pub class: String,
    pub reason: String,
    pub count: u64,
    /// Client identities that sent it (bounded by the configured clients).
    pub identities: BTreeSet<String>,
    pub first_seen: String,
    pub last_seen: String,
    /// How many were only reported (`mode = "report"`), not refused.
    pub reported: u64,
}

/// The groups, most frequent first.
#[derive(Debug, Default)]
pub struct Report {
    rows: HashMap<(String, String, String), Row>,
    /// Lines read that were `statement_refused` events.
    pub events: u64,
}

impl Report {
    /// Add every `statement_refused` event of a log.
    pub fn read(&mut self, log: impl BufRead) -> std::io::Result<()> {
        for line in log.lines() {
            let line = line?;
            let Ok(serde_json::Value::Object(event)) = serde_json::from_str(&line) else {
                continue;
            };
            if event.get("event").and_then(|v| v.as_str()) != Some("statement_refused") {
                continue;
            }
            let field = |k: &str| {
                event
                    .get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            self.events += 1;
            let (fingerprint, class, reason) =
                (field("fingerprint"), field("class"), field("reason"));
            let at = field("timestamp");
            let reported = event.get("enforced").and_then(|v| v.as_bool()) == Some(false);
            let row = self
                .rows
                .entry((fingerprint.clone(), class.clone(), reason.clone()))
                .or_insert_with(|| Row {
                    fingerprint,
                    class,
                    reason,
                    count: 0,
                    identities: BTreeSet::new(),
                    first_seen: at.clone(),
                    last_seen: at.clone(),
                    reported: 0,
                });
            row.count += 1;
            row.reported += u64::from(reported);
            let identity = field("identity");
            if !identity.is_empty() {
                row.identities.insert(identity);
            }
            // RFC 3339 timestamps in UTC order as strings.
            if !at.is_empty() && (row.first_seen.is_empty() || at < row.first_seen) {
                row.first_seen = at.clone();
            }
            if at > row.last_seen {
                row.last_seen = at;
            }
        }
        Ok(())
    }

    /// The groups, most frequent first (ties by fingerprint).
    pub fn rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = self.rows.values().cloned().collect();
        rows.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.fingerprint.cmp(&b.fingerprint))
        });
        rows
    }

    /// Counts by class, for the summary line.
    pub fn by_class(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for r in self.rows.values() {
            *out.entry(r.class.clone()).or_default() += r.count;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_refusals_and_skips_everything_else() {
        let log = r#"{"timestamp":"2026-12-01T10:00:00Z","event":"session_start","identity":"web"}
not json
{"timestamp":"2026-12-01T10:00:02Z","event":"statement_refused","identity":"web","class":"ddl","reason":"DDL is not allowed","fingerprint":"drop table t","enforced":false}
{"timestamp":"2026-12-01T10:00:01Z","event":"statement_refused","identity":"worker","class":"ddl","reason":"DDL is not allowed","fingerprint":"drop table t","enforced":true}
{"timestamp":"2026-12-01T10:00:03Z","event":"statement_refused","identity":"web","class":"rls_toggle","reason":"x","fingerprint":"set row_security = off"}
"#;
        let mut r = Report::default();
        r.read(log.as_bytes()).expect("read");
        assert_eq!(r.events, 3);
        let rows = r.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].fingerprint, "drop table t");
        assert_eq!(rows[0].count, 2);
        assert_eq!(rows[0].reported, 1);
        assert_eq!(rows[0].first_seen, "2026-12-01T10:00:01Z");
        assert_eq!(rows[0].last_seen, "2026-12-01T10:00:02Z");
        assert_eq!(
            rows[0].identities.iter().cloned().collect::<Vec<_>>(),
            ["web", "worker"]
        );
        assert_eq!(r.by_class().get("ddl"), Some(&2));
    }
}
