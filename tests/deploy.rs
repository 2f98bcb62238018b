//! The deployment files: the Kubernetes kustomization renders, validates
//! and is hardened, and each workload's rolegate passes `rolegate check
//! --offline` on exactly what its pod mounts; the example and getting-started
//! configs pass with their documented inputs; the image and the systemd unit
//! are hardened; the documentation's links resolve.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use ed25519_dalek::pkcs8::DecodePublicKey;

const BIN: &str = env!("CARGO_BIN_EXE_rolegate");

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

/// `kubectl kustomize deploy/kubernetes`: the manifests as they are applied.
fn render_kustomization(dir: &Path) -> std::path::PathBuf {
    render("deploy/kubernetes", &dir.join("rendered.yaml"))
}

/// `kubectl kustomize <kustomization>` (relative to the repo) into `out`.
fn render(kustomization: &str, out_file: &Path) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(root.join(kustomization))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run kubectl ({e}): apt-get install kubernetes-client (any kubectl >= 1.20 renders kustomizations)")
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {kustomization}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(out_file, &out.stdout).expect("rendered");
    out_file.to_path_buf()
}

/// The example overlay changes only what it says (the image, where the
/// database is) and keeps the base's config generated from its one source.
#[test]
fn the_example_overlay_replaces_only_the_image_and_the_upstream() {
    let dir = tempfile::tempdir().expect("dir");
    let base = std::fs::read_to_string(render_kustomization(dir.path())).expect("base");
    let overlay = std::fs::read_to_string(render(
        "deploy/overlays/example",
        &dir.path().join("overlay.yaml"),
    ))
    .expect("overlay");
    assert!(overlay.contains("image: registry.example/platform/rolegate:0.1.0"));
    assert!(!overlay.contains("registry.example/acme/rolegate"));
    assert!(overlay.contains("PG_HOST: pg-primary.staging.internal"));
    assert!(!overlay.contains("postgres.database.svc.cluster.local"));
    // Same workloads, same generated configs.
    let kinds = |s: &str| {
        let mut k: Vec<String> = s
            .lines()
            .filter(|l| l.starts_with("kind: "))
            .map(str::to_string)
            .collect();
        k.sort();
        k
    };
    assert_eq!(kinds(&base), kinds(&overlay));
    for name in ["rolegate-app-config", "rolegate-migrate-config"] {
        let section = |s: &str| {
            s.split("\n---\n")
                .find(|d| d.contains(&format!("name: {name}-")))
                .map(|d| d.to_string())
        };
        assert_eq!(
            section(&base),
            section(&overlay),
            "{name} differs in the overlay"
        );
    }
}

/// Stand-in content for a file a workload mounts, by its name.
fn stand_in(name: &str, keys: &Path) -> Vec<u8> {
    match name {
        "ca.crt" => {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
            ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            ca.self_signed(&key).expect("ca cert").pem().into_bytes()
        }
        "migrator.pub" => std::fs::read(keys.join("migrator.pub")).expect("pub"),
        "jwks.json" => jwks_for(&keys.join("migrator.pub"), "sa-1").into_bytes(),
        n if n.ends_with("password") => format!("{n}-secret\n").into_bytes(),
        other => panic!("no stand-in for a mounted file named {other}"),
    }
}

/// The files Secrets and ConfigMaps from outside the repo hold (what
/// docs/deployment.md tells the operator to create).
fn external_files(source: &str) -> &'static [&'static str] {
    match source {
        "postgres-ca" => &["ca.crt"],
        "rolegate-clients" => &["web-password"],
        "rolegate-migrator-key" => &["migrator.pub"],
        "cluster-jwks" => &["jwks.json"],
        other => panic!("undocumented volume source {other}"),
    }
}

