//! What a migrator token's claims must say once its signature verified:
//! every claim of the right type, `sub` and `exp` present; for a JWKS
//! source its `iss`, `aud` and glob `subject` pattern; `exp`, `nbf` and
//! `iat` against the injected clock with the leeway.

use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

use super::DEFAULT_SERVICE;
use super::verify::Verified;
use crate::migration::settings::JwksSource;
use crate::migration::{Refusal, SQLSTATE_BAD_TOKEN};

/// The payload, read leniently so that a wrongly typed claim is reported
/// as such rather than as an undecodable token.
#[derive(Debug, Deserialize)]
pub(super) struct Claims {
    sub: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    jti: Option<Value>,
    iss: Option<Value>,
    aud: Option<Value>,
    env: Option<Value>,
    confirm: Option<Value>,
    service: Option<Value>,
}

/// Extra requirements on tokens verified by one `[[migration.jwks]]` entry.
#[derive(Debug)]
pub(super) struct JwksPolicy {
    /// `migration.jwks[i]`, for messages.
    name: String,
    issuer: String,
    audience: Option<String>,
    subject: Option<String>,
    confirms_prod: bool,
}

impl JwksPolicy {
    pub(super) fn new(name: String, source: &JwksSource) -> JwksPolicy {
        JwksPolicy {
            name,
            issuer: source.issuer.clone(),
            audience: source.audience.clone(),
            subject: source.subject.clone(),
            confirms_prod: source.confirms_prod,
        }
    }
}

/// The claims with their types checked.
struct Typed {
    subject: String,
    exp: Timestamp,
    nbf: Option<Timestamp>,
    iat: Option<Timestamp>,
    jti: Option<String>,
    issuer: Option<String>,
    env: Option<String>,
    service: Option<String>,
    aud: Option<Value>,
    confirm: Option<Value>,
}

/// Check the claims of a token whose signature verified with a key from
/// `policy`'s source (`None`: a `[[migration.keys]]` key).
pub(super) fn check(
    c: Claims,
    policy: Option<&JwksPolicy>,
    now: Timestamp,
    leeway: Duration,
) -> Result<Verified, Refusal> {
    let t = typed(c)?;
    if let Some(p) = policy {
        check_source(p, &t)?;
    }
    check_times(&t, now, leeway)?;
    let confirmed =
        matches!(t.confirm, Some(Value::Bool(true))) || policy.is_some_and(|p| p.confirms_prod);
    Ok(Verified {
        subject: t.subject,
        jti: t.jti,
        issuer: t.issuer,
        service: t.service.unwrap_or_else(|| DEFAULT_SERVICE.into()),
        env: t.env,
        confirmed,
        exp: t.exp,
    })
}

fn typed(c: Claims) -> Result<Typed, Refusal> {
    let subject = opt_string("sub", c.sub)?
        .ok_or_else(|| Refusal::malformed("the migration token has no sub claim"))?;
    let exp = opt_time("exp", c.exp)?
        .ok_or_else(|| Refusal::malformed("the migration token has no exp claim"))?;
    let t = Typed {
        subject,
        exp,
        nbf: opt_time("nbf", c.nbf)?,
        iat: opt_time("iat", c.iat)?,
        jti: opt_string("jti", c.jti)?,
        issuer: opt_string("iss", c.iss)?,
        env: opt_string("env", c.env)?,
        service: opt_string("service", c.service)?,
        aud: c.aud,
        confirm: c.confirm,
    };
    if t.service.as_deref() == Some("") {
        return Err(Refusal::malformed(
            "the migration token's service claim is empty",
        ));
    }
    Ok(t)
}

/// A JWKS source's `issuer`, `audience` and `subject` pattern.
fn check_source(p: &JwksPolicy, t: &Typed) -> Result<(), Refusal> {
    if t.issuer.as_deref() != Some(p.issuer.as_str()) {
        return Err(Refusal::new(
            "wrong_issuer",
            SQLSTATE_BAD_TOKEN,
            format!(
                "migration token issuer {} is not accepted by {}",
                t.issuer
                    .as_deref()
                    .map(|i| format!("{:?}", truncate(i, 200)))
                    .unwrap_or_else(|| "(none)".into()),
                p.name
            ),
        ));
    }
    if let Some(want) = &p.audience
        && !audience_contains(t.aud.as_ref(), want)
    {
        return Err(Refusal::new(
            "wrong_audience",
            SQLSTATE_BAD_TOKEN,
            format!("migration token audience does not include {want:?}"),
        ));
    }
    if let Some(pattern) = &p.subject
        && !glob_match(pattern, &t.subject)
    {
        return Err(Refusal::new(
            "wrong_subject",
            SQLSTATE_BAD_TOKEN,
            format!(
                "migration token subject {:?} does not match {pattern:?} ({}.subject)",
                truncate(&t.subject, 200),
                p.name
            ),
        ));
    }
    Ok(())
}

/// `exp`, `nbf` and `iat` at `now`, each forgiven by `leeway`.
fn check_times(t: &Typed, now: Timestamp, leeway: Duration) -> Result<(), Refusal> {
    let leeway = jiff::SignedDuration::try_from(leeway).unwrap_or(jiff::SignedDuration::MAX);
    let late = now.checked_sub(leeway).unwrap_or(Timestamp::MIN);
    let early = now.checked_add(leeway).unwrap_or(Timestamp::MAX);
    if t.exp < late {
        return Err(Refusal::new(
            "expired",
            SQLSTATE_BAD_TOKEN,
            format!("migration token expired at {}", rfc3339(t.exp)),
        ));
    }
    if let Some(nbf) = t.nbf
        && nbf > early
    {
        return Err(Refusal::new(
            "not_yet_valid",
            SQLSTATE_BAD_TOKEN,
            format!("migration token is not valid before {}", rfc3339(nbf)),
        ));
    }
    // `iat` carries no authority; a token claiming to be issued in the
    // future means a broken issuer clock, so it is not trusted yet.
    if let Some(iat) = t.iat
        && iat > early
    {
        return Err(Refusal::new(
            "not_yet_valid",
            SQLSTATE_BAD_TOKEN,
            format!("migration token is issued in the future ({})", rfc3339(iat)),
        ));
    }
    Ok(())
}

fn opt_string(name: &str, v: Option<Value>) -> Result<Option<String>, Refusal> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Refusal::malformed(format!(
            "the migration token's {name} claim is not a string"
        ))),
    }
}

/// A NumericDate (seconds since the epoch, possibly fractional).
fn opt_time(name: &str, v: Option<Value>) -> Result<Option<Timestamp>, Refusal> {
    let bad = || Refusal::malformed(format!("the migration token's {name} claim is not a time"));
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let secs = match n.as_i64() {
                Some(i) => i,
                // Fractional: whole seconds are plenty; floor is the
                // conservative choice for `exp`.
                None => n
                    .as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f.floor() as i64)
                    .ok_or_else(bad)?,
            };
            Timestamp::from_second(secs).map(Some).map_err(|_| bad())
        }
        Some(_) => Err(bad()),
    }
}

fn audience_contains(aud: Option<&Value>, want: &str) -> bool {
    match aud {
        Some(Value::String(s)) => s == want,
        Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(want)),
        _ => false,
    }
}

/// `*` matches any run of characters (including none), `?` exactly one;
/// everything else matches itself. The whole subject must match.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index).
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                backtrack = Some((pi + 1, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match backtrack {
                // Let the last `*` swallow one more character and retry.
                Some((bp, bt)) => {
                    backtrack = Some((bp, bt + 1));
                    pi = bp;
                    ti = bt + 1;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(super) fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
