//! README's "Getting started with your own database", run literally.
//!
//! The test reads the shell blocks of that README section and runs them in
//! one bash, in a scratch copy of `config/` and `migrations/`, against a
//! fresh PostgreSQL that has neither the roles nor the database yet. Only
//! what a reader's machine supplies is set from outside: where the server
//! is (`PGHOST`, `PGPORT`, `PGPASSWORD` for `psql -U postgres`,
//! `ROLEGATE__UPSTREAM__PORT` for the config's `port = 5432`), free ports
//! for rolegate in place of 6432 and 9187, `rolegate` on `PATH`, and
//! `serve` started in the background. Each `psql` line must give what its
//! comment says: `app_user`, the DDL refusal, an audited `create table`.

use std::path::Path;
use std::process::Command;

use rolegate::demo::cluster::{Cluster, ClusterOptions, free_port};

/// The shell commands of README's Getting started section, continuation
/// lines joined, in order.
fn readme_commands(readme: &str) -> Vec<String> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Getting started with your own database"))
        .expect("README has a Getting started section");
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    for line in section.lines() {
        let line = line.trim();
        if line.starts_with("```") {
            in_block = !in_block && line == "```sh";
            continue;
        }
        if !in_block || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

/// One README command as the test runs it: `serve` in the background
/// (waiting until it listens), a command whose comment promises an ERROR
/// must fail, every other one must succeed (`set -e`).
fn runnable(command: &str, port: u16) -> String {
    let command = command.replace("6432", &port.to_string());
    let (command, comment) = command
        .split_once(" # ")
        .map_or((command.as_str(), ""), |(c, comment)| {
            (c.trim_end(), comment)
        });
    let expects_error = comment.trim_start().starts_with("ERROR");
    if command.starts_with("rolegate serve") {
        format!("{command} >serve.log 2>&1 &\nwait_for_port {port}")
    } else if expects_error {
        format!("if {command}; then echo 'expected an error' >&2; exit 99; fi")
    } else {
        command.to_string()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

const PRELUDE: &str = r#"set -euo pipefail
wait_for_port() {
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$!" 2>/dev/null || { cat serve.log >&2; return 1; }
        sleep 0.05
    done
    cat serve.log >&2
    return 1
}
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
"#;

#[test]
fn readme_getting_started_reaches_the_app_and_migration_urls() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let commands = readme_commands(&readme);
    assert!(
        commands.iter().any(|c| c.starts_with("rolegate serve"))
            && commands.iter().any(|c| c.contains("MIGRATION_URL")),
        "README's Getting started lost its serve or migration step: {commands:#?}"
    );

    let cluster = Cluster::start(ClusterOptions::default())
        .unwrap_or_else(|e| panic!("cannot start a PostgreSQL cluster: {e}"));
    let work = tempfile::tempdir().expect("work dir");
    copy_dir(&root.join("config"), &work.path().join("config"));
    copy_dir(&root.join("migrations"), &work.path().join("migrations"));
    let port = free_port().expect("free port");
    let admin = free_port().expect("free port");

    let mut script = String::from(PRELUDE);
    for c in &commands {
        script.push_str(&runnable(c, port));
        script.push('\n');
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_rolegate"))
        .parent()
        .expect("binary dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(work.path())
        .env("PATH", path)
        .env("USER", "getting-started")
        .env("PGHOST", &cluster.host)
        .env("PGPORT", cluster.port.to_string())
        .env("PGPASSWORD", &cluster.superuser_password)
        .env("ROLEGATE__UPSTREAM__PORT", cluster.port.to_string())
        .env("ROLEGATE__LISTEN__ADDRESS", format!("127.0.0.1:{port}"))
        .env("ROLEGATE__ADMIN__ADDRESS", format!("127.0.0.1:{admin}"))
        .env_remove("ROLEGATE_CONFIG")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(work.path().join("serve.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "README's Getting started failed ({}).\nscript:\n{script}\nstdout:\n{stdout}\nstderr:\n{stderr}\nrolegate log:\n{log}",
        out.status
    );
    // The app's URL gets the runtime role, and DDL is refused with a hint.
    assert!(stdout.lines().any(|l| l.trim() == "app_user"), "{stdout}");
    assert!(
        stderr.contains("rolegate: DDL is not allowed") && stderr.contains("HINT:"),
        "{stderr}"
    );
    // The migration URL ran its DDL as the migrator, and it was audited.
    let owner = cluster
        .psql(
            &cluster.superuser,
            &cluster.superuser_password,
            "app",
            "select tableowner from pg_tables where tablename = 'hello'",
        )
        .expect("query the catalog");
    assert_eq!(owner, "app_migrator");
    assert!(
        log.contains("migration_statement") && log.contains("create table hello"),
        "{log}"
    );
}
