//! `rolegate demo`: a throwaway PostgreSQL provisioned from `migrations/`,
//! a proxy in front of it, and a short guide for trying it. Ctrl-C stops
//! the proxy and removes the cluster.

use anyhow::Context;

use crate::client_auth;
use crate::cluster::{Cluster, ClusterOptions, RoleModel};
use crate::config::{Config, Sources};
use crate::server::Proxy;

pub async fn run() -> anyhow::Result<()> {
    let model = RoleModel::example();
    let (cluster, model) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(Cluster, RoleModel)> {
            let cluster = Cluster::start(ClusterOptions::default())?;
            cluster.provision(&model)?;
            Ok((cluster, model))
        })
        .await
        .context("cluster setup task failed")??;

    let dir = tempfile::tempdir().context("cannot create a temp dir for the demo config")?;
    let client_password = crate::cluster::random_password();
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:6432").await {
        Ok(l) => l,
        // Something (perhaps PgBouncer) already has the usual port.
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on loopback")?,
    };
    let addr = listener.local_addr().context("listener address")?;
    let (private_key, public_key) = crate::migration::token::keygen(dir.path())?;
    let now = jiff::Timestamp::now();
    let window_start = now - jiff::SignedDuration::from_mins(1);
    let window_end = now + jiff::SignedDuration::from_hours(24);
    let config_path = dir.path().join("rolegate.toml");
    let toml = format!(
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
        verifier = client_auth::hash_password(&client_password),
    );
    std::fs::write(&config_path, toml).context("cannot write the demo config")?;
    let config = Config::load(&Sources {
        file: Some(config_path),
        env: Default::default(),
    })
    .context("demo config")?;
    let proxy = Proxy::new(config);

    let token = crate::migration::token::issue(
        &std::fs::read_to_string(&private_key).context("cannot read the demo signing key")?,
        crate::migration::token::IssueOptions {
            subject: "demo-migration".into(),
            ttl: std::time::Duration::from_secs(3600),
            env: Some("staging".into()),
            confirm: false,
            service: None,
            kid: None,
            now,
        },
    )?;
    let migrator_url = format!(
        "postgres://migrator:{token}@{}:{}/{}",
        addr.ip(),
        addr.port(),
        model.database
    );
    let url = format!(
        "postgres://web:{client_password}@{}:{}/{}",
        addr.ip(),
        addr.port(),
        model.database
    );
    println!("rolegate demo is running.\n");
    println!("  DATABASE_URL={url}\n");
    println!(
        "The application logs in as \"web\"; upstream it is the runtime role \"{}\".",
        model.runtime
    );
    println!("Try:");
    println!("  psql \"{url}\" -c 'select current_user'");
    println!(
        "  psql \"{url}\" -c \"set app.tenant = 'acme'; select * from notes\"   # row-level security: only acme's rows"
    );
    println!(
        "\nMigrations log in as \"migrator\" with a signed token (valid 1 hour; the demo's window is open for 24 hours):"
    );
    println!("  MIGRATION_URL={migrator_url}");
    println!(
        "  psql \"$MIGRATION_URL\" -c 'create table t (x int)'   # DDL is allowed here, and audited"
    );
    println!(
        "  psql \"$DATABASE_URL\" -c 'drop table notes'           # ...and refused on the runtime URL"
    );
    println!("\nPress Ctrl-C to stop and remove everything.");

    tokio::select! {
        r = proxy.serve(listener) => r.context("proxy listener failed")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(cluster);
    println!("rolegate demo stopped; the cluster is removed.");
    Ok(())
}
