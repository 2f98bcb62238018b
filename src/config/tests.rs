//! Unit tests of loading: the env contract, precedence, secrets, relative
//! paths, windows, sizes, and the example config.

use super::listen::byte_size;
use super::migration::{RawWindow, window};
use super::*;
use crate::client_auth::ScramVerifier;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::load(&Sources {
        file: None,
        env: env(pairs),
    })
}

#[test]
fn env_contract_alone_configures_a_sidecar() {
    let c = load_env(&[
        ("PG_HOST", "db.internal"),
        ("PG_PORT", "6543"),
        ("PG_NAME", "app"),
        ("PG_RUNTIME_USER", "app_user"),
        ("PG_RUNTIME_PASSWORD", "1e5"),
        ("PG_MIGRATION_USER", "app_migrator"),
        ("PG_MIGRATION_PASSWORD", "m"),
        ("PG_MIGRATION_HOST", "primary.internal"),
    ])
    .expect("loads");
    let s = &c.services[DEFAULT_SERVICE];
    assert_eq!(s.runtime.host, "db.internal");
    assert_eq!(s.runtime.port, 6543);
    assert_eq!(s.runtime.database, "app");
    // Numbers-looking passwords stay strings.
    assert_eq!(s.runtime.password.as_ref().map(Secret::expose), Some("1e5"));
    let m = s.migration.as_ref().expect("migration");
    assert_eq!(m.host, "primary.internal");
    assert_eq!(m.user, "app_migrator");
}

#[test]
fn url_and_rolegate_keys_take_precedence() {
    let c = load_env(&[
        ("PG_RUNTIME_USER", "ignored"),
        (
            "ROLEGATE_RUNTIME_URL",
            "postgres://app%40user:p%2Fw@h1:5433/appdb",
        ),
        ("ROLEGATE__UPSTREAM__RUNTIME__HOST", "h2"),
    ])
    .expect("loads");
    let r = &c.services[DEFAULT_SERVICE].runtime;
    assert_eq!(r.user, "app@user");
    assert_eq!(r.password.as_ref().map(Secret::expose), Some("p/w"));
    assert_eq!(r.host, "h2");
    assert_eq!(r.port, 5433);
    assert_eq!(r.database, "appdb");
}

#[test]
fn same_role_for_runtime_and_migration_is_refused() {
    let e = load_env(&[("PG_NAME", "app"), ("PG_USER", "app"), ("PG_PASSWORD", "x")])
        .expect_err("must refuse");
    let msg = e.to_string();
    assert!(msg.contains("upstream.runtime.user"), "{msg}");
    assert!(msg.contains("upstream.migration.user"), "{msg}");
}

#[test]
fn missing_secret_env_is_named() {
    let e = load_env(&[
        ("PG_NAME", "app"),
        ("ROLEGATE__UPSTREAM__RUNTIME__USER", "u"),
        ("ROLEGATE__UPSTREAM__RUNTIME__PASSWORD_ENV", "NOPE_NOT_SET"),
    ])
    .expect_err("must refuse");
    assert!(e.to_string().contains("NOPE_NOT_SET"), "{e}");
}

#[test]
fn windows_are_validated() {
    let ok = RawWindow {
        start: None,
        end: None,
        days: Some(vec!["sat".into(), "Sunday".into()]),
        from: Some("02:00".into()),
        to: Some("04:00".into()),
        timezone: Some("Europe/Berlin".into()),
    };
    assert!(window(0, &ok).is_ok());
    let mixed = RawWindow {
        start: Some("2026-11-29T02:00:00Z".into()),
        ..ok
    };
    assert!(window(0, &mixed).is_err());
    let backwards = RawWindow {
        start: Some("2026-11-29T04:00:00Z".into()),
        end: Some("2026-11-29T02:00:00Z".into()),
        days: None,
        from: None,
        to: None,
        timezone: None,
    };
    assert!(
        window(1, &backwards)
            .unwrap_err()
            .to_string()
            .contains("windows[1]")
    );
}

