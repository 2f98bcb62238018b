//! Live reload: on `SIGHUP`, or when the config file or any file it names
//! (`*_file` secrets, keys, TLS material) changes, load the config again.
//! A valid new config is swapped in for new logins (open sessions keep
//! their upstream connections); an invalid one is refused and the old one
//! stays. Either way a log event says what happened.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{Config, Credentials, Sources};
use crate::server::Proxy;

/// What changed between two configs, in words (never values of secrets).
pub fn diff(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    clients_diff(old, new, &mut out);
    services_diff(old, new, &mut out);
    migration_diff(old, new, &mut out);
    if format!("{:?}", old.policy) != format!("{:?}", new.policy) {
        out.push("policy changed".into());
    }
    let limits = |c: &Config| {
        let l = &c.listen;
        (
            l.max_connections,
            l.startup_timeout,
            l.idle_timeout,
            l.shutdown_timeout,
        )
    };
    if limits(old) != limits(new) {
        out.push("listen limits changed".into());
    }
    if old.listen.address != new.listen.address || old.admin_address != new.admin_address {
        out.push("listen.address / admin.address changed: takes effect after a restart".into());
    }
    out
}

fn clients_diff(old: &Config, new: &Config, out: &mut Vec<String>) {
    let old_clients: BTreeSet<&String> = old.clients.keys().collect();
    let new_clients: BTreeSet<&String> = new.clients.keys().collect();
    for c in new_clients.difference(&old_clients) {
        out.push(format!("client {c} added"));
    }
    for c in old_clients.difference(&new_clients) {
        out.push(format!("client {c} removed"));
    }
    for c in old_clients.intersection(&new_clients) {
        if let (Some(a), Some(b)) = (old.clients.get(*c), new.clients.get(*c)) {
            if a.secret_digest != b.secret_digest {
                out.push(format!("client {c} password changed"));
            }
            if a.service != b.service {
                out.push(format!("client {c} service changed"));
            }
        }
    }
}

fn services_diff(old: &Config, new: &Config, out: &mut Vec<String>) {
    for (name, s) in &new.services {
        let Some(o) = old.services.get(name) else {
            out.push(format!("service {name} added"));
            continue;
        };
        if o.runtime.password != s.runtime.password {
            out.push(format!("service {name} runtime password changed"));
        }
        let endpoint = |c: &Credentials| (c.user.clone(), c.host.clone(), c.port);
        if endpoint(&o.runtime) != endpoint(&s.runtime) {
            out.push(format!("service {name} runtime endpoint or user changed"));
        }
        let (om, nm) = (o.migration.as_ref(), s.migration.as_ref());
        if om.map(|m| &m.password) != nm.map(|m| &m.password) {
            out.push(format!("service {name} migration password changed"));
        }
        if om.map(endpoint) != nm.map(endpoint) {
            out.push(format!("service {name} migration endpoint or user changed"));
        }
    }
    for name in old.services.keys() {
        if !new.services.contains_key(name) {
            out.push(format!("service {name} removed"));
        }
    }
}

fn migration_diff(old: &Config, new: &Config, out: &mut Vec<String>) {
    if format!("{:?}", old.migration.windows) != format!("{:?}", new.migration.windows) {
        out.push("migration windows changed".into());
    }
    let keys = |c: &Config| {
        let m = &c.migration;
        m.keys
            .iter()
            .map(|k| (k.kid.clone(), k.material.clone()))
            .chain(
                m.jwks
                    .iter()
                    .map(|j| (Some(j.issuer.clone()), format!("{j:?}"))),
            )
            .collect::<Vec<_>>()
    };
    if keys(old) != keys(new) {
        out.push("migration keys changed".into());
    }
    if old.migration.environment != new.migration.environment
        || old.migration.grace != new.migration.grace
    {
        out.push("migration settings changed".into());
    }
}

/// Load the config again and swap it in if it is valid.
pub fn reload_once(proxy: &Proxy, sources: &Sources, trigger: &str) {
    let old = proxy.runtime().config.clone();
    match Config::load(sources) {
        Ok(new) => {
            for note in new.access.notes() {
                tracing::warn!(event = "migration_keys", note = %note, "migration key note");
            }
            let changes = diff(&old, &new);
            // Unchanged issuers keep their fetcher and keys; new ones start.
            new.access.start_fetchers();
            proxy.replace_config(new);
            crate::metrics::config_reload(true);
            tracing::info!(
                event = "config_reloaded",
                trigger,
                changes = %if changes.is_empty() { "none".to_string() } else { changes.join("; ") },
                "configuration reloaded"
            );
        }
        Err(e) => {
            crate::metrics::config_reload(false);
            tracing::error!(event = "config_reload_failed", trigger, error = %e, "new configuration refused; keeping the old one");
        }
    }
}

/// Watch for SIGHUP and file changes and reload, until the process ends.
pub async fn run(proxy: Arc<Proxy>, mut sources: Sources) {
    // Re-read the process environment on every reload so `*_env` secrets
    // rotated by a supervisor are seen too.
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    // Held for its lifetime: dropping the watcher stops the watch.
    let mut _watcher = start_watcher(tx.clone(), &proxy.runtime().config.files);
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the SIGHUP handler; reload by file change only");
            None
        }
    };
    loop {
        let trigger = tokio::select! {
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "sighup",
            Some(()) = rx.recv() => {
                // Editors and k8s secret volumes change files in several
                // steps; wait for them to settle.
                tokio::time::sleep(Duration::from_millis(300)).await;
                while rx.try_recv().is_ok() {}
                "file_change"
            }
        };
        sources.env = std::env::vars().collect();
        let before: Vec<PathBuf> = proxy.runtime().config.files.clone();
        reload_once(&proxy, &sources, trigger);
        let after = proxy.runtime().config.files.clone();
        if before != after {
            _watcher = start_watcher(tx.clone(), &after);
        }
    }
}

/// Watch the parent directory of every file: k8s secret volumes replace
/// files by swapping a symlink, which a watch on the file itself misses.
fn start_watcher(
    tx: mpsc::UnboundedSender<()>,
    files: &[PathBuf],
) -> Option<notify::RecommendedWatcher> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let abs: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            if f.is_absolute() {
                f.clone()
            } else {
                cwd.join(f)
            }
        })
        .collect();
    let wanted = abs.clone();
    let mut watcher =
        match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && !matches!(ev.kind, notify::EventKind::Access(_))
                && ev.paths.iter().any(|p| {
                    // The file itself, or a Kubernetes atomic-writer swap
                    // (`..data` and timestamped `..` directories) beside it.
                    let k8s_swap = p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(".."));
                    wanted
                        .iter()
                        .any(|w| p == w || (k8s_swap && p.parent() == w.parent()))
                })
            {
                let _ = tx.send(());
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch config files; reload with SIGHUP");
                return None;
            }
        };
    let dirs: BTreeSet<PathBuf> = abs
        .iter()
        .filter_map(|f| f.parent().map(|p| p.to_path_buf()))
        .collect();
    for d in dirs {
        if let Err(e) = watcher.watch(&d, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch a config directory");
        }
    }
    Some(watcher)
}
