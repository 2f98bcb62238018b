//! `rolegate demo`: a throwaway PostgreSQL provisioned from `migrations/`,
//! a proxy in front of it, and a short guide for trying it: pasteable
//! `export` lines, the admin URLs, the config and key paths, and every
//! refusal and migration statement as one line on the terminal (the JSON
//! log goes to a file). Ctrl-C, SIGTERM or SIGHUP stop the proxy and remove
//! the cluster and the demo directory.
//!
//! [`cluster`] (throwaway PostgreSQL servers) lives here because only the
//! demo and the test harness use it; the proxy never links it in a path a
//! client can reach.

pub mod cluster;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tracing_subscriber::prelude::*;

use crate::client_auth;
use crate::config::{Config, Sources};
use crate::server::Proxy;
use cluster::{Cluster, ClusterOptions, RoleModel};

/// JSON log lines into `log`; refusals and migration statements also as
/// one readable line each on stdout.
fn init_logging(log: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(log)
        .with_context(|| format!("cannot create {}", log.display()))?;
    let json = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::sync::Mutex::new(file))
        .with_filter(tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(json)
        .with(AuditLines)
        .try_init()
        .context("cannot set up logging")
}

/// Prints `statement_refused` and `migration_statement` events as lines.
struct AuditLines;

#[derive(Default)]
struct Fields(HashMap<&'static str, String>);

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AuditLines {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let get = |k: &str| f.0.get(k).map(String::as_str).unwrap_or("");
        let line = match get("event") {
            "statement_refused" => format!(
                "refused    {:<10} {:<18} {}  ({})",
                get("identity"),
                get("class"),
                get("fingerprint"),
                get("reason")
            ),
            "migration_statement" => format!(
                "migration  {:<10} {}",
                get("subject"),
                get("statement").replace('\n', " ")
            ),
            _ => return,
        };
        println!("{line}");
    }
}

/// What the guide shows: where everything is.
struct Demo {
    url: String,
    migrator_url: String,
    runtime_role: String,
    private_key: std::path::PathBuf,
    public_key: std::path::PathBuf,
    config_path: std::path::PathBuf,
    log_path: std::path::PathBuf,
    admin_addr: std::net::SocketAddr,
}

pub async fn run() -> anyhow::Result<()> {
    let dir = private_dir()?;
    let log_path = dir.path().join("rolegate.log");
    init_logging(&log_path)?;
    let (cluster, model) = start_cluster().await?;
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:6432").await {
        Ok(l) => l,
        // Something (perhaps PgBouncer) already has the usual port.
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on loopback")?,
    };
    let addr = listener.local_addr().context("listener address")?;
    let client_password = cluster::random_password();
    let (private_key, public_key) = crate::migration::token::keygen(dir.path())?;
    let now = jiff::Timestamp::now();
    let config_path = dir.path().join("rolegate.toml");
    let toml = config_text(&cluster, &model, addr, &client_password, &public_key, now);
    // It holds the upstream passwords: owner-only from the start.
    crate::migration::token::write_new(&config_path, toml.as_bytes(), 0o600)
        .context("cannot write the demo config")?;
    let config = Config::load(&Sources {
        file: Some(config_path.clone()),
        env: Default::default(),
    })
    .context("demo config")?;
    let proxy = Proxy::new(config);
    let admin_addr = start_admin(&proxy).await?;
    let token = migration_token(&private_key, now)?;
    let base = format!("{}:{}/{}", addr.ip(), addr.port(), model.database);
    guide(&Demo {
        url: format!("postgres://web:{client_password}@{base}"),
        migrator_url: format!("postgres://migrator:{token}@{base}"),
        runtime_role: model.runtime.clone(),
        private_key,
        public_key,
        config_path,
        log_path,
        admin_addr,
    });
    serve_until_signal(proxy, listener).await?;
    drop(cluster);
    drop(dir);
    println!("rolegate demo stopped; the cluster and the demo directory are removed.");
    Ok(())
}

/// The demo's directory: it holds the config (passwords) and the signing
/// key, so only its owner may enter it.
fn private_dir() -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().context("cannot create a temp dir for the demo")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .context("cannot restrict the demo directory")?;
    Ok(dir)
}

/// A provisioned throwaway cluster (initdb and psql block: off the workers).
async fn start_cluster() -> anyhow::Result<(Cluster, RoleModel)> {
    let model = RoleModel::example();
    tokio::task::spawn_blocking(move || -> anyhow::Result<(Cluster, RoleModel)> {
        let cluster = Cluster::start(ClusterOptions::default())?;
        cluster.provision(&model)?;
        Ok((cluster, model))
    })
    .await
    .context("cluster setup task failed")?
}