/// Every rendered workload's rolegate starts on what its pod gives it: the
/// generated config, the shared upstream environment and exactly the
/// Secrets it mounts pass `rolegate check --offline` — and every mount is
/// named by the config or the environment, so no pod holds a secret it
/// does not use (the Job no runtime or client password, the app pods no
/// migration credential).
#[test]
fn each_workload_starts_on_exactly_what_it_mounts() {
    let dir = tempfile::tempdir().expect("dir");
    let rendered = render_kustomization(dir.path());
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&python)
        .arg(root.join("tests/deploy/workloads.py"))
        .arg(&rendered)
        .output()
        .expect("workloads.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let workloads: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        workloads.len(),
        2,
        "the app Deployment and the migration Job"
    );
    let keys = dir.path().join("keys");
    rolegate::migration::token::keygen(&keys).expect("keygen");
    for w in &workloads {
        let name = w["workload"].as_str().expect("name");
        let pod = dir.path().join(name.replace('/', "-"));
        let local = |p: &str| p.replace("/etc/rolegate/", &format!("{}/", pod.display()));
        let mut named = String::new();
        for m in w["mounts"].as_array().expect("mounts") {
            let path = m["path"].as_str().expect("path");
            let files: Vec<(String, Option<String>)> = match m["files"].as_object() {
                Some(f) => f
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                    .collect(),
                None => external_files(m["source"].as_str().expect("source"))
                    .iter()
                    .map(|f| (f.to_string(), None))
                    .collect(),
            };
            for (file, content) in files {
                let data = match content {
                    Some(text) => {
                        named.push_str(&text);
                        local(&text).into_bytes()
                    }
                    None => stand_in(&file, &keys),
                };
                write(Path::new(&local(&format!("{path}/{file}"))), &data);
            }
        }
        let env: Vec<(String, String)> = w["env"]
            .as_object()
            .expect("env")
            .iter()
            .map(|(k, v)| (k.clone(), local(v.as_str().expect("value"))))
            .collect();
        for (_, v) in w["env"].as_object().expect("env") {
            named.push_str(v.as_str().unwrap_or(""));
        }
        for m in w["mounts"].as_array().expect("mounts") {
            let path = m["path"].as_str().expect("path");
            assert!(
                path == "/etc/rolegate/config" || named.contains(&format!("{path}/")),
                "{name} mounts {path}, which neither its config nor its environment uses"
            );
        }
        let args: Vec<String> = w["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("arg").to_string())
            .collect();
        let config = args
            .iter()
            .position(|a| a == "--config")
            .map(|i| local(&args[i + 1]))
            .expect("--config");
        let env_refs: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        check_offline(&pod, Path::new(&config), &env_refs, name);
    }
}

#[test]
fn the_example_config_fails_check_offline_naming_a_missing_file() {
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

/// The manifests as `kubectl apply -k deploy/kubernetes` applies them pass
/// `kubernetes-validate --strict` for a current Kubernetes and the
/// hardening rules of tests/deploy/check_manifests.py (pinned images,
/// non-root, no privilege escalation, read-only root filesystems, no
/// capabilities, requests and limits, rolegate as a native sidecar with a
/// numeric user).
#[test]
fn the_manifests_validate_and_are_hardened() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("dir");
    let manifests = [
        render_kustomization(dir.path()),
        render("deploy/overlays/example", &dir.path().join("overlay.yaml")),
    ];
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

/// ARCHITECTURE.md names every source file by its path, and every `src/…`
/// path it (or any doc) names exists: the map cannot fall behind the code.
#[test]
fn the_architecture_names_every_source_file_and_only_real_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("read");
    let mut sources = Vec::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).expect("src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root).expect("relative");
                sources.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let unnamed: Vec<&String> = sources
        .iter()
        .filter(|s| !architecture.contains(&format!("`{s}`")))
        .collect();
    assert!(
        unnamed.is_empty(),
        "ARCHITECTURE.md does not name {unnamed:?}"
    );
    let mut docs = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    for e in std::fs::read_dir(root.join("docs")).expect("docs") {
        docs.push(e.expect("entry").path());
    }
    let mut missing = Vec::new();
    for doc in docs
        .iter()
        .filter(|d| d.extension().is_some_and(|x| x == "md"))
    {
        let text = std::fs::read_to_string(doc).expect("read");
        for quoted in text.split('`').skip(1).step_by(2) {
            let path = quoted.trim_end_matches('/');
            if path.starts_with("src/") && !path.contains(' ') && !root.join(path).exists() {
                missing.push(format!("{}: {quoted}", doc.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs name files that do not exist: {missing:#?}"
    );
}