#[test]
fn example_config_documents_only_real_keys() {
    // Every key in the reference file must be one the loader knows
    // (unknown keys are errors), and its values must resolve.
    let text = include_str!("../../config/rolegate.example.toml");
    let raw: RawConfig = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .expect("example parses");
    assert_eq!(raw.clients.len(), 2);
    assert_eq!(raw.migration.windows.len(), 2);
    for (i, w) in raw.migration.windows.iter().enumerate() {
        window(i, w).expect("example window is valid");
    }
    assert!(ScramVerifier::parse(raw.clients[0].password_scram.as_deref().unwrap_or("")).is_ok());
}

/// A config file in its own directory, loaded from elsewhere.
fn load_file(
    text: &str,
    files: &[(&str, &str)],
    pairs: &[(&str, &str)],
) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("dir");
    for (name, body) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, body).expect("write");
    }
    let config = dir.path().join("rolegate.toml");
    std::fs::write(&config, text).expect("config");
    Config::load(&Sources {
        file: Some(config),
        env: env(pairs),
    })
}

const FILE_SECRETS: &str = r#"
[upstream]
database = "app"
[upstream.runtime]
user = "app_user"
password_file = "secrets/runtime"
[upstream.migration]
user = "app_migrator"
password_env = "MIGRATOR_PW"
"#;

#[test]
fn relative_paths_resolve_from_the_config_directory() {
    let c = load_file(
        FILE_SECRETS,
        &[("secrets/runtime", "from-file\n")],
        &[("MIGRATOR_PW", "m")],
    )
    .expect("a relative password_file next to the config loads");
    let s = &c.services[DEFAULT_SERVICE];
    assert_eq!(
        s.runtime.password.as_ref().map(Secret::expose),
        Some("from-file")
    );
}

#[test]
fn a_higher_layer_secret_replaces_the_lower_source() {
    // The file says password_file / password_env; the environment's
    // PG_*_PASSWORD replaces them (no "set only one" error).
    let c = load_file(
        FILE_SECRETS,
        &[],
        &[
            ("PG_RUNTIME_PASSWORD", "from-env"),
            ("PG_MIGRATION_PASSWORD", "mig-env"),
        ],
    )
    .expect("env replaces the file's secret source");
    let s = &c.services[DEFAULT_SERVICE];
    assert_eq!(
        s.runtime.password.as_ref().map(Secret::expose),
        Some("from-env")
    );
    let m = s.migration.as_ref().expect("migration");
    assert_eq!(m.password.as_ref().map(Secret::expose), Some("mig-env"));
    // ROLEGATE__ is higher still.
    let c = load_file(
        FILE_SECRETS,
        &[("other", "from-rolegate-file")],
        &[
            ("PG_RUNTIME_PASSWORD", "from-env"),
            ("MIGRATOR_PW", "m"),
            ("ROLEGATE__UPSTREAM__RUNTIME__PASSWORD_FILE", "other"),
        ],
    )
    .expect("ROLEGATE__ replaces PG_*");
    let s = &c.services[DEFAULT_SERVICE];
    assert_eq!(
        s.runtime.password.as_ref().map(Secret::expose),
        Some("from-rolegate-file")
    );
    // Two sources within one layer stay an error naming both.
    let e = load_file(
        "[upstream]\ndatabase = \"app\"\n[upstream.runtime]\nuser = \"u\"\npassword = \"a\"\npassword_file = \"b\"\n",
        &[],
        &[],
    )
    .expect_err("two sources in the file");
    let text = e.to_string();
    assert!(text.contains("upstream.runtime.password"), "{text}");
    assert!(text.contains("password_file"), "{text}");
}

#[test]
fn client_secret_errors_name_the_key() {
    let text = format!(
        "{FILE_SECRETS}\n[[clients]]\nname = \"a\"\npassword_env = \"A\"\n[[clients]]\nname = \"b\"\npassword_file = \"missing\"\n"
    );
    let e = load_file(
        &text,
        &[("secrets/runtime", "x")],
        &[("MIGRATOR_PW", "m"), ("A", "a")],
    )
    .expect_err("missing client secret file");
    let text = e.to_string();
    assert!(text.contains("clients[1].password_file"), "{text}");
    assert!(!text.contains("]_file"), "{text}");
}

#[test]
fn sizes_parse() {
    assert_eq!(byte_size("k", "64MiB").ok(), Some(64 << 20));
    assert!(byte_size("k", "2GiB").is_err());
    assert!(byte_size("k", "lots").is_err());
}
