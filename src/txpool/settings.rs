//! A transaction-mode client's session settings, which follow the client
//! from one pooled upstream connection to the next: its startup parameters
//! at first, then whatever its own session-level `SET`, `RESET` and
//! `set_config(…, false)` made of them.
//!
//! The settings are never parsed out of the client's SQL. After a lease in
//! which the client may have changed one (see [`super::watch`]), the
//! upstream itself is asked which settings its session set
//! (`pg_settings` with `source = 'session'`), so whatever the server did is
//! exactly what is remembered. On a lease whose upstream last served
//! someone else, the connection is reset (`DISCARD ALL`) and the remembered
//! settings applied with `set_config(name, value, false)` — the proxy's own
//! query, built from values the server reported, quoted as literals.

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::backend::Message;
use tokio::io::AsyncWriteExt;

use crate::protocol::{self, ProtocolError, backend};
use crate::upstream::UpstreamConn;

/// The settings the proxy pins on every runtime upstream (opened with
/// them): never replayed, never taken from a client.
const PINNED: [&str; 2] = ["client_encoding", "standard_conforming_strings"];

/// What the upstream's session set, as `(name, value)` rows. Custom
/// settings are not in `pg_settings`: they are asked for by name.
const SNAPSHOT: &str = "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session'";

/// Custom setting names remembered per client, at most.
const MAX_CUSTOM: usize = 256;

/// A reply larger than this from the proxy's own queries is not trusted.
const MAX_REPLY_FRAME: usize = 1 << 20;

/// One client's session settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    values: Vec<(String, String)>,
}

/// The custom (dotted) names among `values`.
fn custom_names(values: &[(String, String)]) -> impl Iterator<Item = String> + '_ {
    values
        .iter()
        .filter(|(n, _)| n.contains('.'))
        .map(|(n, _)| n.to_ascii_lowercase())
}

/// Why a client's settings could not be taken or applied.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("the startup option {0:?} is not supported in transaction pooling mode")]
    Option(String),
    #[error("the server refused the session's settings: {0}")]
    Refused(String),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
}

