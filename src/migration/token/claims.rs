//! What a migrator token's claims must say once its signature verified:
//! every claim of the right type, `sub` and `exp` present; for a JWKS
//! source its `iss`, `aud`, glob `subject` pattern and claim rules
//! (`[migration.jwks.claims]`), and which claims carry the environment,
//! the service and the prod confirmation; `exp`, `nbf` and `iat` against
//! the injected clock with the leeway.
//!
//! Claim paths: `kubernetes.io.namespace` names a claim by a dotted path.
//! Object keys may themselves contain dots (Kubernetes' `kubernetes.io`),
//! so at each level the *longest* run of path segments that is a key of
//! the object is taken, then the rest is resolved inside it; there is no
//! backtracking, so a path whose longest match leads nowhere names no
//! claim (and a rule on it fails). A path starting with `/` is a JSON
//! Pointer (RFC 6901, `/kubernetes.io/serviceaccount/name`) for the rare
//! case the dotted form cannot say. A string claim is compared as itself,
//! a boolean or number by its JSON text (`true`, `42`); objects, arrays
//! and null never match.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Map, Value};

use super::DEFAULT_SERVICE;
use super::verify::Verified;
use crate::migration::settings::{ClaimRule, JwksSource};
use crate::migration::{Refusal, SQLSTATE_BAD_TOKEN};

/// Extra requirements on tokens verified by one `[[migration.jwks]]` entry.
#[derive(Debug)]
pub(super) struct JwksPolicy {
    /// `migration.jwks[i]`, for messages.
    pub(super) name: String,
    pub(super) issuer: String,
    audience: Option<String>,
    subject: Option<String>,
    claims: Vec<ClaimRule>,
    environment_claim: String,
    service_claim: String,
    service: Option<String>,
    confirms_prod: bool,
    confirm_claims: Vec<ClaimRule>,
}

impl JwksPolicy {
    pub(super) fn new(name: String, source: &JwksSource) -> JwksPolicy {
        JwksPolicy {
            name,
            issuer: source.issuer.clone(),
            audience: source.audience.clone(),
            subject: source.subject.clone(),
            claims: source.claims.clone(),
            environment_claim: source.environment_claim.clone(),
            service_claim: source.service_claim.clone(),
            service: source.service.clone(),
            confirms_prod: source.confirms_prod,
            confirm_claims: source.confirm_claims.clone(),
        }
    }
}

/// Which configured key verified the token: its config name
/// (`migration.keys[0]`, `migration.jwks[1]`) and `kid`.
pub(super) struct Origin<'a> {
    pub source: &'a str,
    pub kid: Option<&'a str>,
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
}

/// Check the claims of a token whose signature verified with a key from
/// `policy`'s source (`None`: a `[[migration.keys]]` key).
pub(super) fn check(
    payload: Value,
    policy: Option<&JwksPolicy>,
    origin: Origin<'_>,
    now: Timestamp,
    leeway: Duration,
) -> Result<Verified, Refusal> {
    let Value::Object(c) = payload else {
        return Err(Refusal::malformed(
            "the migration token's payload is not a JSON object",
        ));
    };
    let t = typed(&c, policy)?;
    if let Some(p) = policy {
        check_source(p, &c, &t)?;
    }
    check_times(&t, now, leeway)?;
    let confirmed = matches!(c.get("confirm"), Some(Value::Bool(true)))
        || policy.is_some_and(|p| {
            p.confirms_prod
                || (!p.confirm_claims.is_empty()
                    && p.confirm_claims.iter().all(|r| rule_holds(&c, r)))
        });
    let service = match policy.and_then(|p| p.service.clone()) {
        Some(fixed) => fixed,
        None => t.service.unwrap_or_else(|| DEFAULT_SERVICE.into()),
    };
    Ok(Verified {
        subject: t.subject,
        jti: t.jti,
        issuer: t.issuer,
        service,
        env: t.env,
        confirmed,
        exp: t.exp,
        source: origin.source.to_string(),
        kid: origin.kid.map(str::to_string),
        stale: false,
    })
}

fn typed(c: &Map<String, Value>, policy: Option<&JwksPolicy>) -> Result<Typed, Refusal> {
    let subject = opt_string("sub", c.get("sub"))?
        .ok_or_else(|| Refusal::malformed("the migration token has no sub claim"))?;
    let exp = opt_time("exp", c.get("exp"))?
        .ok_or_else(|| Refusal::malformed("the migration token has no exp claim"))?;
    let env_claim = policy.map_or("env", |p| p.environment_claim.as_str());
    let service = match policy {
        Some(p) if p.service.is_some() => None,
        Some(p) => opt_string(&p.service_claim, resolve(c, &p.service_claim))?,
        None => opt_string("service", c.get("service"))?,
    };
    let t = Typed {
        subject,
        exp,
        nbf: opt_time("nbf", c.get("nbf"))?,
        iat: opt_time("iat", c.get("iat"))?,
        jti: opt_string("jti", c.get("jti"))?,
        issuer: opt_string("iss", c.get("iss"))?,
        env: opt_string(env_claim, resolve(c, env_claim))?,
        service,
    };
    if t.service.as_deref() == Some("") {
        return Err(Refusal::malformed(
            "the migration token's service claim is empty",
        ));
    }
    Ok(t)
}

