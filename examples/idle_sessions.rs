//! Open N idle PostgreSQL sessions and hold them, for measuring a proxy's
//! memory per idle session (`benches/pgbench.sh` uses it against rolegate
//! and PgBouncer).
//!
//! ```sh
//! cargo run --release --example idle_sessions -- 'postgres://web:PW@127.0.0.1:6432/app?sslmode=prefer' 1000
//! ```
//!
//! Each session logs in (TLS per the URL's `sslmode`, as libpq reads it:
//! `disable`, `prefer`, `require`, or `verify-ca`/`verify-full` against the
//! CA in `PGSSLROOTCERT`), runs `SELECT 1`, then stays open. Once all are up
//! it prints `READY <n>` on stdout and waits for SIGINT or SIGTERM. Any
//! failed login or query ends the program with exit code 1.
//! `IDLE_CONCURRENCY` (default 32) bounds how many logins run at once.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use rolegate::tls::{UpstreamTls, UpstreamTlsMode};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: idle_sessions <postgres-url> <count>";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idle_sessions: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, count] = args.as_slice() else {
        anyhow::bail!("{USAGE}");
    };
    let count: usize = count
        .parse()
        .map_err(|_| anyhow::anyhow!("count {count:?} is not a number; {USAGE}"))?;
    let concurrency: usize = std::env::var("IDLE_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(32);

    let (url, mode) = split_sslmode(url)?;
    let root = match mode {
        UpstreamTlsMode::VerifyCa | UpstreamTlsMode::VerifyFull => Some(
            std::env::var_os("PGSSLROOTCERT")
                .map(PathBuf::from)
                .ok_or_else(|| {
                    anyhow::anyhow!("sslmode verify-ca/verify-full needs PGSSLROOTCERT=<CA file>")
                })?,
        ),
        _ => None,
    };
    let tls = UpstreamTls::new(mode, root.as_deref())?;
    let connector = tls
        .config
        .map(|c| tokio_postgres_rustls::MakeRustlsConnect::new((*c).clone()));

    let started = Instant::now();
    // Each login is a full SCRAM exchange; bounded so a 2-core machine is not
    // flooded past the proxy's startup timeout.
    let results: Vec<anyhow::Result<tokio_postgres::Client>> = stream::iter(0..count)
        .map(|_| {
            let url = url.clone();
            let connector = connector.clone();
            async move { open(&url, connector).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut clients = Vec::with_capacity(count);
    let mut first_error = None;
    for r in results {
        match r {
            Ok(c) => clients.push(c),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        anyhow::bail!(
            "{} of {count} sessions failed; first error: {e:#}",
            count - clients.len()
        );
    }
    eprintln!(
        "idle_sessions: {} sessions open in {:.1}s",
        clients.len(),
        started.elapsed().as_secs_f64()
    );
    let mut out = tokio::io::stdout();
    out.write_all(format!("READY {}\n", clients.len()).as_bytes())
        .await?;
    out.flush().await?;

    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(clients);
    Ok(())
}

/// tokio-postgres knows only disable/prefer/require: strip `sslmode` from the
/// URL and apply it ourselves, with libpq's meaning.
fn split_sslmode(raw: &str) -> anyhow::Result<(String, UpstreamTlsMode)> {
    let mut url = url::Url::parse(raw).map_err(|e| anyhow::anyhow!("bad URL: {e}"))?;
    let mut mode = UpstreamTlsMode::Prefer;
    let mut rest = Vec::new();
    for (k, v) in url.query_pairs() {
        if k == "sslmode" {
            mode = UpstreamTlsMode::ALL
                .into_iter()
                .find(|m| m.as_str() == v)
                .ok_or_else(|| anyhow::anyhow!("unknown sslmode {v:?}"))?;
        } else {
            rest.push((k.into_owned(), v.into_owned()));
        }
    }
    let tp_mode = match mode {
        UpstreamTlsMode::Disable => "disable",
        UpstreamTlsMode::Prefer => "prefer",
        _ => "require",
    };
    url.query_pairs_mut()
        .clear()
        .extend_pairs(rest)
        .append_pair("sslmode", tp_mode);
    Ok((url.to_string(), mode))
}

async fn open(
    url: &str,
    connector: Option<tokio_postgres_rustls::MakeRustlsConnect>,
) -> anyhow::Result<tokio_postgres::Client> {
    let login = async {
        let client = match connector {
            Some(tls) => {
                let (client, conn) = tokio_postgres::connect(url, tls).await?;
                tokio::spawn(conn);
                client
            }
            None => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                client
            }
        };
        client.simple_query("SELECT 1").await?;
        Ok::<_, tokio_postgres::Error>(client)
    };
    // Generous: a loaded 2-core machine can take seconds per SCRAM burst.
    match tokio::time::timeout(Duration::from_secs(60), login).await {
        Ok(r) => Ok(r?),
        Err(_) => anyhow::bail!("login + SELECT 1 took more than 60s"),
    }
}