/// The demo's config: plaintext upstream on loopback, one client `web`,
/// the demo key, and a window open for the next 24 hours.
fn config_text(
    cluster: &Cluster,
    model: &RoleModel,
    addr: std::net::SocketAddr,
    client_password: &str,
    public_key: &Path,
    now: jiff::Timestamp,
) -> String {
    let window_start = now - jiff::SignedDuration::from_mins(1);
    let window_end = now + jiff::SignedDuration::from_hours(24);
    format!(
        r#"[listen]
address = "{addr}"

[upstream]
host = "{host}"
port = {port}
database = "{db}"
tls = "disable"
[upstream.runtime]
user = "{runtime}"
password = "{runtime_pw}"
[upstream.migration]
user = "{migrator}"
password = "{migrator_pw}"

[[clients]]
name = "web"
password_scram = "{verifier}"

[migration]
environment = "staging"
[[migration.keys]]
public_key_file = "{public_key}"
[[migration.windows]]
start = "{window_start}"
end = "{window_end}"
"#,
        public_key = public_key.display(),
        host = cluster.host,
        port = cluster.port,
        db = model.database,
        runtime = model.runtime,
        runtime_pw = model.runtime_password,
        migrator = model.migrator,
        migrator_pw = model.migrator_password,
        verifier = client_auth::hash_password(client_password),
    )
}

/// The admin endpoints on a free loopback port.
async fn start_admin(proxy: &Arc<Proxy>) -> anyhow::Result<std::net::SocketAddr> {
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen for the admin endpoints")?;
    let admin_addr = admin.local_addr().context("admin address")?;
    let metrics = crate::admin::install_recorder()?;
    let readiness = Arc::new(crate::admin::Readiness::new(proxy.clone()));
    tokio::spawn(async move {
        if let Err(e) = crate::admin::serve(admin, metrics, readiness).await {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    Ok(admin_addr)
}

/// A token for the demo's migration URL, valid for an hour.
fn migration_token(private_key: &Path, now: jiff::Timestamp) -> anyhow::Result<String> {
    let key = std::fs::read_to_string(private_key).context("cannot read the demo signing key")?;
    Ok(crate::migration::token::issue(
        &key,
        crate::migration::token::IssueOptions {
            subject: "demo-migration".into(),
            ttl: std::time::Duration::from_secs(3600),
            env: Some("staging".into()),
            confirm: false,
            service: None,
            kid: None,
            now,
        },
    )?)
}

/// The try-it guide on stdout.
fn guide(d: &Demo) {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "rolegate".into());
    println!("rolegate demo is running. Paste these into another shell:\n");
    println!("  export DATABASE_URL='{}'", d.url);
    println!("  export MIGRATION_URL='{}'\n", d.migrator_url);
    println!(
        "The application logs in as \"web\"; upstream it is the runtime role \"{}\".",
        d.runtime_role
    );
    println!("Try:");
    println!("  psql \"$DATABASE_URL\" -c 'select current_user'");
    println!(
        "  psql \"$DATABASE_URL\" -c \"set app.tenant = 'acme'; select * from notes\"   # row-level security: only acme's rows"
    );
    println!(
        "  psql \"$DATABASE_URL\" -c 'drop table notes'           # refused: DDL on the runtime URL"
    );
    println!(
        "\nMigrations log in as \"migrator\" with a signed token (valid 1 hour; the demo's window is open for 24 hours):"
    );
    println!(
        "  psql \"$MIGRATION_URL\" -c 'create table t (x int)'   # DDL is allowed here, and audited"
    );
    println!("A fresh token:");
    println!(
        "  {exe} token issue --key {} --subject you --ttl 1h --env staging",
        d.private_key.display()
    );
    println!("\nAdmin endpoints:");
    for path in ["metrics", "healthz", "readyz"] {
        println!("  http://{}/{path}", d.admin_addr);
    }
    println!("\nFiles (removed on exit):");
    println!("  config    {}", d.config_path.display());
    println!(
        "  keys      {} (secret), {}",
        d.private_key.display(),
        d.public_key.display()
    );
    println!("  JSON log  {}", d.log_path.display());
    println!(
        "\nRefusals and migration statements appear below. Press Ctrl-C to stop and remove everything."
    );
    let _ = std::io::stdout().flush();
}

/// Serve until Ctrl-C, SIGTERM or SIGHUP (all end the demo).
async fn serve_until_signal(
    proxy: Arc<Proxy>,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    tokio::select! {
        r = proxy.serve(listener) => r.context("proxy listener failed")?,
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
    Ok(())
}
