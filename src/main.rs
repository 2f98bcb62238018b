//! The `rolegate` command line: `serve` (the default), `demo`, `scram-hash`.
//! Errors become one line on stderr and exit code 1; usage errors exit 2.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use rolegate::config::{Config, Sources};

#[derive(Parser)]
#[command(
    name = "rolegate",
    version,
    about = "PostgreSQL proxy that enforces role separation on the wire"
)]
struct Cli {
    /// Log format on stdout: one JSON object a line, or text for humans.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "json",
        env = "ROLEGATE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default command).
    Serve {
        /// Config file (default: config/rolegate.toml if it exists).
        #[arg(long, env = "ROLEGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Start a throwaway PostgreSQL with the role model and a proxy in front of it.
    Demo,
    /// Read a password on stdin and print its SCRAM-SHA-256 verifier for a [[clients]] entry.
    ScramHash,
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
            .with_writer(std::io::stdout)
            .init(),
        LogFormat::Text => builder.with_writer(std::io::stderr).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => {
            init_logging(cli.log_format, "info");
            serve(config)
        }
        Command::Demo => {
            // The demo talks to a person: text logs, warnings only, on stderr.
            init_logging(LogFormat::Text, "warn");
            run_async(rolegate::demo::run())
        }
        Command::ScramHash => scram_hash(),
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
    let config = Config::load(&Sources::from_process(config_path)).context("config error")?;
    run_async(async move {
        let listener = tokio::net::TcpListener::bind(&config.listen.address)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (listen.address)",
                    config.listen.address
                )
            })?;
        tracing::info!(address = %config.listen.address, "rolegate listening");
        let proxy = rolegate::server::Proxy::new(Arc::new(config));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot install the SIGTERM handler")?;
        tokio::select! {
            r = proxy.serve(listener) => r.context("listener failed")?,
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        Ok(())
    })
}

fn scram_hash() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Password (input is echoed; end with Enter):");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        anyhow::bail!(
            "empty password on stdin; pipe one in, e.g. `printf %s \"$PW\" | rolegate scram-hash`"
        );
    }
    println!("{}", rolegate::client_auth::hash_password(password));
    Ok(())
}
