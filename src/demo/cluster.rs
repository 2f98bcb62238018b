//! Throwaway local PostgreSQL clusters, for `rolegate demo` and the test harness.
//!
//! A [`Cluster`] is a private `initdb` + `postgres` in a temporary directory,
//! listening on a random loopback port with SCRAM authentication only. It is
//! stopped and deleted on drop. [`Cluster::provision`] applies the role model
//! from `migrations/` (the same SQL operators run by hand with `psql`).

use std::ffi::CString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A free TCP port on 127.0.0.1, never 5432 (where a real server usually is).
///
/// The port is only free at the time of the call: the caller must be ready
/// to retry if someone else binds it first.
pub fn free_port() -> io::Result<u16> {
    for _ in 0..16 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        if port != 5432 {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "no free loopback port other than 5432",
    ))
}

const ROLES_SQL: &str = include_str!("../../migrations/001_roles.sql");
const APP_SCHEMA_SQL: &str = include_str!("../../migrations/002_app_schema.sql");

/// Used only when running as root and `nobody` does not exist.
const FALLBACK_USER: &str = "rolegate-pg";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 5;

/// A server certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct TlsPem {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsPem")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The roles and database that `migrations/001_roles.sql` provisions.
#[derive(Clone)]
pub struct RoleModel {
    pub database: String,
    /// Owns the database and schema public; runs DDL. BYPASSRLS.
    pub migrator: String,
    pub migrator_password: String,
    /// The application's role: DML only, subject to RLS.
    pub runtime: String,
    pub runtime_password: String,
    /// Optional worker role, `(name, password)`: DML and BYPASSRLS.
    pub service: Option<(String, String)>,
    /// Also grant UPDATE on sequences (`setval`) to runtime and service
    /// (`-v sequence_update=on`); off by default.
    pub sequence_update: bool,
}

impl RoleModel {
    /// `app` / `app_migrator` / `app_user` / `app_service`, with random passwords.
    pub fn example() -> Self {
        RoleModel {
            database: "app".into(),
            migrator: "app_migrator".into(),
            migrator_password: random_password(),
            runtime: "app_user".into(),
            runtime_password: random_password(),
            service: Some(("app_service".into(), random_password())),
            sequence_update: false,
        }
    }
}

impl fmt::Debug for RoleModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleModel")
            .field("database", &self.database)
            .field("migrator", &self.migrator)
            .field("runtime", &self.runtime)
            .field("service", &self.service.as_ref().map(|(name, _)| name))
            .finish_non_exhaustive()
    }
}

