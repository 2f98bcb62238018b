//! `[migration]`: read and validated into the migration module's own
//! [`MigrationConfig`] — the environment, the migration login, grace and
//! leeway, `[[migration.keys]]` and `[[migration.jwks]]` (their files read
//! here, URLs checked to be `https://`, cache settings bounded; their keys
//! are parsed by [`crate::migration::Access`], never fetched here), and
//! `[[migration.windows]]`, each checked on its own (times, days, time
//! zone, and never absolute and weekly keys in one entry).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, by_name, invalid};
use crate::migration::settings::{CaFile, ClaimRule, KeysFrom, RemoteJwks, RemoteLocation};
use crate::migration::{Environment, JwksSource, KeySource, MigrationConfig, Window};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawMigration {
    #[serde(deserialize_with = "by_name")]
    pub environment: Environment,
    pub user: String,
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    pub keys: Vec<RawKey>,
    pub jwks: Vec<RawJwks>,
    pub windows: Vec<RawWindow>,
}

impl Default for RawMigration {
    fn default() -> Self {
        RawMigration {
            environment: Environment::Staging,
            user: "migrator".into(),
            grace: Duration::from_secs(5 * 60),
            leeway: Duration::from_secs(30),
            keys: Vec::new(),
            jwks: Vec::new(),
            windows: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub kid: Option<String>,
    pub public_key: Option<String>,
    pub public_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJwks {
    pub issuer: String,
    pub file: Option<PathBuf>,
    pub url: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub audience: Option<String>,
    pub subject: Option<String>,
    #[serde(default)]
    pub confirms_prod: bool,
    #[serde(default)]
    pub claims: BTreeMap<String, ClaimValue>,
    #[serde(default)]
    pub confirm_claims: BTreeMap<String, ClaimValue>,
    pub environment_claim: Option<String>,
    pub service_claim: Option<String>,
    pub service: Option<String>,
    #[serde(default, with = "humantime_serde::option")]
    pub refresh: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub max_stale: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub min_refresh_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub fetch_timeout: Option<Duration>,
}

/// A claim rule's value as written: text, or a boolean or number that is
/// compared by its JSON text (`true`, `42`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum ClaimValue {
    Text(String),
    Bool(bool),
    Int(i64),
}

impl ClaimValue {
    fn text(&self) -> String {
        match self {
            ClaimValue::Text(s) => s.clone(),
            ClaimValue::Bool(b) => b.to_string(),
            ClaimValue::Int(i) => i.to_string(),
        }
    }
}

/// Defaults and bounds of a fetched JWKS's cache (see docs/migration.md).
const DEFAULT_REFRESH: Duration = Duration::from_secs(60 * 60);
const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 60 * 60);
const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const REFRESH_BOUNDS: (Duration, Duration) = (
    crate::migration::jwks::MIN_TTL,
    crate::migration::jwks::MAX_TTL,
);
const MAX_STALE_LIMIT: Duration = Duration::from_secs(30 * 24 * 60 * 60);
const MIN_REFRESH_INTERVAL_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(5 * 60));
const FETCH_TIMEOUT_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(60));

/// One `[[migration.windows]]` entry as written: either `start`/`end` or
/// `days`/`from`/`to`/`timezone`. Kept as text so that each missing or
/// malformed key gets its own message naming it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindow {
    pub start: Option<String>,
    pub end: Option<String>,
    pub days: Option<Vec<String>>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub timezone: Option<String>,
}

impl TryFrom<&RawMigration> for MigrationConfig {
    type Error = ConfigError;

    fn try_from(m: &RawMigration) -> Result<Self, ConfigError> {
        if m.user.is_empty() {
            return Err(invalid("migration.user is empty"));
        }
        let keys = m
            .keys
            .iter()
            .enumerate()
            .map(key)
            .collect::<Result<_, _>>()?;
        let jwks = m
            .jwks
            .iter()
            .enumerate()
            .map(jwks)
            .collect::<Result<_, _>>()?;
        let windows = m
            .windows
            .iter()
            .enumerate()
            .map(|(i, w)| window(i, w))
            .collect::<Result<_, _>>()?;
        Ok(MigrationConfig {
            environment: m.environment,
            user: m.user.clone(),
            grace: m.grace,
            leeway: m.leeway,
            keys,
            jwks,
            windows,
        })
    }
}

fn key((i, k): (usize, &RawKey)) -> Result<KeySource, ConfigError> {
    let material = match (&k.public_key, &k.public_key_file) {
        (Some(v), None) => v.clone(),
        (None, Some(path)) => read_file(&format!("migration.keys[{i}].public_key_file"), path)?,
        _ => {
            return Err(invalid(format!(
                "migration.keys[{i}]: set exactly one of public_key, public_key_file"
            )));
        }
    };
    Ok(KeySource {
        kid: k.kid.clone(),
        material,
    })
}

