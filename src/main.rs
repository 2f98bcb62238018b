//! The `rolegate` command line: `serve` (the default), `demo`, `scram-hash`.
//! Errors become one line on stderr and exit code 1; usage errors exit 2.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use rolegate::config::{Config, Sources};

/// The version `--version` prints: the crate version and the git commit.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ROLEGATE_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "rolegate",
    version = VERSION,
    about = "PostgreSQL proxy that enforces role separation on the wire"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand, rolegate runs `serve` with these arguments.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// Config file (default: config/rolegate.toml if it exists).
    #[arg(long, env = "ROLEGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Logs: one JSON object a line on stdout, or text for humans on stderr.
    #[arg(long, value_enum, default_value = "json", env = "ROLEGATE_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default command).
    Serve(ServeArgs),
    /// Start a throwaway PostgreSQL with the role model and a proxy in front of it.
    Demo,
    /// Read a password on stdin and print its SCRAM-SHA-256 verifier for a [[clients]] entry.
    ScramHash,
    /// Migrator tokens: make a signing key pair, or sign a token.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// GET an admin URL and exit 0 when it answers 200 (for container HEALTHCHECKs).
    Healthcheck {
        /// The admin URL to GET.
        #[arg(long, default_value = "http://127.0.0.1:9187/healthz")]
        url: String,
    },
    /// Show the runtime policy's decision for SQL: exit 0 if allowed, 1 if refused.
    Explain {
        /// Read `[policy]` switches from this config (only that table is read).
        #[arg(long, env = "ROLEGATE_CONFIG")]
        config: Option<PathBuf>,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// The SQL text, or `-` to read it from stdin.
        sql: String,
    },
    /// Summarise the refusals in JSON log files: what enforcing would break.
    Report {
        /// One JSON object with every group instead of a table.
        #[arg(long)]
        json: bool,
        /// rolegate's JSON log files (`-` for stdin).
        #[arg(required = true)]
        logs: Vec<PathBuf>,
    },
    /// Validate the config and audit the upstream privilege model; exit 1 on any FAIL.
    Check {
        /// Config file (default: config/rolegate.toml if it exists).
        #[arg(long, env = "ROLEGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Only validate the config and secrets; do not connect upstream.
        #[arg(long)]
        offline: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Write an Ed25519 key pair (migrator.key, migrator.pub) into DIR.
    Keygen {
        /// The directory to write into (created if missing; existing keys are never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a signed migrator token (JWT, EdDSA).
    Issue(IssueArgs),
}

#[derive(clap::Args)]
struct IssueArgs {
    /// The private key from `token keygen` (migrator.key).
    #[arg(long)]
    key: PathBuf,
    /// Who is migrating (the token's `sub`, shown in the audit log).
    #[arg(long)]
    subject: String,
    /// How long the token is valid, e.g. 30m.
    #[arg(long, default_value = "30m")]
    ttl: String,
    /// The environment it is minted for: staging, prod or replica.
    #[arg(long)]
    env: Option<String>,
    /// Confirm a production migration (required when environment = "prod").
    #[arg(long)]
    confirm: bool,
    /// The [[services]] entry whose migration role to use.
    #[arg(long)]
    service: Option<String>,
    /// Key id for rotation (must match the kid of a [[migration.keys]] entry).
    #[arg(long)]
    kid: Option<String>,
}

fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    use rolegate::migration::token;
    match cmd {
        TokenCommand::Keygen { out } => {
            let (private, public) = token::keygen(&out)?;
            println!(
                "wrote {} (keep secret) and {}",
                private.display(),
                public.display()
            );
            // Relative paths in a config resolve from the config file's
            // directory, so the snippet names the key by its absolute path.
            let absolute = std::fs::canonicalize(&public).unwrap_or(public);
            println!(
                "add to the config:\n[[migration.keys]]\npublic_key_file = \"{}\"",
                absolute.display()
            );
        }
        TokenCommand::Issue(args) => {
            let key_pem = std::fs::read_to_string(&args.key)
                .with_context(|| format!("cannot read --key {}", args.key.display()))?;
            let ttl = humantime::parse_duration(&args.ttl)
                .with_context(|| format!("--ttl {:?} is not a duration like 30m", args.ttl))?;
            let opts = token::IssueOptions {
                subject: args.subject,
                ttl,
                env: args.env,
                confirm: args.confirm,
                service: args.service,
                kid: args.kid,
                now: jiff::Timestamp::now(),
            };
            println!("{}", token::issue(&key_pem, opts)?);
        }
    }
    Ok(())
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stdout)
            .init(),
        LogFormat::Text => builder.with_writer(std::io::stderr).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => {
            init_logging(args.log_format, "info");
            serve(args.config)
        }
        // The demo sets up its own logging (a JSON file and terminal lines).
        Command::Demo => run_async(rolegate::demo::run()),
        Command::ScramHash => scram_hash(),
        Command::Token { command } => token(command),
        Command::Healthcheck { url } => run_async(async move {
            rolegate::admin::healthcheck(&url)
                .await
                .map_err(anyhow::Error::msg)
        }),
        Command::Explain { config, json, sql } => match explain(config, json, &sql) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Report { json, logs } => report(json, &logs),
        Command::Check { config, offline } => {
            init_logging(LogFormat::Text, "warn");
            match check(config, offline) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::from(1),
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rolegate: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_async<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

fn serve(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let sources = Sources::from_process(config_path);
    let config = Config::load(&sources).context("config error")?;
    run_async(async move {
        let listener = bind(&config.listen.address, "listen.address").await?;
        let admin = bind(&config.admin_address, "admin.address").await?;
        let metrics = rolegate::admin::install_recorder()?;
        privilege_audit(&config).await?;
        migration_keys(&config);
        log_listening(&listener, &admin)?;
        let proxy = rolegate::server::Proxy::new(config);
        let readiness = Arc::new(rolegate::admin::Readiness::new(proxy.clone()));
        tokio::spawn(async move {
            if let Err(e) = rolegate::admin::serve(admin, metrics, readiness).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
        tokio::spawn(rolegate::reload::run(proxy.clone(), sources));
        tokio::spawn(proxy.clone().watch_windows());
        let signal = until_signal(proxy.clone(), listener).await?;
        tracing::info!(
            event = "shutdown",
            signal,
            sessions = proxy.active(),
            "shutting down: no new connections; draining sessions"
        );
        proxy.shutdown().await;
        tracing::info!(event = "shutdown_complete", "rolegate stopped");
        Ok(())
    })
}

async fn bind(address: &str, key: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} ({key})"))
}

/// The privilege audit of `rolegate check`: logged, and fatal only with
/// upstream.strict (then it must finish before serving).
async fn privilege_audit(config: &Config) -> anyhow::Result<()> {
    if !config.upstream.strict {
        let audit_config = config.clone();
        tokio::spawn(async move { log_findings(&rolegate::check::audit(&audit_config).await) });
        return Ok(());
    }
    let findings = rolegate::check::audit(config).await;
    log_findings(&findings);
    let failed: Vec<_> = findings.iter().filter(|f| !f.pass).collect();
    if let Some(first) = failed.first() {
        anyhow::bail!(
            "upstream.strict = true and the privilege check found {} failure(s); first: {}",
            failed.len(),
            first
        );
    }
    Ok(())
}

/// The addresses actually bound (a configured port 0 picks one).
fn log_listening(
    listener: &tokio::net::TcpListener,
    admin: &tokio::net::TcpListener,
) -> anyhow::Result<()> {
    let bound = listener
        .local_addr()
        .context("cannot read the listen address")?;
    let admin_bound = admin
        .local_addr()
        .context("cannot read the admin address")?;
    tracing::info!(
        event = "listening",
        address = %bound,
        port = bound.port(),
        admin = %admin_bound,
        admin_port = admin_bound.port(),
        "rolegate listening"
    );
    Ok(())
}

/// Serve until SIGINT or SIGTERM (or the listener fails); names the cause.
async fn until_signal(
    proxy: Arc<rolegate::server::Proxy>,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    Ok(tokio::select! {
        r = proxy.serve(listener) => {
            r.context("listener failed")?;
            "listener closed"
        }
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    })
}

/// Log the migration key notes and start fetching issuer keys in the
/// background: serving never waits for an issuer, and migration logins
/// work once its keys arrive.
fn migration_keys(config: &Config) {
    for note in config.access.notes() {
        tracing::warn!(event = "migration_keys", note = %note, "migration key note");
    }
    config.access.start_fetchers();
    if config.migration.keys.is_empty() && config.migration.jwks.is_empty() {
        tracing::info!(
            event = "migration_keys",
            "no migration keys configured: migration logins are refused"
        );
    }
}

fn log_findings(findings: &[rolegate::check::Finding]) {
    for f in findings {
        if f.pass {
            tracing::debug!(event = "privilege_check", pass = true, finding = %f.what);
        } else {
            tracing::warn!(event = "privilege_check", pass = false, finding = %f.what, fix = f.fix.as_deref().unwrap_or(""), "privilege model check failed");
        }
    }
}

fn check(config_path: Option<PathBuf>, offline: bool) -> anyhow::Result<bool> {
    let config = Config::load(&Sources::from_process(config_path)).context("config error")?;
    println!(
        "PASS configuration and secrets load ({} client(s), {} service(s))",
        config.clients.len(),
        config.services.len()
    );
    if config.clients.is_empty() {
        println!(
            "WARN no [[clients]] are configured: every runtime login will be refused; add one with a password_scram from `rolegate scram-hash`"
        );
    }
    if offline {
        return Ok(true);
    }
    let findings = run_async_value(async move {
        let mut findings = rolegate::check::audit(&config).await;
        findings.extend(rolegate::check::issuers(&config).await);
        findings
    })?;
    for f in &findings {
        println!("{f}");
    }
    Ok(findings.iter().all(|f| f.pass))
}

fn run_async_value<T, F: std::future::Future<Output = T>>(f: F) -> anyhow::Result<T> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f))
}

