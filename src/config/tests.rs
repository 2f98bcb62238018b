//! Unit tests of loading: the env contract, precedence, secrets, relative
//! paths, windows, typed values (sizes, durations, modes), and the example
//! config.

use std::time::Duration;

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

/// A sidecar configured by the environment alone, plus `extra`.
fn load_sidecar(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut pairs = vec![
        ("PG_NAME", "app"),
        ("PG_RUNTIME_USER", "app_user"),
        ("PG_RUNTIME_PASSWORD", "r"),
    ];
    pairs.extend_from_slice(extra);
    load_env(&pairs)
}

#[test]
fn sizes_parse() {
    let size = |v: &str| {
        load_sidecar(&[("ROLEGATE__LISTEN__MAX_MESSAGE_SIZE", v)])
            .map(|c| c.listen.max_message_size)
            .map_err(|e| e.to_string())
    };
    assert_eq!(size("64MiB").ok(), Some(64 << 20));
    assert_eq!(size("1 MiB").ok(), Some(1 << 20));
    assert_eq!(size("16KiB").ok(), Some(16 << 10));
    assert_eq!(size("4096").ok(), Some(4096));
    let e = size("2GiB").expect_err("too big");
    assert!(e.contains("listen.max_message_size"), "{e}");
    let e = size("lots").expect_err("not a size");
    assert!(
        e.contains("listen.max_message_size") && e.contains("lots"),
        "{e}"
    );
    assert!(size("512").is_err());
}

