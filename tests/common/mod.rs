//! The test harness: one throwaway PostgreSQL cluster per test binary
//! (initdb in a temp dir, SCRAM, TLS with rcgen certificates, a random
//! loopback port), provisioned from `migrations/`, and `rolegate serve`
//! started as the built binary for each test with its own config.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rolegate::demo::cluster::{Cluster, ClusterOptions, RoleModel, TlsPem};

pub mod raw;

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// A CA that did not sign anything we use.
    pub wrong_ca_file: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

fn make_ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("ca key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("ca cert");
    (params, key, cert.pem())
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("pki dir");
        let (ca_params, ca_key, ca_pem) = make_ca("rolegate test CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let (_, _, wrong_pem) = make_ca("some other CA");
        let write = |name: &str, data: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, data).expect("write pki file");
            p
        };
        Pki {
            ca_file: write("ca.crt", &ca_pem),
            cert_file: write("server.crt", &cert.pem()),
            key_file: write("server.key", &key.serialize_pem()),
            wrong_ca_file: write("wrong-ca.crt", &wrong_pem),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            dir,
        }
    }
}

pub struct Harness {
    pub host: String,
    pub port: u16,
    pub superuser_password: String,
    pub model: RoleModel,
    pub pki: Pki,
    /// The `web` and `worker` clients' verifiers in `base_config`.
    pub web_verifier: String,
    pub worker_verifier: String,
    cluster: Mutex<Option<Cluster>>,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();

extern "C" fn stop_cluster_at_exit() {
    if let Some(h) = HARNESS.get()
        && let Ok(mut c) = h.cluster.lock()
    {
        // Dropping stops postgres and removes the data directory.
        c.take();
    }
}

/// The cluster for this test binary, started on first use.
pub fn harness() -> &'static Harness {
    HARNESS.get_or_init(|| {
        let pki = Pki::new();
        let cluster = Cluster::start(ClusterOptions {
            tls: Some(TlsPem {
                cert_pem: pki.cert_pem.clone(),
                key_pem: pki.key_pem.clone(),
            }),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL cluster: {e}"));
        let model = RoleModel::example();
        cluster
            .provision(&model)
            .unwrap_or_else(|e| panic!("cannot provision the test cluster: {e}"));
        // SAFETY: registering a plain extern "C" fn with atexit has no
        // preconditions; statics are never dropped, so this is how the
        // cluster is stopped when the test binary exits.
        unsafe {
            libc::atexit(stop_cluster_at_exit);
        }
        Harness {
            host: cluster.host.clone(),
            port: cluster.port,
            superuser_password: cluster.superuser_password.clone(),
            model,
            pki,
            web_verifier: rolegate::client_auth::hash_password(WEB_PASSWORD),
            worker_verifier: rolegate::client_auth::hash_password(WORKER_PASSWORD),
            cluster: Mutex::new(Some(cluster)),
        }
    })
}

impl Harness {
    /// Run SQL with psql directly against the cluster (not through the proxy).
    pub fn psql_as(&self, user: &str, password: &str, sql: &str) -> String {
        let guard = self.cluster.lock().expect("cluster lock");
        let c = guard.as_ref().expect("cluster running");
        c.psql(user, password, &self.model.database, sql)
            .unwrap_or_else(|e| panic!("psql as {user} failed: {e}"))
    }

    pub fn psql_super(&self, sql: &str) -> String {
        self.psql_as("postgres", &self.superuser_password.clone(), sql)
    }

    pub fn psql_migrator(&self, sql: &str) -> String {
        self.psql_as(&self.model.migrator, &self.model.migrator_password, sql)
    }

    pub fn with_cluster<R>(&self, f: impl FnOnce(&mut Cluster) -> R) -> R {
        let mut guard = self.cluster.lock().expect("cluster lock");
        f(guard.as_mut().expect("cluster running"))
    }

    /// A direct (not proxied) connection string to the cluster.
    /// `pgbench -i -s 1` on the harness database, directly, as the
    /// migration role (whose default privileges give the runtime role DML).
    pub fn pgbench_init(&self) {
        let init = std::process::Command::new(pgbench_bin())
            .args(["-i", "-q", "-s", "1", "-h", &self.host])
            .args(["-p", &self.port.to_string()])
            .args(["-U", &self.model.migrator, &self.model.database])
            .env("PGPASSWORD", &self.model.migrator_password)
            .output()
            .expect("pgbench -i");
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
    }

    pub fn direct_url(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@{}:{}/{}?sslmode=disable",
            self.host, self.port, self.model.database
        )
    }

    /// The standard test config: clients `web` and `worker`, upstream TLS
    /// verify-full against the harness CA.
    pub fn base_config(&self, listen_port: u16, admin_port: u16) -> String {
        format!(
            r#"[admin]
address = "127.0.0.1:{admin_port}"

[listen]
address = "127.0.0.1:{listen_port}"
[listen.tls]
mode = "allow"
cert_file = "{cert}"
key_file = "{key}"

[upstream]
host = "localhost"
port = {port}
database = "{db}"
tls = "verify-full"
ca_file = "{ca}"
[upstream.runtime]
user = "{runtime}"
password = "{runtime_pw}"
[upstream.migration]
user = "{migrator}"
password = "{migrator_pw}"

[[clients]]
name = "web"
password_scram = "{web}"

[[clients]]
name = "worker"
password_scram = "{worker}"
"#,
            cert = self.pki.cert_file.display(),
            key = self.pki.key_file.display(),
            ca = self.pki.ca_file.display(),
            port = self.port,
            db = self.model.database,
            runtime = self.model.runtime,
            runtime_pw = self.model.runtime_password,
            migrator = self.model.migrator,
            migrator_pw = self.model.migrator_password,
            web = self.web_verifier,
            worker = self.worker_verifier,
        )
    }

    /// Start `rolegate serve` with the standard config.
    pub fn start_proxy(&self) -> ProxyProcess {
        self.start_proxy_with(|c| c)
    }

    /// Start `rolegate serve` with the standard config, edited by `edit`.
    pub fn start_proxy_with(&self, edit: impl Fn(String) -> String) -> ProxyProcess {
        for _ in 0..5 {
            let port = rolegate::demo::cluster::free_port().expect("free port");
            let admin_port = rolegate::demo::cluster::free_port().expect("free port");
            let config = edit(self.base_config(port, admin_port));
            match ProxyProcess::start(&config, port, &[]) {
                Ok(mut p) => {
                    p.admin_port = admin_port;
                    return p;
                }
                Err(log) if log.contains("cannot listen") => continue,
                Err(log) => panic!("rolegate did not start:\n{log}"),
            }
        }
        panic!("rolegate could not find a free port");
    }
}

pub const WEB_PASSWORD: &str = "web-secret-Pa55";
pub const WORKER_PASSWORD: &str = "worker-secret-Pa55";

pub struct ProxyProcess {
    child: Child,
    pub port: u16,
    /// The admin port when started through `Harness::start_proxy*`.
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl ProxyProcess {
    /// Start the binary and wait until it accepts connections. On failure
    /// returns its output.
    pub fn start(config: &str, port: u16, env: &[(&str, &str)]) -> Result<ProxyProcess, String> {
        let dir = tempfile::tempdir().expect("proxy dir");
        let config_path = dir.path().join("rolegate.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = dir.path().join("rolegate.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let err_file = log_file.try_clone().expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rolegate"));
        cmd.args(["serve", "--config"])
            .arg(&config_path)
            .env_remove("ROLEGATE_CONFIG")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn rolegate");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return Err(std::fs::read_to_string(&log).unwrap_or_default());
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(ProxyProcess {
                    child,
                    port,
                    admin_port: 0,
                    dir,
                    log,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!(
                    "timed out waiting for rolegate to listen\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, user: &str, password: &str, sslmode: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{}?sslmode={sslmode}",
            self.port,
            harness().model.database
        )
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit code once the process has exited.
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().and_then(|s| s.code())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A rustls client config trusting the harness CA.
pub fn client_tls(ca_file: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca_file).expect("read ca");
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("ca pem")).expect("add ca");
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls versions")
    .with_root_certificates(roots)
    .with_no_client_auth()
}

/// Connect with tokio-postgres over TLS (verifying the proxy's certificate)
/// and drive the connection on a background task.
pub async fn connect_tls(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(&harness().pki.ca_file));
    let (client, conn) = tokio_postgres::connect(url, tls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Connect with tokio-postgres in plaintext.
pub async fn connect_plain(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The SQLSTATE of a tokio-postgres error, if the server (or proxy) sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

/// Find `psql` (the client ships with the server packages).
/// The cluster's own pgbench, else the one on PATH.
pub fn pgbench_bin() -> PathBuf {
    let bindir = rolegate::demo::cluster::Cluster::find_bindir().expect("bindir");
    if bindir.join("pgbench").exists() {
        bindir.join("pgbench")
    } else {
        "pgbench".into()
    }
}

pub fn psql_bin() -> PathBuf {
    if let Ok(dir) = Cluster::find_bindir() {
        let p = dir.join("psql");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("psql")
}

/// Run psql against a URL with stdin, returning (status ok, stdout, stderr).
pub fn psql_url(url: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(psql_bin())
        .arg(url)
        .args(["-X", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env("PGSSLROOTCERT", &harness().pki.ca_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn psql");
    if let Some(mut s) = child.stdin.take() {
        s.write_all(stdin.as_bytes()).expect("psql stdin");
    }
    let out = child.wait_with_output().expect("psql output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// GET a path on the admin port: (status, body). A test-side probe only;
/// the product's own HTTP goes through axum/hyper.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