fn jwks((i, j): (usize, &RawJwks)) -> Result<JwksSource, ConfigError> {
    let key = format!("migration.jwks[{i}]");
    if j.issuer.is_empty() {
        return Err(invalid(format!("{key}.issuer is empty")));
    }
    if j.service.is_some() && j.service_claim.is_some() {
        return Err(invalid(format!(
            "{key}: set at most one of service (every token reaches that service) and service_claim"
        )));
    }
    if j.service.as_deref() == Some("") {
        return Err(invalid(format!("{key}.service is empty")));
    }
    Ok(JwksSource {
        issuer: j.issuer.clone(),
        keys_from: keys_from(&key, j)?,
        audience: j.audience.clone(),
        subject: j.subject.clone(),
        claims: rules(&format!("{key}.claims"), &j.claims)?,
        environment_claim: claim_name(&key, "environment_claim", &j.environment_claim, "env")?,
        service_claim: claim_name(&key, "service_claim", &j.service_claim, "service")?,
        service: j.service.clone(),
        confirms_prod: j.confirms_prod,
        confirm_claims: rules(&format!("{key}.confirm_claims"), &j.confirm_claims)?,
    })
}

/// `file`, `url`, or neither (discovery from `issuer`); the cache keys
/// only where something is fetched.
fn keys_from(key: &str, j: &RawJwks) -> Result<KeysFrom, ConfigError> {
    let location = match (&j.file, &j.url) {
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "{key}: set at most one of file and url (neither: OIDC discovery from issuer)"
            )));
        }
        (Some(path), None) => {
            let remote_only = [
                ("ca_file", j.ca_file.is_some()),
                ("refresh", j.refresh.is_some()),
                ("max_stale", j.max_stale.is_some()),
                ("min_refresh_interval", j.min_refresh_interval.is_some()),
                ("fetch_timeout", j.fetch_timeout.is_some()),
            ];
            if let Some((name, _)) = remote_only.iter().find(|(_, set)| *set) {
                return Err(invalid(format!(
                    "{key}.{name} applies to fetched keys (url or discovery), not to file"
                )));
            }
            return Ok(KeysFrom::File {
                path: path.clone(),
                json: read_file(&format!("{key}.file"), path)?,
            });
        }
        (None, Some(url)) => RemoteLocation::Url(https_url(&format!("{key}.url"), url)?),
        (None, None) => {
            https_url(&format!("{key}.issuer (OIDC discovery)"), &j.issuer)?;
            RemoteLocation::Discovery {
                issuer: j.issuer.clone(),
            }
        }
    };
    let ca = match &j.ca_file {
        Some(path) => Some(CaFile {
            path: path.clone(),
            pem: std::fs::read(path).map_err(|e| {
                invalid(format!(
                    "{key}.ca_file = {}: cannot read: {e}",
                    path.display()
                ))
            })?,
        }),
        None => None,
    };
    let refresh = bounded(key, "refresh", j.refresh, DEFAULT_REFRESH, REFRESH_BOUNDS)?;
    let max_stale = bounded(
        key,
        "max_stale",
        j.max_stale,
        DEFAULT_MAX_STALE.max(refresh),
        (refresh, MAX_STALE_LIMIT),
    )?;
    Ok(KeysFrom::Remote(RemoteJwks {
        location,
        ca,
        refresh,
        max_stale,
        min_refresh_interval: bounded(
            key,
            "min_refresh_interval",
            j.min_refresh_interval,
            DEFAULT_MIN_REFRESH_INTERVAL,
            MIN_REFRESH_INTERVAL_BOUNDS,
        )?,
        fetch_timeout: bounded(
            key,
            "fetch_timeout",
            j.fetch_timeout,
            DEFAULT_FETCH_TIMEOUT,
            FETCH_TIMEOUT_BOUNDS,
        )?,
    }))
}

/// An `https://` URL with a host and no user name or password (URLs are
/// logged). Plain `http://` is refused: the keys decide who may migrate.
fn https_url(key: &str, text: &str) -> Result<String, ConfigError> {
    let url = url::Url::parse(text)
        .map_err(|e| invalid(format!("{key} = {text:?} is not a URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(invalid(format!(
            "{key} = {text:?}: keys are fetched over https only"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("{key} = {text:?} has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(format!(
            "{key}: the URL must not carry a user name or password"
        )));
    }
    if url.fragment().is_some() {
        return Err(invalid(format!("{key} = {text:?} has a #fragment")));
    }
    Ok(text.to_string())
}

fn bounded(
    key: &str,
    name: &str,
    value: Option<Duration>,
    default: Duration,
    (min, max): (Duration, Duration),
) -> Result<Duration, ConfigError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(invalid(format!(
            "{key}.{name} = {:?} is outside {} .. {}",
            humantime::format_duration(v).to_string(),
            humantime::format_duration(min),
            humantime::format_duration(max)
        )));
    }
    Ok(v)
}