#[test]
fn durations_parse_in_the_documented_spellings() {
    let idle = |v: &str| {
        load_sidecar(&[("ROLEGATE__LISTEN__IDLE_TIMEOUT", v)])
            .map(|c| c.listen.idle_timeout)
            .map_err(|e| e.to_string())
    };
    assert_eq!(idle("0s"), Ok(None));
    assert_eq!(idle("0"), Ok(None));
    assert_eq!(idle("30s"), Ok(Some(Duration::from_secs(30))));
    assert_eq!(idle("5m"), Ok(Some(Duration::from_secs(300))));
    assert_eq!(idle("1h"), Ok(Some(Duration::from_secs(3600))));
    assert_eq!(idle("1h 30m"), Ok(Some(Duration::from_secs(5400))));
    let e = idle("soon").expect_err("not a duration");
    assert!(
        e.contains("listen.idle_timeout") && e.contains("soon"),
        "{e}"
    );
    // The built-in defaults.
    let c = load_sidecar(&[]).expect("loads");
    assert_eq!(c.listen.startup_timeout, Duration::from_secs(10));
    assert_eq!(c.listen.idle_timeout, None);
    assert_eq!(c.listen.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(c.listen.max_message_size, 64 << 20);
    assert_eq!(c.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.migration.grace, Duration::from_secs(300));
    assert_eq!(c.migration.leeway, Duration::from_secs(30));
    assert_eq!(c.pool.idle_timeout, Duration::from_secs(300));
    assert_eq!(c.pool.max_lifetime, Duration::from_secs(3600));
    assert_eq!(c.pool.mode, super::PoolMode::Session);
    assert_eq!(c.pool.size, 20);
    assert_eq!(c.pool.wait_timeout, Duration::from_secs(5));
}

#[test]
fn transaction_pooling_keys_are_read_and_checked() {
    let c = load_sidecar(&[
        ("ROLEGATE__POOL__MODE", "transaction"),
        ("ROLEGATE__POOL__SIZE", "3"),
        ("ROLEGATE__POOL__WAIT_TIMEOUT", "250ms"),
    ])
    .expect("loads");
    assert_eq!(c.pool.mode, super::PoolMode::Transaction);
    assert_eq!(c.pool.size, 3);
    assert_eq!(c.pool.wait_timeout, Duration::from_millis(250));
    let e = load_sidecar(&[("ROLEGATE__POOL__SIZE", "0")])
        .expect_err("no connections")
        .to_string();
    assert!(e.contains("pool.size"), "{e}");
    let e = load_sidecar(&[("ROLEGATE__POOL__WAIT_TIMEOUT", "0s")])
        .expect_err("no wait")
        .to_string();
    assert!(e.contains("pool.wait_timeout"), "{e}");
    let e = load_sidecar(&[("ROLEGATE__POOL__MODE", "statement")])
        .expect_err("not a mode")
        .to_string();
    assert!(e.contains("pool.mode") && e.contains("statement"), "{e}");
}

#[test]
fn env_strings_reach_typed_keys() {
    let c = load_sidecar(&[
        ("ROLEGATE__LISTEN__MAX_CONNECTIONS", "500"),
        ("ROLEGATE__UPSTREAM__TLS", "disable"),
        ("ROLEGATE__UPSTREAM__STRICT", "true"),
        ("ROLEGATE__MIGRATION__ENVIRONMENT", "prod"),
        ("ROLEGATE__POLICY__MODE", "report"),
        ("ROLEGATE__POLICY__ALLOW_TRUNCATE", "true"),
        ("ROLEGATE__POOL__ENABLED", "false"),
    ])
    .expect("loads");
    assert_eq!(c.listen.max_connections, 500);
    assert_eq!(c.listen.tls_mode, ListenTlsMode::Disable);
    assert_eq!(c.upstream.tls_mode, crate::tls::UpstreamTlsMode::Disable);
    assert!(c.upstream.strict);
    assert_eq!(c.migration.environment, crate::migration::Environment::Prod);
    assert_eq!(c.policy.mode, PolicyMode::Report);
    assert!(c.policy.allow_truncate);
    assert!(!c.pool.enabled);
}

#[test]
fn modes_outside_their_set_name_the_key_and_the_value() {
    for (var, key) in [
        ("ROLEGATE__LISTEN__TLS__MODE", "listen.tls.mode"),
        ("ROLEGATE__UPSTREAM__TLS", "upstream.tls"),
        ("ROLEGATE__MIGRATION__ENVIRONMENT", "migration.environment"),
        ("ROLEGATE__POLICY__MODE", "policy.mode"),
    ] {
        let e = load_sidecar(&[(var, "sometimes")])
            .expect_err("a bad mode")
            .to_string();
        assert!(e.contains(key) && e.contains("sometimes"), "{e}");
        assert!(!e.contains("variant constructor"), "{e}");
    }
    // Spellings are exact, as documented.
    assert!(load_sidecar(&[("ROLEGATE__UPSTREAM__TLS", "Verify-Full")]).is_err());
    let c = load_sidecar(&[
        ("ROLEGATE__LISTEN__TLS__MODE", "disable"),
        ("ROLEGATE__UPSTREAM__TLS", "require"),
    ])
    .expect("loads");
    assert_eq!(c.listen.tls_mode, ListenTlsMode::Disable);
    assert_eq!(c.upstream.tls_mode, crate::tls::UpstreamTlsMode::Require);
}

/// `FILE_SECRETS` plus a `[migration]` section.
fn load_migration(section: &str, files: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load_file(
        &format!("{FILE_SECRETS}\n{section}"),
        &[&[("secrets/runtime", "r")], files].concat(),
        &[("MIGRATOR_PW", "m")],
    )
}

fn test_ca_pem() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).expect("ca").pem()
}