/// A JWKS source's `issuer`, `audience`, `subject` pattern and claim rules.
fn check_source(p: &JwksPolicy, c: &Map<String, Value>, t: &Typed) -> Result<(), Refusal> {
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
        && !audience_contains(c.get("aud"), want)
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
    match p.claims.iter().find(|r| !rule_holds(c, r)) {
        Some(rule) => Err(claim_refusal(p, c, rule)),
        None => Ok(()),
    }
}

/// Why the first failing claim rule failed, naming the claim and its value.
fn claim_refusal(p: &JwksPolicy, c: &Map<String, Value>, rule: &ClaimRule) -> Refusal {
    let why = match resolve(c, &rule.path).map(|v| (v, claim_text(v))) {
        None => format!("migration token has no claim {:?}", rule.path),
        Some((_, None)) => format!(
            "migration token claim {:?} is not a string, boolean or number",
            rule.path
        ),
        Some((_, Some(text))) => format!(
            "migration token claim {:?} ({:?}) does not match {:?}",
            rule.path,
            truncate(&text, 200),
            rule.pattern
        ),
    };
    Refusal::new(
        "wrong_claim",
        SQLSTATE_BAD_TOKEN,
        format!("{why} ({}.claims)", p.name),
    )
}

/// Whether the claim at `rule.path` exists and its text matches the
/// pattern.
fn rule_holds(c: &Map<String, Value>, rule: &ClaimRule) -> bool {
    resolve(c, &rule.path)
        .and_then(claim_text)
        .is_some_and(|text| glob_match(&rule.pattern, &text))
}

/// The claim a path names (see the module docs for the rules).
pub(super) fn resolve<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if path.starts_with('/') {
        return pointer(claims, path);
    }
    let segments: Vec<&str> = path.split('.').collect();
    let mut object = claims;
    let mut i = 0;
    loop {
        // The longest run of segments that is a key here wins.
        let (value, next) = (i + 1..=segments.len()).rev().find_map(|j| {
            object
                .get(&segments[i..j].join("."))
                .map(|value| (value, j))
        })?;
        if next == segments.len() {
            return Some(value);
        }
        object = value.as_object()?;
        i = next;
    }
}

/// RFC 6901 on the claims object.
fn pointer<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut tokens = path.split('/').skip(1);
    let first = tokens.next()?.replace("~1", "/").replace("~0", "~");
    let mut value = claims.get(&first)?;
    for token in tokens {
        let token = token.replace("~1", "/").replace("~0", "~");
        value = match value {
            Value::Object(m) => m.get(&token)?,
            Value::Array(a) => a.get(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// A claim as text for matching: strings as themselves, booleans and
/// numbers by their JSON text; anything else has none.
pub(super) fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
        _ => None,
    }
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

fn opt_string(name: &str, v: Option<&Value>) -> Result<Option<String>, Refusal> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Refusal::malformed(format!(
            "the migration token's {name} claim is not a string"
        ))),
    }
}

/// A NumericDate (seconds since the epoch, possibly fractional).
fn opt_time(name: &str, v: Option<&Value>) -> Result<Option<Timestamp>, Refusal> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn dotted_paths_take_the_longest_key_at_each_level() {
        let c = claims(json!({
            "ref": "refs/heads/main",
            "kubernetes.io": {
                "namespace": "ci",
                "serviceaccount": { "name": "migrate" }
            },
            "a": { "b": { "c": 1 } },
            "a.b": { "c": 2 },
            "x.y": 3,
            "list": ["p", "q"]
        }));
        let at = |p: &str| resolve(&c, p).cloned();
        assert_eq!(at("ref"), Some(json!("refs/heads/main")));
        assert_eq!(at("kubernetes.io.namespace"), Some(json!("ci")));
        assert_eq!(
            at("kubernetes.io.serviceaccount.name"),
            Some(json!("migrate"))
        );
        // "a.b" is a key: it wins over "a" then "b".
        assert_eq!(at("a.b.c"), Some(json!(2)));
        assert_eq!(at("x.y"), Some(json!(3)));
        assert_eq!(at("kubernetes.io.nope"), None);
        assert_eq!(at("ref.x"), None);
        assert_eq!(at("list.0"), None, "dotted paths do not index arrays");
        // JSON Pointer: exact, and it can reach what the dotted form hides.
        assert_eq!(at("/a/b/c"), Some(json!(1)));
        assert_eq!(at("/kubernetes.io/namespace"), Some(json!("ci")));
        assert_eq!(at("/list/1"), Some(json!("q")));
        assert_eq!(at("/nope"), None);
    }

    #[test]
    fn claim_text_is_json_text_for_scalars_only() {
        assert_eq!(claim_text(&json!("x")).as_deref(), Some("x"));
        assert_eq!(claim_text(&json!(true)).as_deref(), Some("true"));
        assert_eq!(claim_text(&json!(42)).as_deref(), Some("42"));
        assert_eq!(claim_text(&json!(null)), None);
        assert_eq!(claim_text(&json!(["x"])), None);
        assert_eq!(claim_text(&json!({"x": 1})), None);
    }
}
