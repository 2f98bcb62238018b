//! `[migration]`: read and validated into the migration module's own
//! [`MigrationConfig`] — the environment, the migration login, grace and
//! leeway, `[[migration.keys]]` and `[[migration.jwks]]` (their files read
//! here; their keys are parsed by [`crate::migration::Access`]), and
//! `[[migration.windows]]`, each checked on its own (times, days, time
//! zone, and never absolute and weekly keys in one entry).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, by_name, invalid};
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
    pub file: PathBuf,
    pub issuer: String,
    pub audience: Option<String>,
    pub subject: Option<String>,
    #[serde(default)]
    pub confirms_prod: bool,
}

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
    Ok(JwksSource {
        file: j.file.clone(),
        json: read_file(&format!("migration.jwks[{i}].file"), &j.file)?,
        issuer: j.issuer.clone(),
        audience: j.audience.clone(),
        subject: j.subject.clone(),
        confirms_prod: j.confirms_prod,
    })
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