#[test]
fn jwks_by_discovery_url_or_file() {
    use crate::migration::{KeysFrom, RemoteLocation};
    let c = load_migration(
        r#"
[[migration.jwks]]
issuer = "https://token.actions.githubusercontent.com"
audience = "rolegate"
subject = "repo:acme/app:*"
confirms_prod = true
environment_claim = "deploy_env"
service = "billing"
refresh = "30m"
[migration.jwks.claims]
repository = "acme/app"
ref_protected = true
run_attempt = 1
runnerEnvironment = "github-hosted"
"kubernetes.io.namespace" = "ci"
[migration.jwks.confirm_claims]
environment = "production"

[[migration.jwks]]
issuer = "https://gitlab.example"
url = "https://gitlab.example/oauth/discovery/keys"
ca_file = "issuer-ca.crt"
min_refresh_interval = "1s"
"#,
        &[("issuer-ca.crt", &test_ca_pem())],
    )
    .expect("loads");
    let [github, gitlab] = &c.migration.jwks[..] else {
        panic!("two sources")
    };
    match &github.keys_from {
        KeysFrom::Remote(r) => {
            assert_eq!(
                r.location,
                RemoteLocation::Discovery {
                    issuer: "https://token.actions.githubusercontent.com".into()
                }
            );
            assert_eq!(r.refresh, Duration::from_secs(1800));
            assert_eq!(r.max_stale, Duration::from_secs(86400));
            assert_eq!(r.min_refresh_interval, Duration::from_secs(5));
            assert_eq!(r.fetch_timeout, Duration::from_secs(5));
            assert!(r.ca.is_none());
        }
        other => panic!("{other:?}"),
    }
    let rules: Vec<(&str, &str)> = github
        .claims
        .iter()
        .map(|r| (r.path.as_str(), r.pattern.as_str()))
        .collect();
    assert_eq!(
        rules,
        [
            ("kubernetes.io.namespace", "ci"),
            ("ref_protected", "true"),
            ("repository", "acme/app"),
            ("run_attempt", "1"),
            ("runnerEnvironment", "github-hosted"),
        ]
    );
    assert_eq!(github.environment_claim, "deploy_env");
    assert_eq!(github.service_claim, "service");
    assert_eq!(github.service.as_deref(), Some("billing"));
    assert_eq!(github.confirm_claims.len(), 1);
    match &gitlab.keys_from {
        KeysFrom::Remote(r) => {
            assert!(matches!(&r.location, RemoteLocation::Url(u) if u.ends_with("/keys")));
            let ca = r.ca.as_ref().expect("ca");
            assert!(ca.path.is_absolute(), "relative to the config file");
            assert_eq!(r.min_refresh_interval, Duration::from_secs(1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(gitlab.environment_claim, "env");
    // Watched for reload: the CA file.
    assert!(c.files.iter().any(|f| f.ends_with("issuer-ca.crt")));
}

#[test]
fn jwks_settings_are_validated() {
    for (section, expect) in [
        (
            "issuer = \"http://issuer.example\"",
            "migration.jwks[0].issuer (OIDC discovery) = \"http://issuer.example\": keys are fetched over https only",
        ),
        (
            "issuer = \"https://i.example\"\nurl = \"http://127.0.0.1/keys\"",
            "migration.jwks[0].url = \"http://127.0.0.1/keys\": keys are fetched over https only",
        ),
        (
            "issuer = \"https://i.example\"\nurl = \"https://u:p@i.example/keys\"",
            "must not carry a user name or password",
        ),
        (
            "issuer = \"https://i.example\"\nurl = \"https://i.example/k\"\nfile = \"jwks.json\"",
            "set at most one of file and url",
        ),
        (
            "issuer = \"https://i.example\"\nfile = \"jwks.json\"\nca_file = \"ca.crt\"",
            "migration.jwks[0].ca_file applies to fetched keys",
        ),
        (
            "issuer = \"https://i.example\"\nrefresh = \"10s\"",
            "migration.jwks[0].refresh = \"10s\" is outside 1m .. 1day",
        ),
        (
            "issuer = \"https://i.example\"\nrefresh = \"2h\"\nmax_stale = \"1h\"",
            "migration.jwks[0].max_stale",
        ),
        (
            "issuer = \"https://i.example\"\nmin_refresh_interval = \"0s\"",
            "min_refresh_interval",
        ),
        (
            "issuer = \"https://i.example\"\nservice = \"a\"\nservice_claim = \"b\"",
            "set at most one of service",
        ),
        (
            "issuer = \"https://i.example\"\nca_file = \"missing.crt\"",
            "migration.jwks[0].ca_file = ",
        ),
        (
            "issuer = \"https://i.example\"\nca_file = \"jwks.json\"",
            "no PEM certificate",
        ),
        ("issuer = \"https://i.example\"\nshoe_size = 3", "shoe_size"),
    ] {
        let e = load_migration(
            &format!("[[migration.jwks]]\n{section}\n"),
            &[("jwks.json", "{\"keys\":[]}")],
        )
        .map(|_| ())
        .expect_err(section)
        .to_string();
        assert!(e.contains(expect), "{section}: {e}");
    }
}

#[test]
fn cluster_peer_id_comes_from_the_environment() {
    let c = load_sidecar(&[("ROLEGATE__CLUSTER__PEER_ID", "3")]).expect("loads");
    let cluster = c.cluster.expect("[cluster]");
    assert_eq!(cluster.peer_id, 3);
    assert!(cluster.peers.is_empty());
    let c = load_sidecar(&[]).expect("loads");
    assert!(c.cluster.is_none());
}
