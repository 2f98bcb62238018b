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

async fn audit_service(
    config: &Config,
    label: &str,
    runtime: &Credentials,
    migration: Option<&Credentials>,
    out: &mut Vec<Finding>,
) {
    let r = &runtime.user;
    let rq = ident(r);
    let db = ident(&runtime.database);
    let client = match connect(config, runtime).await {
        Ok(c) => {
            out.push(pass(format!("{label}runtime credentials log in as {rq}")));
            c
        }
        Err(e) => {
            out.push(fail(
                format!("{label}runtime credentials do not log in as {rq}: {e}"),
                "check [upstream.runtime] user/password and pg_hba.conf",
            ));
            return;
        }
    };
    let m = migration.map(|m| m.user.clone());
    match &m {
        Some(m) if m == r => out.push(fail(
            format!("{label}runtime and migration roles are both {rq}"),
            "use two roles: set upstream.migration.user to the migrator",
        )),
        Some(m) => out.push(pass(format!(
            "{label}migration role {} differs from the runtime role",
            ident(m)
        ))),
        None => {}
    }

    let attrs = client
        .query_one(
            "select rolsuper, rolbypassrls, rolcreaterole, rolcreatedb from pg_roles where rolname = current_user",
            &[],
        )
        .await;
    match attrs {
        Ok(row) => {
            for (i, attr, fix_attr) in [
                (0, "SUPERUSER", "NOSUPERUSER"),
                (1, "BYPASSRLS", "NOBYPASSRLS"),
                (2, "CREATEROLE", "NOCREATEROLE"),
                (3, "CREATEDB", "NOCREATEDB"),
            ] {
                let has: bool = row.get(i);
                if has {
                    out.push(fail(
                        format!("{label}runtime role {rq} has {attr}"),
                        format!("ALTER ROLE {rq} {fix_attr};"),
                    ));
                } else {
                    out.push(pass(format!("{label}runtime role {rq} is not {attr}")));
                }
            }
        }
        Err(e) => out.push(fail(
            format!("{label}cannot read pg_roles: {}", pg_error(&e)),
            "grant the runtime role access to pg_catalog",
        )),
    }

    let queries: [(&str, &str); 5] = [
        (
            "select n.nspname::text from pg_namespace n where n.nspowner = (select oid from pg_roles where rolname = current_user)",
            "schema",
        ),
        (
            "select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relowner = (select oid from pg_roles where rolname = current_user) and c.relkind in ('r','p','v','m','S','f')",
            "table",
        ),
        (
            "select n.nspname::text from pg_namespace n where n.nspname not like 'pg\\_%' and n.nspname <> 'information_schema' and has_schema_privilege(current_user, n.oid, 'CREATE')",
            "create_schema",
        ),
        (
            "select current_database()::text where has_database_privilege(current_user, current_database(), 'CREATE')",
            "create_db",
        ),
        (
            "select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r','p') and not c.relrowsecurity and exists (select 1 from pg_policy p where p.polrelid = c.oid)",
            "rls",
        ),
    ];
    for (sql, kind) in queries {
        let rows = match client.query(sql, &[]).await {
            Ok(rows) => rows,
            Err(e) => {
                out.push(fail(
                    format!("{label}catalog query ({kind}) failed: {}", pg_error(&e)),
                    "check the runtime role's catalog access",
                ));
                continue;
            }
        };
        let names: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
        let owner = m
            .as_deref()
            .map(ident)
            .unwrap_or_else(|| "<migrator>".into());
        match (kind, names.is_empty()) {
            ("schema", true) => out.push(pass(format!("{label}runtime role {rq} owns no schema"))),
            ("schema", false) => {
                for s in names {
                    out.push(fail(
                        format!("{label}runtime role {rq} owns schema {s}"),
                        format!("ALTER SCHEMA {} OWNER TO {owner};", ident(&s)),
                    ));
                }
            }
            ("table", true) => out.push(pass(format!(
                "{label}runtime role {rq} owns no table, view or sequence"
            ))),
            ("table", false) => {
                for t in names {
                    out.push(fail(
                        format!("{label}runtime role {rq} owns {t}"),
                        format!("ALTER TABLE {t} OWNER TO {owner};"),
                    ));
                }
            }
            ("create_schema", true) => out.push(pass(format!(
                "{label}runtime role {rq} has no CREATE on any schema"
            ))),
            ("create_schema", false) => {
                for s in names {
                    out.push(fail(
                        format!("{label}runtime role {rq} has CREATE on schema {s}"),
                        format!("REVOKE CREATE ON SCHEMA {} FROM PUBLIC, {rq};", ident(&s)),
                    ));
                }
            }
            ("create_db", true) => out.push(pass(format!(
                "{label}runtime role {rq} has no CREATE on database {db}"
            ))),
            ("create_db", false) => out.push(fail(
                format!("{label}runtime role {rq} has CREATE on database {db}"),
                format!("REVOKE CREATE ON DATABASE {db} FROM PUBLIC, {rq};"),
            )),
            ("rls", true) => out.push(pass(format!(
                "{label}every table with RLS policies has RLS enabled"
            ))),
            (_, _) => {
                for t in names {
                    out.push(fail(
                        format!("{label}table {t} has RLS policies but RLS is disabled"),
                        format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;"),
                    ));
                }
            }
        }
    }

    let Some(mig) = migration else {
        return;
    };
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
            match mc
                .query_one(
                    "select s, has_schema_privilege(s, 'CREATE') from (select coalesce((current_schemas(false))[1]::text, 'public') as s) x",
                    &[],
                )
                .await
            {
                Ok(row) => {
                    let schema: String = row.get(0);
                    if row.get::<_, bool>(1) {
                        out.push(pass(format!("{label}migration role {mq} can create in schema {}", ident(&schema))));
                    } else {
                        out.push(fail(
                            format!("{label}migration role {mq} cannot create in schema {}", ident(&schema)),
                            format!("ALTER SCHEMA {} OWNER TO {mq};", ident(&schema)),
                        ));
                    }
                }
                Err(e) => out.push(fail(format!("{label}migration role check failed: {}", pg_error(&e)), "check the migration role")),
            }
        }
        Err(e) => out.push(fail(
            format!("{label}migration credentials do not log in as {mq}: {e}"),
            "check [upstream.migration] user/password and pg_hba.conf",
        )),
    }
}