/// `rolegate explain`: the whole text's verdict (what the proxy does) and
/// each statement's. True when the text is allowed.
fn explain(config: Option<PathBuf>, json: bool, sql: &str) -> anyhow::Result<bool> {
    use std::io::Read;
    let text = if sql == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read the SQL from stdin")?;
        buf
    } else {
        sql.as_bytes().to_vec()
    };
    let policy = match config {
        Some(path) => rolegate::config::load_policy(&path).context("config error")?,
        None => rolegate::config::PolicyConfig::default(),
    };
    let switches = rolegate::policy::Switches::from(&policy);
    let (whole, each) = rolegate::policy::explain(&text, &switches);
    let verdict = |v: &rolegate::policy::Verdict| {
        serde_json::json!({
            "verdict": if v.allowed { "allowed" } else { "refused" },
            "class": v.class.as_str(),
            "reason": v.reason,
            "path": v.path.as_str(),
        })
    };
    if json {
        let statements: Vec<_> = each
            .iter()
            .map(|e| {
                let mut v = verdict(&e.verdict);
                v["fingerprint"] = e.fingerprint.clone().into();
                v
            })
            .collect();
        let mut out = verdict(&whole);
        out["statements"] = statements.into();
        println!("{out}");
    } else {
        for (i, e) in each.iter().enumerate() {
            let v = &e.verdict;
            let word = if v.allowed { "allowed" } else { "refused" };
            println!(
                "{:>3}  {word:<8} {:<18} {:<6} {}",
                i + 1,
                v.class.as_str(),
                v.path.as_str(),
                e.fingerprint
            );
            if !v.allowed {
                println!("     {}", v.reason);
            }
        }
        let word = if whole.allowed { "ALLOWED" } else { "REFUSED" };
        println!("{word}: {}", whole.reason);
    }
    Ok(whole.allowed)
}