impl ClientSettings {
    /// From the startup parameters as they go upstream (already checked by
    /// the policy): every one but the pinned, with `options` read as
    /// `-c name=value` / `--name=value` settings.
    pub fn from_startup(params: &[(String, String)]) -> Result<Self, SettingsError> {
        let mut values = Vec::new();
        for (name, value) in params {
            if name == "options" {
                values.extend(parse_options(value)?);
            } else {
                values.push((name.clone(), value.clone()));
            }
        }
        values.retain(|(n, _)| !is_pinned(n));
        Ok(ClientSettings { values })
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Apply these settings on `conn` (a fresh or freshly reset
    /// connection). The ParameterStatus messages the server answers with
    /// update the connection's parameters, not the client: it saw them when
    /// it made the settings.
    pub async fn apply(&self, conn: &mut UpstreamConn) -> Result<(), SettingsError> {
        match self.statement() {
            Some(sql) => simple_query(conn, &sql).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// The `Query` message that applies these settings, to send right
    /// behind a reset (one round trip for both); its reply is read with
    /// [`ClientSettings::read_applied`].
    pub fn message(&self) -> Option<BytesMut> {
        self.statement().map(|sql| query_message(&sql))
    }

    /// The reply to [`ClientSettings::message`], sent earlier.
    pub async fn read_applied(conn: &mut UpstreamConn) -> Result<(), SettingsError> {
        read_reply(conn).await.map(|_| ())
    }

    /// `SELECT set_config(…), …` for every setting; `None` without any.
    fn statement(&self) -> Option<String> {
        if self.values.is_empty() {
            return None;
        }
        let mut sql = String::from("SELECT ");
        for (i, (name, value)) in self.values.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("pg_catalog.set_config(");
            push_literal(&mut sql, name);
            sql.push_str(", ");
            push_literal(&mut sql, value);
            sql.push_str(", false)");
        }
        Some(sql)
    }

    /// Read the settings `conn`'s session holds now (after a lease of this
    /// client's): those `pg_settings` shows, and the custom ones among the
    /// names this client set before and the `candidates` its statements
    /// mentioned.
    pub async fn snapshot(
        &self,
        conn: &mut UpstreamConn,
        candidates: Vec<String>,
    ) -> Result<Self, SettingsError> {
        let mut names: Vec<String> = custom_names(&self.values).collect();
        for c in candidates {
            if names.len() >= MAX_CUSTOM {
                break;
            }
            if !names.contains(&c) {
                names.push(c);
            }
        }
        let mut sql = String::from(SNAPSHOT);
        if !names.is_empty() {
            sql.push_str(
                " UNION ALL SELECT n, pg_catalog.current_setting(n, true) FROM pg_catalog.unnest(ARRAY[",
            );
            for (i, n) in names.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                push_literal(&mut sql, n);
            }
            sql.push_str("]::text[]) AS n WHERE pg_catalog.current_setting(n, true) IS NOT NULL");
        }
        let rows = simple_query(conn, &sql).await?;
        let mut values: Vec<(String, String)> = Vec::new();
        let found = rows
            .into_iter()
            .filter_map(|mut row| {
                let value = row.pop()??;
                let name = row.pop()??;
                Some((name, value))
            })
            .filter(|(n, _)| !is_pinned(n));
        for (name, value) in found {
            if !values.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                values.push((name, value));
            }
        }
        Ok(ClientSettings { values })
    }
}

fn is_pinned(name: &str) -> bool {
    PINNED.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// A string literal under `standard_conforming_strings = on` (pinned on
/// every runtime upstream): quotes doubled, backslashes literal.
fn push_literal(sql: &mut String, s: &str) {
    sql.push('\'');
    sql.push_str(&s.replace('\'', "''"));
    sql.push('\'');
}

/// The settings in a startup `options` value, split on whitespace with
/// backslash escapes as PostgreSQL does; anything but `-c name=value`,
/// `-cname=value` and `--name=value` is not supported here.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, SettingsError> {
    let words = split_options(options);
    let mut out = Vec::new();
    let mut it = words.iter();
    while let Some(word) = it.next() {
        let setting = if word == "-c" {
            it.next().map(String::as_str)
        } else if let Some(rest) = word.strip_prefix("--") {
            Some(rest)
        } else {
            word.strip_prefix("-c")
        };
        let pair = setting.and_then(|s| s.split_once('='));
        match pair {
            Some((name, value)) if !name.is_empty() => {
                // PostgreSQL reads `-c a-b=x` as `a_b`.
                out.push((name.replace('-', "_"), value.to_string()));
            }
            _ => return Err(SettingsError::Option(word.clone())),
        }
    }
    Ok(out)
}

fn split_options(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Run one of the proxy's own simple queries on an idle connection and
/// return its rows (text columns, `None` for NULL). Frames the connection
/// had read ahead (notices, notifications) are skipped.
pub(super) async fn simple_query(
    conn: &mut UpstreamConn,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, SettingsError> {
    conn.stream
        .write_all(&query_message(sql))
        .await
        .map_err(ProtocolError::Io)?;
    read_reply(conn).await
}

fn query_message(sql: &str) -> BytesMut {
    let mut out = BytesMut::with_capacity(sql.len() + 6);
    out.put_u8(b'Q');
    out.put_i32((sql.len() + 5) as i32);
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
    out
}

/// The rows of the reply to a simple query already sent, up to its
/// ReadyForQuery.
async fn read_reply(conn: &mut UpstreamConn) -> Result<Vec<Vec<Option<String>>>, SettingsError> {
    let mut buf = std::mem::take(&mut conn.read_ahead);
    let mut rows = Vec::new();
    let mut refused = None;
    loop {
        let mut frame = protocol::read_frame(&mut conn.stream, &mut buf, MAX_REPLY_FRAME).await?;
        if !matches!(frame[0], b'D' | b'S' | b'E' | b'Z') {
            continue;
        }
        match backend::decode(&mut frame)? {
            Message::DataRow(row) => rows.push(row_values(&row)?),
            Message::ParameterStatus(p) => {
                if let (Ok(name), Ok(value)) = (p.name(), p.value()) {
                    conn.set_parameter(name, value);
                }
            }
            Message::ErrorResponse(e) => {
                let e = backend::ServerError::from_fields(e.fields()).map_err(ProtocolError::Io)?;
                refused = Some(format!("{} ({})", e.message, e.code));
            }
            Message::ReadyForQuery(z) => {
                conn.read_ahead = buf;
                return match refused {
                    Some(message) => Err(SettingsError::Refused(message)),
                    None if z.status() == b'I' => Ok(rows),
                    None => Err(SettingsError::Refused("left a transaction open".into())),
                };
            }
            _ => {}
        }
    }
}

fn row_values(
    row: &postgres_protocol::message::backend::DataRowBody,
) -> Result<Vec<Option<String>>, SettingsError> {
    use tokio_postgres::fallible_iterator::FallibleIterator;
    let buffer = row.buffer();
    let mut values = Vec::new();
    let mut ranges = row.ranges();
    while let Some(range) = ranges.next().map_err(ProtocolError::Io)? {
        values.push(
            range
                .and_then(|r| buffer.get(r))
                .map(|b| String::from_utf8_lossy(b).into_owned()),
        );
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn startup_settings_skip_the_pinned_and_read_options() {
        let s = ClientSettings::from_startup(&p(&[
            ("application_name", "web"),
            ("client_encoding", "UTF8"),
            (
                "options",
                "-c search_path=a,b --statement-timeout=5s -cwork_mem=1MB -c x=a\\ b",
            ),
        ]))
        .unwrap();
        assert_eq!(
            s.values,
            p(&[
                ("application_name", "web"),
                ("search_path", "a,b"),
                ("statement_timeout", "5s"),
                ("work_mem", "1MB"),
                ("x", "a b"),
            ])
        );
    }

    #[test]
    fn other_startup_options_are_refused() {
        assert!(ClientSettings::from_startup(&p(&[("options", "-d 5")])).is_err());
        assert!(ClientSettings::from_startup(&p(&[("options", "-c")])).is_err());
    }

    #[test]
    fn literals_double_their_quotes() {
        let mut sql = String::new();
        push_literal(&mut sql, "it's");
        assert_eq!(sql, "'it''s'");
    }
}
