//! The deployment files: the config the Kubernetes manifests mount passes
//! `rolegate check --offline` (with stand-ins for the Secrets it names),
//! and the ConfigMap carries the same config as deploy/kubernetes/rolegate.toml.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use ed25519_dalek::pkcs8::DecodePublicKey;

const BIN: &str = env!("CARGO_BIN_EXE_rolegate");

/// Config lines without comments or blank lines, indentation removed.
fn normalise(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[test]
fn configmap_matches_the_reference_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let toml = std::fs::read_to_string(root.join("rolegate.toml")).expect("rolegate.toml");
    let yaml = std::fs::read_to_string(root.join("sidecar.yaml")).expect("sidecar.yaml");
    let start = yaml.find("rolegate.toml: |").expect("ConfigMap key");
    let block: Vec<&str> = yaml[start..]
        .lines()
        .skip(1)
        .take_while(|l| {
            l.starts_with("    ") || l.trim().is_empty() || l.trim_start().starts_with('#')
        })
        .collect();
    assert_eq!(normalise(&block.join("\n")), normalise(&toml));
}

/// `rolegate check --offline --config CONFIG` from `dir` with `env`; it must
/// pass (the failure shows its output and `what`).
fn check_offline(dir: &Path, config: &Path, env: &[(&str, &str)], what: &str) {
    let out = Command::new(BIN)
        .args(["check", "--offline", "--config"])
        .arg(config)
        .current_dir(dir)
        .env_remove("ROLEGATE_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("check");
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, data).expect("write");
}

/// A self-signed certificate for localhost and its key, as PEM.
fn localhost_cert() -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    (cert.pem(), key.serialize_pem())
}

/// A JWKS holding the Ed25519 public key in `public` (SPKI PEM) as `kid`.
fn jwks_for(public: &Path, kid: &str) -> String {
    let pem = std::fs::read_to_string(public).expect("pub");
    let raw = ed25519_dalek::VerifyingKey::from_public_key_pem(&pem)
        .expect("ed25519 pub")
        .to_bytes();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    format!(
        r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig","kid":"{kid}","x":"{x}"}}]}}"#
    )
}

#[test]
fn the_mounted_config_passes_check_offline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let toml = std::fs::read_to_string(root.join("rolegate.toml")).expect("rolegate.toml");
    let dir = tempfile::tempdir().expect("dir");
    let etc = dir.path().join("etc-rolegate");
    // Stand-ins for the Secrets and ConfigMaps the manifests mount.
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let (cert, key) = localhost_cert();
    write(&etc.join("tls/tls.crt"), cert.as_bytes());
    write(&etc.join("tls/tls.key"), key.as_bytes());
    write(&etc.join("upstream-ca/ca.crt"), ca_cert.pem().as_bytes());
    write(&etc.join("upstream/runtime-password"), b"rt-secret\n");
    write(&etc.join("upstream/migration-password"), b"mg-secret\n");
    write(&etc.join("clients/web-password"), b"web-secret\n");
    std::fs::create_dir_all(etc.join("migrator-key")).expect("mkdir");
    let (_, public) =
        rolegate::migration::token::keygen(&etc.join("migrator-key")).expect("keygen");
    write(
        &etc.join("cluster-jwks/jwks.json"),
        jwks_for(&public, "sa-1").as_bytes(),
    );
    let config = dir.path().join("rolegate.toml");
    std::fs::write(
        &config,
        toml.replace("/etc/rolegate/", &format!("{}/", etc.display())),
    )
    .expect("config");

    check_offline(dir.path(), &config, &[], "the mounted config");
    // The example config in config/ documents every key; with its files
    // missing it must fail, naming the first missing one.
    let out = Command::new(BIN)
        .args([
            "check",
            "--offline",
            "--config",
            "config/rolegate.example.toml",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(1));
}

/// The example config passes `check --offline` once the files and
/// environment variables it documents exist — also with the `PG_*`
/// contract's password exported on top (a higher layer's secret replaces
/// the file's `password_file` / `password_env`).
#[test]
fn the_example_config_passes_check_offline_with_its_documented_inputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/rolegate.example.toml")).expect("example");
    let dir = tempfile::tempdir().expect("dir");
    let etc = dir.path().join("etc");
    let secrets = dir.path().join("secrets");
    let (cert, key) = localhost_cert();
    write(&etc.join("tls/tls.crt"), cert.as_bytes());
    write(&etc.join("tls/tls.key"), key.as_bytes());
    write(&etc.join("upstream-ca.crt"), cert.as_bytes());
    write(&secrets.join("runtime-password"), b"rt\n");
    write(&secrets.join("worker-password"), b"worker\n");
    let keys = dir.path().join("keys");
    let (_, public) = rolegate::migration::token::keygen(&keys).expect("keygen");
    write(
        &etc.join("migrator.pub"),
        &std::fs::read(&public).expect("pub"),
    );
    write(
        &etc.join("ci-jwks.json"),
        jwks_for(&public, "ci-1").as_bytes(),
    );
    let config = dir.path().join("rolegate.toml");
    std::fs::write(
        &config,
        text.replace("/etc/rolegate/", &format!("{}/", etc.display()))
            .replace("/run/secrets/", &format!("{}/", secrets.display())),
    )
    .expect("config");
    let documented = [
        ("PG_MIGRATION_PASSWORD", "mg"),
        ("BILLING_RUNTIME_PASSWORD", "brt"),
        ("BILLING_MIGRATION_PASSWORD", "bmg"),
    ];
    for extra in [&[][..], &[("PG_RUNTIME_PASSWORD", "from-env")][..]] {
        let env: Vec<_> = documented.iter().chain(extra).copied().collect();
        check_offline(dir.path(), &config, &env, &format!("with {extra:?}"));
    }
}

