//! `rolegate check`: audit the upstream privilege model (PRODUCT.md §7)
//! through both credential sets, one finding a line, each failure with the
//! exact statement that fixes it. `serve` runs the same audit at start.

use std::fmt;

use crate::config::{Config, Credentials, DEFAULT_SERVICE};
use crate::tls::UpstreamTlsMode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub pass: bool,
    pub what: String,
    /// How to fix a failure (SQL to run as a superuser or the owner).
    pub fix: Option<String>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pass {
            write!(f, "PASS {}", self.what)
        } else {
            write!(f, "FAIL {}", self.what)?;
            if let Some(fix) = &self.fix {
                write!(f, " -- fix: {fix}")?;
            }
            Ok(())
        }
    }
}

fn pass(what: impl Into<String>) -> Finding {
    Finding {
        pass: true,
        what: what.into(),
        fix: None,
    }
}

fn fail(what: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        pass: false,
        what: what.into(),
        fix: Some(fix.into()),
    }
}

/// Quote an identifier for the fix statements.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

async fn connect(config: &Config, creds: &Credentials) -> Result<tokio_postgres::Client, String> {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&creds.host)
        .port(creds.port)
        .user(&creds.user)
        .dbname(&creds.database)
        .application_name("rolegate check")
        .connect_timeout(config.upstream.connect_timeout);
    if let Some(pw) = &creds.password {
        pg.password(pw.expose());
    }
    let tls_mode = config.upstream.tls_mode;
    let result = match (&config.upstream.tls.config, tls_mode) {
        (Some(tls), mode) => {
            pg.ssl_mode(if mode == UpstreamTlsMode::Prefer {
                tokio_postgres::config::SslMode::Prefer
            } else {
                tokio_postgres::config::SslMode::Require
            });
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
            pg.connect(connector).await.map(|(c, conn)| {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                c
            })
        }
        (None, _) => pg.connect(tokio_postgres::NoTls).await.map(|(c, conn)| {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            c
        }),
    };
    result.map_err(|e| pg_error(&e))
}

/// The server's message when there is one (tokio-postgres's Display says
/// only "db error").
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// Audit every service. Connection failures are findings too.
pub async fn audit(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    for (service, creds) in &config.services {
        let label = if service == DEFAULT_SERVICE {
            String::new()
        } else {
            format!("[{service}] ")
        };
        audit_service(
            config,
            &label,
            &creds.runtime,
            creds.migration.as_ref(),
            &mut out,
        )
        .await;
    }
    out
}

/// One fetch of each OIDC issuer's keys (`[[migration.jwks]]` by `url` or
/// discovery): a finding each, since an issuer rolegate cannot reach
/// refuses every migration token it signed. Not part of [`audit`], which
/// `serve` runs too: a running proxy fetches on its own schedule.
pub async fn issuers(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    for f in config.access.fetchers() {
        out.push(match f.probe().await {
            Ok(n) => pass(format!(
                "migration token keys of {} fetched from {} ({n} usable key(s))",
                f.issuer(),
                f.location()
            )),
            Err(e) => fail(
                format!("migration token keys of {} cannot be fetched: {e}", f.issuer()),
                "check the issuer URL, the network path and ca_file; until the keys arrive, migration tokens of this issuer are refused",
            ),
        });
    }
    out
}

/// What the findings of one service are phrased with.
struct Subject<'a> {
    /// `[service] ` for services other than the default, else empty.
    label: &'a str,
    /// The runtime role, quoted.
    rq: String,
    /// The database, quoted.
    db: String,
    /// The migration role, quoted, or a placeholder for fixes.
    owner: String,
}

async fn audit_service(
    config: &Config,
    label: &str,
    runtime: &Credentials,
    migration: Option<&Credentials>,
    out: &mut Vec<Finding>,
) {
    let who = Subject {
        label,
        rq: ident(&runtime.user),
        db: ident(&runtime.database),
        owner: migration.map_or_else(|| "<migrator>".into(), |m| ident(&m.user)),
    };
    let Some(client) = runtime_login(config, runtime, &who, out).await else {
        return;
    };
    roles_differ(runtime, migration, &who, out);
    role_attributes(&client, &who, out).await;
    for check in CATALOG_CHECKS {
        catalog_check(&client, check, &who, out).await;
    }
    predefined_role_memberships(&client, label, &who.rq, out).await;
    denied_functions_granted(&client, label, &who.rq, out).await;
    row_security_settings(&client, label, &who.rq, &who.db, out).await;
    if let Some(mig) = migration {
        migration_findings(config, &client, mig, &who, out).await;
    }
}