/// `rolegate report`: group the `statement_refused` events of the logs.
fn report(json: bool, logs: &[PathBuf]) -> anyhow::Result<()> {
    let mut report = rolegate::report::Report::default();
    for path in logs {
        if path.as_os_str() == "-" {
            report.read(std::io::stdin().lock())
        } else {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            report.read(std::io::BufReader::new(file))
        }
        .with_context(|| format!("cannot read {}", path.display()))?;
    }
    let rows = report.rows();
    if json {
        println!(
            "{}",
            serde_json::json!({ "events": report.events, "groups": rows })
        );
        return Ok(());
    }
    println!(
        "{:>7}  {:<18} {:<30} {:<25} {:<25} statement",
        "count", "class", "identities", "first seen", "last seen"
    );
    for r in &rows {
        let identities: Vec<&str> = r.identities.iter().map(String::as_str).collect();
        println!(
            "{:>7}  {:<18} {:<30} {:<25} {:<25} {}",
            r.count,
            r.class,
            identities.join(","),
            r.first_seen,
            r.last_seen,
            r.fingerprint
        );
        println!("{:>7}  {}", "", r.reason);
    }
    let classes: Vec<String> = report
        .by_class()
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    println!(
        "{} refusal(s) in {} group(s){}{}",
        report.events,
        rows.len(),
        if classes.is_empty() { "" } else { ": " },
        classes.join(", ")
    );
    Ok(())
}

fn scram_hash() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        // Typed by a person: not echoed.
        line = rpassword::prompt_password("Password: ")
            .context("cannot read the password from the terminal")?;
    } else {
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
    }
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        anyhow::bail!(
            "empty password on stdin; pipe one in, e.g. `printf %s \"$PW\" | rolegate scram-hash`"
        );
    }
    println!("{}", rolegate::client_auth::hash_password(password));
    Ok(())
}