/// README's "Getting started" config passes `check --offline` with what
/// the README's steps create (the key from `token keygen --out
/// config/keys`, the three exported secrets), and the README names that
/// config and every environment variable it reads.
#[test]
fn the_getting_started_config_agrees_with_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/getting-started.toml")).expect("config");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    assert!(readme.contains("config/getting-started.toml"));
    assert!(readme.contains("token keygen --out config/keys"));
    let vars: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once("password_env = \"")?.1.split('"').next())
        .collect();
    assert_eq!(vars.len(), 3, "{vars:?}");
    for var in &vars {
        assert!(
            readme.contains(&format!("{var}=")),
            "README never sets {var}"
        );
    }
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("config");
    write(&config.join("getting-started.toml"), text.as_bytes());
    rolegate::migration::token::keygen(&config.join("keys")).expect("keygen");
    let env: Vec<_> = vars.iter().map(|v| (*v, "secret")).collect();
    check_offline(
        dir.path(),
        Path::new("config/getting-started.toml"),
        &env,
        "getting started",
    );
}

/// The image and the unit as shipped: a numeric non-root user, libclang in
/// the build stage, OCI labels, a context without `target/`; systemd hands
/// secrets over as credentials and filters system calls.
#[test]
fn the_image_and_the_unit_are_hardened() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).expect("Dockerfile");
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER line");
    assert!(
        user.split(':')
            .all(|p| p.parse::<u32>().is_ok_and(|n| n != 0)),
        "USER must be numeric and not root: {user}"
    );
    assert!(
        dockerfile.contains("libclang-dev"),
        "bindgen needs libclang"
    );
    for label in ["title", "licenses", "revision"] {
        assert!(
            dockerfile.contains(&format!("org.opencontainers.image.{label}=")),
            "missing OCI label {label}"
        );
    }
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore");
    for path in ["target/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == path),
            "{path} in .dockerignore"
        );
    }
    let unit = std::fs::read_to_string(root.join("deploy/systemd/rolegate.service")).expect("unit");
    assert!(unit.contains("\nLoadCredential="), "{unit}");
    assert!(unit.contains("\nSystemCallFilter="), "{unit}");
    assert!(unit.contains("\nNoNewPrivileges=yes"), "{unit}");
    assert!(unit.contains("\nCapabilityBoundingSet=\n"), "{unit}");
}

/// The Kubernetes manifests pass `kubernetes-validate --strict` for a
/// current Kubernetes and the hardening rules of
/// tests/deploy/check_manifests.py (pinned images, non-root, no privilege
/// escalation, read-only root filesystems, no capabilities, requests and
/// limits, rolegate as a native sidecar with a numeric user).
#[test]
fn the_manifests_validate_and_are_hardened() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifests: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("deploy/kubernetes"))
        .expect("deploy/kubernetes")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    assert!(manifests.len() >= 3, "{manifests:?}");
    let install = "python3 -m pip install -r tests/deploy/requirements.txt";
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", "1.33.0"])
        .args(&manifests)
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubernetes-validate ({e}): {install}"));
    assert!(
        out.status.success(),
        "kubernetes-validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(root.join("tests/deploy/check_manifests.py"))
        .args(&manifests)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python} ({e}): apt-get install python3; {install}")
        });
    assert!(
        out.status.success(),
        "hardening rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every relative link in README.md, ARCHITECTURE.md and docs/ names a file
/// that exists and, with `#anchor`, a heading in it (GitHub's slugs).
#[test]
fn documentation_links_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    for e in std::fs::read_dir(root.join("docs")).expect("docs") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    let slug = |h: &str| -> String {
        h.trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect()
    };
    let headings = |text: &str| -> Vec<String> {
        let mut out = Vec::new();
        let mut fenced = false;
        for line in text.lines() {
            if line.starts_with("```") {
                fenced = !fenced;
            } else if !fenced && line.starts_with('#') {
                out.push(slug(line.trim_start_matches('#')));
            }
        }
        out
    };
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let dir = file.parent().expect("dir");
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
            let linked = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path)
            };
            if !linked.exists() {
                broken.push(format!("{}: {target} (no such file)", file.display()));
                continue;
            }
            if !anchor.is_empty() && linked.extension().is_some_and(|x| x == "md") {
                let body = std::fs::read_to_string(&linked).expect("read");
                if !headings(&body).iter().any(|h| h == anchor) {
                    broken.push(format!("{}: {target} (no such heading)", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The alerting rules load (`promtool check rules`) and their unit tests
/// pass (`promtool test rules`).
#[test]
fn the_prometheus_rules_check_and_their_tests_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    for args in [
        &["check", "rules", "rolegate-rules.yaml"][..],
        &["test", "rules", "rolegate-rules.test.yaml"][..],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run promtool ({e}): apt-get install prometheus (Debian's package ships promtool)")
            });
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