fn claim_name(
    key: &str,
    name: &str,
    value: &Option<String>,
    default: &str,
) -> Result<String, ConfigError> {
    match value.as_deref() {
        None => Ok(default.to_string()),
        Some("") => Err(invalid(format!("{key}.{name} is empty"))),
        Some(v) => Ok(v.to_string()),
    }
}

fn rules(key: &str, raw: &BTreeMap<String, ClaimValue>) -> Result<Vec<ClaimRule>, ConfigError> {
    raw.iter()
        .map(|(path, value)| {
            if path.is_empty() || path == "/" {
                return Err(invalid(format!("{key}: a claim name is empty")));
            }
            Ok(ClaimRule {
                path: path.clone(),
                pattern: value.text(),
            })
        })
        .collect()
}

fn read_file(key: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("{key} = {}: cannot read: {e}", path.display())))
}

/// `migration.windows[i]`, validated.
pub(super) fn window(i: usize, w: &RawWindow) -> Result<Window, ConfigError> {
    let key = format!("migration.windows[{i}]");
    let absolute = w.start.is_some() || w.end.is_some();
    let weekly = w.days.is_some() || w.from.is_some() || w.to.is_some() || w.timezone.is_some();
    match (absolute, weekly) {
        (true, true) => Err(invalid(format!(
            "{key} mixes an absolute window (start/end) with a weekly one (days/from/to/timezone); split it into two windows"
        ))),
        (false, false) => Err(invalid(format!(
            "{key} is empty: set start/end (RFC 3339) or days/from/to/timezone"
        ))),
        (true, false) => absolute_window(&key, w),
        (false, true) => weekly_window(&key, w),
    }
}

fn absolute_window(key: &str, w: &RawWindow) -> Result<Window, ConfigError> {
    let parse = |name: &str, v: &Option<String>| -> Result<jiff::Timestamp, ConfigError> {
        let v = required(key, name, v)?;
        v.parse::<jiff::Timestamp>().map_err(|e| {
            invalid(format!(
                "{key}.{name} = {v:?} is not an RFC 3339 time like \"2026-11-29T02:00:00Z\": {e}"
            ))
        })
    };
    let start = parse("start", &w.start)?;
    let end = parse("end", &w.end)?;
    if end <= start {
        return Err(invalid(format!(
            "{key}: end ({end}) is not after start ({start})"
        )));
    }
    Ok(Window::Absolute { start, end })
}

fn weekly_window(key: &str, w: &RawWindow) -> Result<Window, ConfigError> {
    let days_raw = w
        .days
        .as_ref()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| invalid(format!("{key}.days is missing or empty")))?;
    let mut days = Vec::new();
    for d in days_raw {
        let day = weekday(d).ok_or_else(|| {
            invalid(format!(
                "{key}.days: {d:?} is not a day (mon, tue, wed, thu, fri, sat, sun)"
            ))
        })?;
        if !days.contains(&day) {
            days.push(day);
        }
    }
    let time = |name: &str, v: &Option<String>| -> Result<jiff::civil::Time, ConfigError> {
        let v = required(key, name, v)?;
        v.parse::<jiff::civil::Time>().map_err(|e| {
            invalid(format!(
                "{key}.{name} = {v:?} is not a time like \"02:00\": {e}"
            ))
        })
    };
    let from = time("from", &w.from)?;
    let to = time("to", &w.to)?;
    if from == to {
        return Err(invalid(format!(
            "{key}: from and to are both {from}; a window must have a length"
        )));
    }
    let tz_name = w.timezone.as_deref().ok_or_else(|| {
        invalid(format!(
            "{key}.timezone is missing (e.g. \"UTC\" or \"Europe/Berlin\")"
        ))
    })?;
    let timezone = jiff::tz::TimeZone::get(tz_name).map_err(|e| {
        invalid(format!(
            "{key}.timezone = {tz_name:?} is not an IANA time zone: {e}"
        ))
    })?;
    Ok(Window::Weekly {
        days,
        from,
        to,
        timezone,
    })
}

fn required<'a>(key: &str, name: &str, v: &'a Option<String>) -> Result<&'a str, ConfigError> {
    v.as_deref()
        .ok_or_else(|| invalid(format!("{key}.{name} is missing")))
}

/// A day name, short or long, in any case (`sat`, `Sunday`).
fn weekday(name: &str) -> Option<jiff::civil::Weekday> {
    use jiff::civil::Weekday::*;
    Some(match name.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Monday,
        "tue" | "tuesday" => Tuesday,
        "wed" | "wednesday" => Wednesday,
        "thu" | "thursday" => Thursday,
        "fri" | "friday" => Friday,
        "sat" | "saturday" => Saturday,
        "sun" | "sunday" => Sunday,
        _ => return None,
    })
}