/// How to start a [`Cluster`].
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Serve TLS (`ssl=on`) with this certificate; plaintext is still allowed.
    pub tls: Option<TlsPem>,
    /// Extra server settings, passed as `-c key=value` after the defaults (so
    /// they override them).
    pub extra_conf: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH, via `pg_config --bindir`, \
         or under /usr/lib/postgresql/*/bin; install them, e.g. `apt-get install postgresql`"
    )]
    NotFound,
    #[error(
        "`psql` not found in {bindir} or on PATH; install the PostgreSQL client, \
         e.g. `apt-get install postgresql-client`"
    )]
    PsqlNotFound { bindir: PathBuf },
    #[error(
        "running as root, which PostgreSQL refuses, and there is no unprivileged user to run it as \
         (`nobody` does not exist and `useradd --system {FALLBACK_USER}` failed: {detail}); \
         create an unprivileged user or run as a non-root user"
    )]
    NoUnprivilegedUser { detail: String },
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "initdb failed ({status}); check that the PostgreSQL installation is complete. Its output:\n{output}"
    )]
    Initdb { status: String, output: String },
    #[error("PostgreSQL did not start: {reason}. Server log {log}, last lines:\n{tail}")]
    Startup {
        reason: String,
        log: PathBuf,
        tail: String,
    },
    #[error("psql {what} failed ({status}): {stderr}")]
    Psql {
        what: String,
        status: String,
        stderr: String,
    },
}

fn io_err(action: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let action = action.into();
    move |source| ClusterError::Io { action, source }
}

/// The unprivileged account the server runs as when we are root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// A running throwaway PostgreSQL server. Stopped and deleted on drop.
pub struct Cluster {
    pub host: String,
    pub port: u16,
    pub superuser: String,
    pub superuser_password: String,
    bindir: PathBuf,
    psql: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// `postgres` arguments except `-p`, kept for restarts.
    server_args: Vec<String>,
    run_as: Option<RunAs>,
    child: Option<Child>,
    dir: TempDir,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("superuser", &self.superuser)
            .field("data", &self.data)
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish_non_exhaustive()
    }
}

/// Why one launch attempt failed: a lost race for the port is worth a retry.
enum LaunchError {
    PortBusy(ClusterError),
    Failed(ClusterError),
}

impl From<LaunchError> for ClusterError {
    fn from(e: LaunchError) -> Self {
        match e {
            LaunchError::PortBusy(e) | LaunchError::Failed(e) => e,
        }
    }
}

impl Cluster {
    /// The directory holding `initdb`, `postgres` and `pg_ctl`.
    pub fn find_bindir() -> Result<PathBuf, ClusterError> {
        let has_server =
            |dir: &Path| is_executable(&dir.join("initdb")) && is_executable(&dir.join("postgres"));

        // PATH entries are often symlinks (/usr/local/bin/initdb ->
        // /usr/lib/postgresql/15/bin/initdb); `postgres` must come from the
        // same installation, so resolve to the real directory.
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let initdb = dir.join("initdb");
                if !is_executable(&initdb) {
                    continue;
                }
                if let Ok(real) = fs::canonicalize(&initdb)
                    && let Some(parent) = real.parent()
                    && has_server(parent)
                {
                    return Ok(parent.to_path_buf());
                }
            }
        }

        if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
            && out.status.success()
        {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server(&dir) {
                return Ok(dir);
            }
        }

        // Debian and Ubuntu keep server binaries off PATH, one dir per version.
        let mut best: Option<(Vec<u32>, PathBuf)> = None;
        if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(version) = name.to_str().and_then(|v| {
                    v.split('.')
                        .map(|n| n.parse::<u32>().ok())
                        .collect::<Option<Vec<u32>>>()
                }) else {
                    continue;
                };
                let bin = entry.path().join("bin");
                if has_server(&bin) && best.as_ref().is_none_or(|(v, _)| version > *v) {
                    best = Some((version, bin));
                }
            }
        }
        best.map(|(_, bin)| bin).ok_or(ClusterError::NotFound)
    }

    /// `initdb` a fresh cluster in a temporary directory and start it on a
    /// random loopback port. Returns once it accepts connections.
    pub fn start(opts: ClusterOptions) -> Result<Cluster, ClusterError> {
        let bindir = Self::find_bindir()?;
        let psql = find_psql(&bindir)?;
        // PostgreSQL refuses to run as root (CI runs as root).
        let run_as = if is_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let dir = cluster_dir(run_as)?;
        let root = dir.path().to_path_buf();
        let superuser = "postgres".to_string();
        let superuser_password = random_password();
        let data = root.join("data");
        initdb(
            &bindir,
            run_as,
            &root,
            &data,
            &superuser,
            &superuser_password,
        )?;
        let server_args = server_args(&opts, run_as, &root, &data)?;
        let log = root.join("postgres.log");
        File::create(&log).map_err(io_err(format!("create {}", log.display())))?;
        chown_tree(&root, run_as)?;

        // From here on Drop stops the server, whatever goes wrong.
        let mut cluster = Cluster {
            host: Ipv4Addr::LOCALHOST.to_string(),
            port: 0,
            superuser,
            superuser_password,
            bindir,
            psql,
            data,
            log,
            server_args,
            run_as,
            child: None,
            dir,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            cluster.port = free_port().map_err(io_err("find a free loopback port"))?;
            match cluster.launch() {
                Ok(()) => return Ok(cluster),
                // Someone took the port between free_port() and the bind.
                Err(LaunchError::PortBusy(_)) if attempt < START_ATTEMPTS => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Apply `migrations/001_roles.sql` as the superuser, then
    /// `migrations/002_app_schema.sql` as the migrator. Re-runnable.
    pub fn provision(&self, model: &RoleModel) -> Result<(), ClusterError> {
        let mut vars: Vec<(&str, &str)> = vec![
            ("database", &model.database),
            ("migrator", &model.migrator),
            ("migrator_password", &model.migrator_password),
            ("runtime", &model.runtime),
            ("runtime_password", &model.runtime_password),
        ];
        if let Some((name, password)) = &model.service {
            vars.push(("service", name));
            vars.push(("service_password", password));
        }
        vars.push((
            "sequence_update",
            if model.sequence_update { "on" } else { "off" },
        ));
        self.run_script(
            "001_roles.sql",
            ROLES_SQL,
            &self.superuser,
            &self.superuser_password,
            "postgres",
            &vars,
        )?;
        self.run_script(
            "002_app_schema.sql",
            APP_SCHEMA_SQL,
            &model.migrator,
            &model.migrator_password,
            &model.database,
            &[],
        )
    }

    /// Run `sql` with `psql -X -q -A -t -v ON_ERROR_STOP=1 -c`, over TCP with
    /// password auth, and return its trimmed output: result rows only, fields
    /// separated by `|`. `-q` drops command tags such as `SET`, so
    /// `"set app.tenant = 'acme'; select ..."` yields just the rows (psql 15+
    /// prints every statement's rows, older psql only the last one's).
    pub fn psql(
        &self,
        user: &str,
        password: &str,
        database: &str,
        sql: &str,
    ) -> Result<String, ClusterError> {
        let out = self
            .psql_command(user, password, database)
            .args(["-q", "-A", "-t", "-c", sql])
            .output()
            .map_err(io_err(format!("run {}", self.psql.display())))?;
        check_psql(out, || {
            format!("as {user} on database {database} running {sql:?}")
        })
    }

    /// Fast shutdown (SIGINT to the postmaster: abort transactions, close
    /// connections), then SIGKILL if it is still up after ~10s. A stopped
    /// cluster can be started again with [`Cluster::restart`].
    pub fn stop(&mut self) -> Result<(), ClusterError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child
            .try_wait()
            .map_err(io_err("check the postgres process"))?
            .is_some()
        {
            return Ok(());
        }
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
            // own unreaped child, so it cannot have been recycled.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => thread::sleep(Duration::from_millis(25)),
                Err(_) => break,
            }
        }
        // Backends notice the postmaster's death and exit on their own.
        let _ = child.kill();
        child
            .wait()
            .map_err(io_err("wait for the killed postgres process"))?;
        Ok(())
    }

    /// Stop the server, then start it again on the same port and data directory.
    pub fn restart(&mut self) -> Result<(), ClusterError> {
        self.stop()?;
        self.launch().map_err(ClusterError::from)
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server's log file (its stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Spawn `postgres` on `self.port` and wait until it accepts connections.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let failed = LaunchError::Failed;
        let log_start = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let log = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.log)
            .map_err(|e| failed(io_err(format!("open {}", self.log.display()))(e)))?;
        let log_err = log
            .try_clone()
            .map_err(|e| failed(io_err("duplicate the log file handle")(e)))?;
        let postgres = self.bindir.join("postgres");
        let child = server_command(&postgres, self.run_as, self.dir.path())
            .args(&self.server_args)
            .arg("-p")
            .arg(self.port.to_string())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| failed(io_err(format!("run {}", postgres.display()))(e)))?;
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // Check for exit before connecting, so we never mistake another
            // server that grabbed the port for ours.
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Ok(None)) => None,
                Some(Err(e)) => Some(format!("could not check the process: {e}")),
                None => Some("no process".into()),
            };
            if let Some(status) = exited {
                self.child = None;
                let tail = log_tail(&self.log, log_start);
                let busy =
                    tail.contains("could not bind") || tail.contains("Address already in use");
                let err = ClusterError::Startup {
                    reason: format!("postgres on port {} exited ({status})", self.port),
                    log: self.log.clone(),
                    tail,
                };
                return Err(if busy {
                    LaunchError::PortBusy(err)
                } else {
                    failed(err)
                });
            }
            let last_error = match self.psql(
                &self.superuser,
                &self.superuser_password,
                "postgres",
                "select 1",
            ) {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                let _ = self.stop();
                return Err(failed(ClusterError::Startup {
                    reason: format!(
                        "not accepting connections on port {} after {}s (last error: {last_error})",
                        self.port,
                        START_TIMEOUT.as_secs()
                    ),
                    log: self.log.clone(),
                    tail: log_tail(&self.log, log_start),
                }));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn psql_command(&self, user: &str, password: &str, database: &str) -> Command {
        let mut cmd = Command::new(&self.psql);
        // The caller's libpq settings (PGSSLMODE, PGSERVICE, PGOPTIONS, ...)
        // must not change how we reach our own throwaway server.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        cmd.env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-h", &self.host])
            .args(["-p", &self.port.to_string(), "-U", user, "-d", database])
            .stdin(Stdio::null());
        cmd
    }

    /// Run an embedded SQL file through psql, so `\gexec`, `\if` and `:'var'`
    /// work exactly as when an operator runs it by hand.
    fn run_script(
        &self,
        name: &str,
        sql: &str,
        user: &str,
        password: &str,
        database: &str,
        vars: &[(&str, &str)],
    ) -> Result<(), ClusterError> {
        // A file (not stdin) so psql's errors name the script and line.
        let (stem, ext) = name.rsplit_once('.').unwrap_or((name, "sql"));
        let mut file = tempfile::Builder::new()
            .prefix(&format!("{stem}-"))
            .suffix(&format!(".{ext}"))
            .tempfile_in(self.dir.path())
            .map_err(io_err(format!("create a temporary file for {name}")))?;
        file.write_all(sql.as_bytes())
            .and_then(|()| file.flush())
            .map_err(io_err(format!("write {}", file.path().display())))?;

        let mut cmd = self.psql_command(user, password, database);
        cmd.arg("-q");
        for (k, v) in vars {
            cmd.arg("-v").arg(format!("{k}={v}"));
        }
        let out = cmd
            .arg("-f")
            .arg(file.path())
            .output()
            .map_err(io_err(format!("run {}", self.psql.display())))?;
        check_psql(out, || {
            format!("running {name} as {user} on database {database}")
        })
        .map(drop)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn check_psql(out: Output, what: impl FnOnce() -> String) -> Result<String, ClusterError> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(ClusterError::Psql {
            what: what(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// A command for `initdb` / `postgres`, as the unprivileged user if we are root.
fn server_command(program: &Path, run_as: Option<RunAs>, home: &Path) -> Command {
    let mut cmd = Command::new(program);
    // HOME and cwd must be somewhere the server user can reach (not /root).
    cmd.current_dir(home)
        .env("HOME", home)
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    if let Some(user) = run_as {
        cmd.uid(user.uid).gid(user.gid);
    }
    cmd
}

fn find_psql(bindir: &Path) -> Result<PathBuf, ClusterError> {
    // Prefer the one matching the server: Debian's /usr/bin/psql is a wrapper.
    let beside = bindir.join("psql");
    if is_executable(&beside) {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("psql"))
        .find(|p| is_executable(p))
        .ok_or_else(|| ClusterError::PsqlNotFound {
            bindir: bindir.to_path_buf(),
        })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn unprivileged_user() -> Result<RunAs, ClusterError> {
    if let Some(user) = lookup_user("nobody").or_else(|| lookup_user(FALLBACK_USER)) {
        return Ok(user);
    }
    let detail = match Command::new("useradd")
        .args(["--system", "--no-create-home", FALLBACK_USER])
        .output()
    {
        Ok(out) if out.status.success() => String::new(),
        Ok(out) => format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => e.to_string(),
    };
    // Another thread may have created it concurrently; look again either way.
    lookup_user(FALLBACK_USER).ok_or(ClusterError::NoUnprivilegedUser { detail })
}

fn lookup_user(name: &str) -> Option<RunAs> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain data (integers and pointers); all-zero is valid.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and buf.len() is its real
    // size. getpwnam_r, unlike getpwnam, is safe with tests on many threads.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some(RunAs {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// Write a file only its owner may read, owned by the server user.
fn write_private(path: &Path, contents: &str, run_as: Option<RunAs>) -> Result<(), ClusterError> {
    let action = || format!("write {}", path.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(action()))?;
    file.write_all(contents.as_bytes())
        .map_err(io_err(action()))?;
    // mode() applies only to new files; initdb's pg_hba.conf already exists.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err(action()))?;
    if let Some(user) = run_as {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
            .map_err(io_err(format!("chown {}", path.display())))?;
    }
    Ok(())
}

/// Give `root` and everything under it to the server user.
fn chown_tree(root: &Path, run_as: Option<RunAs>) -> Result<(), ClusterError> {
    let Some(user) = run_as else {
        return Ok(());
    };
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta =
            fs::symlink_metadata(&path).map_err(io_err(format!("stat {}", path.display())))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.uid() != user.uid || meta.gid() != user.gid {
            std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid))
                .map_err(io_err(format!("chown {}", path.display())))?;
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(io_err(format!("list {}", path.display())))? {
                stack.push(
                    entry
                        .map_err(io_err(format!("list {}", path.display())))?
                        .path(),
                );
            }
        }
    }
    Ok(())
}

/// The last lines the server logged since `from` (a byte offset).
fn log_tail(log: &Path, from: u64) -> String {
    const MAX: u64 = 4096;
    let read = || -> io::Result<String> {
        let mut file = File::open(log)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(from.max(len.saturating_sub(MAX))))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) if text.trim().is_empty() => "(empty)".into(),
        Ok(text) => text,
        Err(e) => format!("(could not read the log: {e})"),
    }
}

/// A private temporary directory the server user can reach: /tmp is
/// traversable by everyone, a root TMPDIR such as /root/tmp is not, and a
/// long TMPDIR (macOS) would push the Unix socket path past its ~107-byte
/// limit, so /tmp then too.
fn cluster_dir(run_as: Option<RunAs>) -> Result<TempDir, ClusterError> {
    let parent = match std::env::temp_dir() {
        dir if run_as.is_none() && dir.as_os_str().len() <= 48 => dir,
        _ => PathBuf::from("/tmp"),
    };
    let dir = tempfile::Builder::new()
        .prefix("rolegate-pg-")
        .tempdir_in(&parent)
        .map_err(io_err(format!(
            "create a temporary directory in {}",
            parent.display()
        )))?;
    let root = dir.path();
    fs::set_permissions(root, fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("chmod 0700 {}", root.display())))?;
    chown_tree(root, run_as)?;
    Ok(dir)
}

/// `initdb` with SCRAM for everyone and the superuser's password, then a
/// `pg_hba.conf` of our own: password auth only, loopback only.
fn initdb(
    bindir: &Path,
    run_as: Option<RunAs>,
    root: &Path,
    data: &Path,
    superuser: &str,
    password: &str,
) -> Result<(), ClusterError> {
    let pwfile = root.join("pwfile");
    write_private(&pwfile, &format!("{password}\n"), run_as)?;
    let out = server_command(&bindir.join("initdb"), run_as, root)
        .arg("-D")
        .arg(data)
        .args([
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "-U",
            superuser,
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        .output()
        .map_err(io_err(format!("run {}", bindir.join("initdb").display())))?;
    let _ = fs::remove_file(&pwfile);
    if !out.status.success() {
        return Err(ClusterError::Initdb {
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    write_private(
        &data.join("pg_hba.conf"),
        "# Written by rolegate's throwaway cluster.\n\
         local all all scram-sha-256\n\
         host all all 127.0.0.1/32 scram-sha-256\n\
         host all all ::1/128 scram-sha-256\n",
        run_as,
    )
}

/// `postgres` arguments except `-p`: loopback, a private socket directory,
/// test-friendly settings, TLS when asked, then the caller's settings.
fn server_args(
    opts: &ClusterOptions,
    run_as: Option<RunAs>,
    root: &Path,
    data: &Path,
) -> Result<Vec<String>, ClusterError> {
    let sockets = root.join("sockets");
    fs::create_dir(&sockets).map_err(io_err(format!("create {}", sockets.display())))?;
    let mut conf: Vec<(String, String)> = [
        ("listen_addresses", "127.0.0.1".to_string()),
        ("unix_socket_directories", sockets.display().to_string()),
        ("fsync", "off".into()),
        ("max_connections", "300".into()),
        ("shared_buffers", "32MB".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(tls) = &opts.tls {
        // The server insists the key is 0600 and owned by its own user.
        let cert = data.join("server.crt");
        let key = data.join("server.key");
        write_private(&cert, &tls.cert_pem, run_as)?;
        write_private(&key, &tls.key_pem, run_as)?;
        conf.push(("ssl".into(), "on".into()));
        conf.push(("ssl_cert_file".into(), cert.display().to_string()));
        conf.push(("ssl_key_file".into(), key.display().to_string()));
    }
    conf.extend(opts.extra_conf.iter().cloned());
    let mut args = vec!["-D".to_string(), data.display().to_string()];
    for (k, v) in conf {
        args.push("-c".into());
        args.push(format!("{k}={v}"));
    }
    Ok(args)
}

/// 128 random bits as 32 hex characters: safe in URLs, TOML and psql `-v`.
pub fn random_password() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> TlsPem {
        let cert = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("generate a self-signed certificate");
        TlsPem {
            cert_pem: cert.cert.pem(),
            key_pem: cert.signing_key.serialize_pem(),
        }
    }

    fn started(opts: ClusterOptions) -> (Cluster, RoleModel) {
        let cluster = Cluster::start(opts).expect("start a cluster");
        let model = RoleModel::example();
        cluster.provision(&model).expect("provision the role model");
        (cluster, model)
    }

    #[test]
    fn free_port_is_loopback_and_not_5432() {
        let port = free_port().expect("free port");
        assert_ne!(port, 5432);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port is bindable");
    }

    #[test]
    fn find_bindir_has_server_binaries() {
        let bindir = Cluster::find_bindir().expect("bindir");
        assert!(
            is_executable(&bindir.join("initdb")),
            "{}",
            bindir.display()
        );
        assert!(
            is_executable(&bindir.join("postgres")),
            "{}",
            bindir.display()
        );
    }

    #[test]
    fn role_model_is_enforced() {
        let (cluster, m) = started(ClusterOptions {
            tls: Some(self_signed()),
            extra_conf: vec![("work_mem".into(), "7MB".into())],
        });
        let runtime = |sql: &str| cluster.psql(&m.runtime, &m.runtime_password, &m.database, sql);
        let migrator =
            |sql: &str| cluster.psql(&m.migrator, &m.migrator_password, &m.database, sql);

        assert_eq!(runtime("select current_user").unwrap(), m.runtime);
        // psql's default sslmode=prefer picks TLS when the server offers it.
        assert_eq!(
            runtime("select ssl from pg_stat_ssl where pid = pg_backend_pid()").unwrap(),
            "t"
        );
        assert_eq!(runtime("show work_mem").unwrap(), "7MB");
        assert_eq!(
            runtime("select rolsuper, rolbypassrls, rolcreaterole, rolcreatedb from pg_roles where rolname = current_user")
                .unwrap(),
            "f|f|f|f"
        );
        assert_eq!(
            migrator("select rolsuper, rolbypassrls from pg_roles where rolname = current_user")
                .unwrap(),
            "f|t"
        );
        assert_eq!(
            migrator("select nspowner::regrole::text from pg_namespace where nspname = 'public'")
                .unwrap(),
            m.migrator
        );

        // No DDL for the runtime role, temporary tables included.
        let err = runtime("create table t(x int)").unwrap_err().to_string();
        assert!(err.contains("permission denied"), "{err}");
        let err = runtime("create temp table tt(x int)")
            .unwrap_err()
            .to_string();
        assert!(err.contains("permission denied"), "{err}");
        let err = runtime("create schema s").unwrap_err().to_string();
        assert!(err.contains("permission denied"), "{err}");

        // RLS: only the session's tenant, nothing without one.
        assert_eq!(
            runtime("set app.tenant = 'acme'; select string_agg(distinct tenant, ',') || ':' || count(*) from notes")
                .unwrap(),
            "acme:3"
        );
        assert_eq!(runtime("select count(*) from notes").unwrap(), "0");
        runtime("set app.tenant = 'acme'; insert into notes (tenant, body) values ('acme', 'new')")
            .unwrap();
        let err = runtime(
            "set app.tenant = 'acme'; insert into notes (tenant, body) values ('globex', 'sneaky')",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("row-level security"), "{err}");
        assert_eq!(migrator("select count(*) from notes").unwrap(), "6");

        // The service role bypasses RLS but has no DDL either.
        let (service, service_password) = m.service.clone().unwrap();
        let svc = |sql: &str| cluster.psql(&service, &service_password, &m.database, sql);
        assert_eq!(
            svc("select count(distinct tenant) from notes").unwrap(),
            "2"
        );
        let err = svc("create table t(x int)").unwrap_err().to_string();
        assert!(err.contains("permission denied"), "{err}");

        // Default privileges: what the migrator creates later, runtime can use.
        migrator(
            "create table later(id bigserial primary key, x int); insert into later (x) values (1)",
        )
        .unwrap();
        assert_eq!(
            runtime("insert into later (x) values (2); select sum(x) from later").unwrap(),
            "3"
        );
        let err = runtime("truncate later").unwrap_err().to_string();
        assert!(err.contains("permission denied"), "{err}");

        // Re-running provisioning is harmless: no duplicate seeds, grants kept.
        cluster.provision(&m).unwrap();
        assert_eq!(migrator("select count(*) from notes").unwrap(), "6");
        assert_eq!(runtime("select sum(x) from later").unwrap(), "3");
    }

    #[test]
    fn runs_as_unprivileged_user_when_root() {
        let cluster = Cluster::start(ClusterOptions::default()).unwrap();
        let pid_file = cluster.data_dir().join("postmaster.pid");
        let owner = fs::metadata(&pid_file).unwrap().uid();
        if is_root() {
            assert_ne!(owner, 0, "postgres must not run as root");
        }
        let user = cluster
            .psql(
                &cluster.superuser,
                &cluster.superuser_password,
                "postgres",
                "select current_user",
            )
            .unwrap();
        assert_eq!(user, "postgres");
        // Wrong password is refused: no trust auth anywhere.
        let err = cluster
            .psql(&cluster.superuser, "wrong", "postgres", "select 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("password authentication failed"), "{err}");
    }

    #[test]
    fn restart_keeps_port_and_data_and_service_is_optional() {
        let mut cluster = Cluster::start(ClusterOptions::default()).unwrap();
        let model = RoleModel {
            service: None,
            ..RoleModel::example()
        };
        cluster.provision(&model).unwrap();
        let su = |c: &Cluster, sql: &str| {
            c.psql(&c.superuser, &c.superuser_password, &model.database, sql)
        };
        assert_eq!(
            su(
                &cluster,
                "select count(*) from pg_roles where rolname = 'app_service'"
            )
            .unwrap(),
            "0"
        );

        let port = cluster.port;
        cluster.restart().unwrap();
        assert_eq!(cluster.port, port);
        assert_eq!(su(&cluster, "select count(*) from notes").unwrap(), "5");

        cluster.stop().unwrap();
        assert!(su(&cluster, "select 1").is_err());
        cluster.stop().unwrap();
        cluster.restart().unwrap();
        assert_eq!(su(&cluster, "select count(*) from notes").unwrap(), "5");

        let dir = cluster.data_dir().to_path_buf();
        drop(cluster);
        assert!(!dir.exists(), "temp dir removed on drop");
        assert!(
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok(),
            "server gone after drop"
        );
    }

    #[test]
    fn roles_script_names_missing_variables() {
        let cluster = Cluster::start(ClusterOptions::default()).unwrap();
        let err = cluster
            .run_script(
                "001_roles.sql",
                ROLES_SQL,
                &cluster.superuser,
                &cluster.superuser_password,
                "postgres",
                &[("database", "app")],
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("pass -v migrator=ROLE"), "{err}");
        assert!(err.contains("001_roles"), "{err}");
    }

    #[test]
    fn app_schema_refuses_superuser() {
        let cluster = Cluster::start(ClusterOptions::default()).unwrap();
        let err = cluster
            .run_script(
                "002_app_schema.sql",
                APP_SCHEMA_SQL,
                &cluster.superuser,
                &cluster.superuser_password,
                "postgres",
                &[],
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be run as the migrator"), "{err}");
    }
}