/// The runtime credentials log in (the other runtime findings need it).
async fn runtime_login(
    config: &Config,
    runtime: &Credentials,
    who: &Subject<'_>,
    out: &mut Vec<Finding>,
) -> Option<tokio_postgres::Client> {
    let (label, rq) = (who.label, &who.rq);
    match connect(config, runtime).await {
        Ok(c) => {
            out.push(pass(format!("{label}runtime credentials log in as {rq}")));
            Some(c)
        }
        Err(e) => {
            out.push(fail(
                format!("{label}runtime credentials do not log in as {rq}: {e}"),
                "check [upstream.runtime] user/password and pg_hba.conf",
            ));
            None
        }
    }
}

fn roles_differ(
    runtime: &Credentials,
    migration: Option<&Credentials>,
    who: &Subject<'_>,
    out: &mut Vec<Finding>,
) {
    let (label, rq) = (who.label, &who.rq);
    match migration.map(|m| &m.user) {
        Some(m) if *m == runtime.user => out.push(fail(
            format!("{label}runtime and migration roles are both {rq}"),
            "use two roles: set upstream.migration.user to the migrator",
        )),
        Some(m) => out.push(pass(format!(
            "{label}migration role {} differs from the runtime role",
            ident(m)
        ))),
        None => {}
    }
}

async fn role_attributes(
    client: &tokio_postgres::Client,
    who: &Subject<'_>,
    out: &mut Vec<Finding>,
) {
    let (label, rq) = (who.label, &who.rq);
    let attrs = client
        .query_one(
            "select rolsuper, rolbypassrls, rolcreaterole, rolcreatedb from pg_roles where rolname = current_user",
            &[],
        )
        .await;
    let row = match attrs {
        Ok(row) => row,
        Err(e) => {
            out.push(fail(
                format!("{label}cannot read pg_roles: {}", pg_error(&e)),
                "grant the runtime role access to pg_catalog",
            ));
            return;
        }
    };
    for (i, attr, fix_attr) in [
        (0, "SUPERUSER", "NOSUPERUSER"),
        (1, "BYPASSRLS", "NOBYPASSRLS"),
        (2, "CREATEROLE", "NOCREATEROLE"),
        (3, "CREATEDB", "NOCREATEDB"),
    ] {
        if row.get::<_, bool>(i) {
            out.push(fail(
                format!("{label}runtime role {rq} has {attr}"),
                format!("ALTER ROLE {rq} {fix_attr};"),
            ));
        } else {
            out.push(pass(format!("{label}runtime role {rq} is not {attr}")));
        }
    }
}

/// A catalog query whose rows are violations: none is one PASS, each row
/// one FAIL with its fix.
struct CatalogCheck {
    /// Named in the finding when the query itself fails.
    kind: &'static str,
    sql: &'static str,
    pass: fn(&Subject<'_>) -> String,
    /// The finding and its fix for one row.
    fail: fn(&Subject<'_>, &str) -> (String, String),
}

const CATALOG_CHECKS: &[CatalogCheck] = &[
    CatalogCheck {
        kind: "schema",
        sql: "select n.nspname::text from pg_namespace n where n.nspowner = (select oid from pg_roles where rolname = current_user)",
        pass: |w| format!("{}runtime role {} owns no schema", w.label, w.rq),
        fail: |w, s| {
            (
                format!("{}runtime role {} owns schema {s}", w.label, w.rq),
                format!("ALTER SCHEMA {} OWNER TO {};", ident(s), w.owner),
            )
        },
    },
    CatalogCheck {
        kind: "table",
        sql: "select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relowner = (select oid from pg_roles where rolname = current_user) and c.relkind in ('r','p','v','m','S','f')",
        pass: |w| {
            format!(
                "{}runtime role {} owns no table, view or sequence",
                w.label, w.rq
            )
        },
        fail: |w, t| {
            (
                format!("{}runtime role {} owns {t}", w.label, w.rq),
                format!("ALTER TABLE {t} OWNER TO {};", w.owner),
            )
        },
    },
    CatalogCheck {
        kind: "create_schema",
        sql: "select n.nspname::text from pg_namespace n where n.nspname not like 'pg\\_%' and n.nspname <> 'information_schema' and has_schema_privilege(current_user, n.oid, 'CREATE')",
        pass: |w| {
            format!(
                "{}runtime role {} has no CREATE on any schema",
                w.label, w.rq
            )
        },
        fail: |w, s| {
            (
                format!("{}runtime role {} has CREATE on schema {s}", w.label, w.rq),
                format!(
                    "REVOKE CREATE ON SCHEMA {} FROM PUBLIC, {};",
                    ident(s),
                    w.rq
                ),
            )
        },
    },
    CatalogCheck {
        kind: "create_db",
        sql: "select current_database()::text where has_database_privilege(current_user, current_database(), 'CREATE')",
        pass: |w| {
            format!(
                "{}runtime role {} has no CREATE on database {}",
                w.label, w.rq, w.db
            )
        },
        fail: |w, _| {
            (
                format!(
                    "{}runtime role {} has CREATE on database {}",
                    w.label, w.rq, w.db
                ),
                format!("REVOKE CREATE ON DATABASE {} FROM PUBLIC, {};", w.db, w.rq),
            )
        },
    },
    CatalogCheck {
        kind: "rls",
        sql: "select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r','p') and not c.relrowsecurity and exists (select 1 from pg_policy p where p.polrelid = c.oid)",
        pass: |w| format!("{}every table with RLS policies has RLS enabled", w.label),
        fail: |w, t| {
            (
                format!("{}table {t} has RLS policies but RLS is disabled", w.label),
                format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;"),
            )
        },
    },
];

async fn catalog_check(
    client: &tokio_postgres::Client,
    check: &CatalogCheck,
    who: &Subject<'_>,
    out: &mut Vec<Finding>,
) {
    let Some(rows) = catalog_rows(client, check.sql, &[], who.label, check.kind, out).await else {
        return;
    };
    if rows.is_empty() {
        out.push(pass((check.pass)(who)));
    }
    for row in &rows {
        let (what, fix) = (check.fail)(who, &row.get::<_, String>(0));
        out.push(fail(what, fix));
    }
}

/// The runtime role is not a member of the migration role, and the
/// migration credentials log in and can create in their schema.
async fn migration_findings(
    config: &Config,
    client: &tokio_postgres::Client,
    mig: &Credentials,
    who: &Subject<'_>,
    out: &mut Vec<Finding>,
) {
    let (label, rq) = (who.label, &who.rq);
    let mq = ident(&mig.user);
    match client
        .query_one(
            "select pg_has_role(current_user, $1::text, 'MEMBER')",
            &[&mig.user],
        )
        .await
    {
        Ok(row) if row.get::<_, bool>(0) => out.push(fail(
            format!("{label}runtime role {rq} is a member of the migration role {mq}"),
            format!("REVOKE {mq} FROM {rq};"),
        )),
        Ok(_) => out.push(pass(format!(
            "{label}runtime role {rq} is not a member of the migration role {mq}"
        ))),
        // The migration role does not exist: the migration login check below reports it.
        Err(_) => {}
    }
    match connect(config, mig).await {
        Ok(mc) => {
            out.push(pass(format!("{label}migration credentials log in as {mq}")));
            migration_can_create(&mc, label, &mq, out).await;
        }
        Err(e) => out.push(fail(
            format!("{label}migration credentials do not log in as {mq}: {e}"),
            "check [upstream.migration] user/password and pg_hba.conf",
        )),
    }
}

async fn migration_can_create(
    mc: &tokio_postgres::Client,
    label: &str,
    mq: &str,
    out: &mut Vec<Finding>,
) {
    let row = mc
        .query_one(
            "select s, has_schema_privilege(s, 'CREATE') from (select coalesce((current_schemas(false))[1]::text, 'public') as s) x",
            &[],
        )
        .await;
    match row {
        Ok(row) => {
            let schema = ident(&row.get::<_, String>(0));
            if row.get::<_, bool>(1) {
                out.push(pass(format!(
                    "{label}migration role {mq} can create in schema {schema}"
                )));
            } else {
                out.push(fail(
                    format!("{label}migration role {mq} cannot create in schema {schema}"),
                    format!("ALTER SCHEMA {schema} OWNER TO {mq};"),
                ));
            }
        }
        Err(e) => out.push(fail(
            format!("{label}migration role check failed: {}", pg_error(&e)),
            "check the migration role",
        )),
    }
}

/// The rows of a catalog query, or a FAIL finding naming `kind` when the
/// query itself fails.
async fn catalog_rows(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    label: &str,
    kind: &str,
    out: &mut Vec<Finding>,
) -> Option<Vec<tokio_postgres::Row>> {
    match client.query(sql, params).await {
        Ok(rows) => Some(rows),
        Err(e) => {
            out.push(fail(
                format!("{label}catalog query ({kind}) failed: {}", pg_error(&e)),
                "check the runtime role's catalog access",
            ));
            None
        }
    }
}

/// Predefined roles that reach server files, programs, settings or other
/// sessions: the runtime role must not be a member of any (PRODUCT.md §7).
pub const FORBIDDEN_ROLES: &[&str] = &[
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_read_all_settings",
    "pg_signal_backend",
    "pg_monitor",
];

/// One finding per forbidden predefined role, direct or transitive
/// membership. The fix revokes from the runtime role the roles it was
/// granted directly that lead to the predefined role (the predefined role
/// itself when granted directly).
async fn predefined_role_memberships(
    client: &tokio_postgres::Client,
    label: &str,
    rq: &str,
    out: &mut Vec<Finding>,
) {
    let roles: Vec<String> = FORBIDDEN_ROLES.iter().map(|r| r.to_string()).collect();
    let sql = "select r.rolname::text, coalesce((\
                 select string_agg(distinct format('%I', g.rolname), ', ' order by format('%I', g.rolname)) \
                 from pg_auth_members am join pg_roles g on g.oid = am.roleid \
                 where am.member = u.oid and pg_has_role(g.oid, r.oid, 'MEMBER')), '') \
               from pg_roles r, (select oid from pg_roles where rolname = current_user) u \
               where r.rolname = any($1) and pg_has_role(u.oid, r.oid, 'MEMBER')";
    let Some(rows) = catalog_rows(client, sql, &[&roles], label, "role memberships", out).await
    else {
        return;
    };
    for role in FORBIDDEN_ROLES {
        let found = rows.iter().find(|row| row.get::<_, String>(0) == *role);
        match found {
            None => out.push(pass(format!(
                "{label}runtime role {rq} is not a member of {role}"
            ))),
            Some(row) => {
                let via: String = row.get(1);
                let via = if via.is_empty() {
                    role.to_string()
                } else {
                    via
                };
                out.push(fail(
                    format!("{label}runtime role {rq} is a member of {role}"),
                    format!("REVOKE {via} FROM {rq};"),
                ));
            }
        }
    }
}

/// The deny-list as (exact names, LIKE patterns for the `*` prefixes).
fn denied_function_patterns() -> (Vec<String>, Vec<String>) {
    let mut exact = Vec::new();
    let mut prefixes = Vec::new();
    for entry in crate::policy::DENIED_FUNCTIONS {
        match entry.strip_suffix('*') {
            Some(prefix) => prefixes.push(format!("{}%", like_escape(prefix))),
            None => exact.push(entry.to_string()),
        }
    }
    (exact, prefixes)
}

/// Escape `\`, `_` and `%` for LIKE (default escape character `\`).
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '\\' | '_' | '%') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Shown at most in the denied-functions finding.
const MAX_FUNCTIONS_SHOWN: usize = 10;

/// Functions on rolegate's deny-list that the runtime role may execute
/// although PostgreSQL does not grant them to PUBLIC: someone granted them
/// (to the runtime role or a role it belongs to). Functions PUBLIC may run
/// by default are left out: rolegate refuses them on the wire, and a
/// default install must pass. One finding, naming up to ten functions.
async fn denied_functions_granted(
    client: &tokio_postgres::Client,
    label: &str,
    rq: &str,
    out: &mut Vec<Finding>,
) {
    let (exact, prefixes) = denied_function_patterns();
    let sql = "select p.oid::regprocedure::text from pg_proc p \
               where (p.proname = any($1) or p.proname like any($2)) \
               and has_function_privilege(current_user, p.oid, 'EXECUTE') \
               and not has_function_privilege('public', p.oid, 'EXECUTE') \
               order by 1";
    let Some(rows) = catalog_rows(
        client,
        sql,
        &[&exact, &prefixes],
        label,
        "denied functions",
        out,
    )
    .await
    else {
        return;
    };
    let names: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    if names.is_empty() {
        out.push(pass(format!(
            "{label}runtime role {rq} cannot execute any deny-listed function beyond PUBLIC's defaults"
        )));
        return;
    }
    let mut shown = names
        .iter()
        .take(MAX_FUNCTIONS_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_FUNCTIONS_SHOWN {
        shown.push_str(&format!(" and {} more", names.len() - MAX_FUNCTIONS_SHOWN));
    }
    let first = names.first().map(String::as_str).unwrap_or_default();
    out.push(fail(
        format!("{label}runtime role {rq} can execute deny-listed functions: {shown}"),
        format!("REVOKE EXECUTE ON FUNCTION {first} FROM {rq}; (and likewise for each function listed, from whichever role holds the grant)"),
    ));
}

/// Is this `setconfig` entry `row_security` set to a false boolean
/// (PostgreSQL accepts unique prefixes of off/false/no, and 0)?
fn disables_row_security(entry: &str) -> bool {
    let Some((name, value)) = entry.split_once('=') else {
        return false;
    };
    if !name.trim().eq_ignore_ascii_case("row_security") {
        return false;
    }
    let v = value
        .trim()
        .trim_matches(|c| c == '\'' || c == '"')
        .to_ascii_lowercase();
    v == "0"
        || (v.len() >= 2 && "off".starts_with(&v))
        || (!v.is_empty() && "false".starts_with(&v))
        || (!v.is_empty() && "no".starts_with(&v))
}

/// Role- or database-level settings (`pg_db_role_setting`) that turn
/// `row_security` off for runtime sessions: for the runtime role (in this
/// database or all), for this database, or for all roles.
async fn row_security_settings(
    client: &tokio_postgres::Client,
    label: &str,
    rq: &str,
    db: &str,
    out: &mut Vec<Finding>,
) {
    let sql = "select s.setrole <> 0, s.setdatabase <> 0, c from pg_db_role_setting s, unnest(s.setconfig) c \
               where s.setrole in (0, (select oid from pg_roles where rolname = current_user)) \
               and s.setdatabase in (0, (select oid from pg_database where datname = current_database()))";
    let Some(rows) = catalog_rows(client, sql, &[], label, "row_security settings", out).await
    else {
        return;
    };
    let mut bad = false;
    for row in &rows {
        let (for_role, in_db, entry): (bool, bool, String) = (row.get(0), row.get(1), row.get(2));
        if !disables_row_security(&entry) {
            continue;
        }
        bad = true;
        let (scope, fix) = match (for_role, in_db) {
            (true, true) => (
                format!("role {rq} in database {db}"),
                format!("ALTER ROLE {rq} IN DATABASE {db} RESET row_security;"),
            ),
            (true, false) => (
                format!("role {rq}"),
                format!("ALTER ROLE {rq} RESET row_security;"),
            ),
            (false, true) => (
                format!("database {db}"),
                format!("ALTER DATABASE {db} RESET row_security;"),
            ),
            (false, false) => (
                "all roles".to_string(),
                "ALTER ROLE ALL RESET row_security;".to_string(),
            ),
        };
        out.push(fail(
            format!("{label}a setting for {scope} turns row_security off ({entry}) for runtime role {rq}"),
            fix,
        ));
    }
    if !bad {
        out.push(pass(format!(
            "{label}no role- or database-level setting turns row_security off for runtime role {rq}"
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_list_becomes_exact_names_and_escaped_prefixes() {
        let (exact, prefixes) = denied_function_patterns();
        assert!(exact.iter().any(|e| e == "pg_read_file"));
        assert!(prefixes.iter().any(|p| p == "pg\\_ls\\_%"));
        assert!(exact.iter().chain(&prefixes).all(|e| !e.contains('*')));
        assert_eq!(like_escape("a_b%c\\"), "a\\_b\\%c\\\\");
    }

    #[test]
    fn row_security_false_spellings() {
        for e in [
            "row_security=off",
            "row_security=OFF",
            "row_security=of",
            "row_security=false",
            "row_security=f",
            "row_security=no",
            "row_security=0",
            "ROW_SECURITY='off'",
        ] {
            assert!(disables_row_security(e), "{e}");
        }
        for e in [
            "row_security=on",
            "row_security=o",
            "row_security=true",
            "row_security=1",
            "search_path=off",
            "row_security",
        ] {
            assert!(!disables_row_security(e), "{e}");
        }
    }
}
