//! The third phase: an upstream session for an authenticated client. The
//! runtime policy's startup checks and pinned settings, an idle pooled
//! session or a new connection, cancel registration, and the greeting the
//! client gets (AuthenticationOk, the server's ParameterStatus, the
//! proxy's BackendKeyData, ReadyForQuery).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};

use crate::cancel::{Registration, UpstreamKey};
use crate::config::{Credentials, PolicyMode};
use crate::pool::PoolKey;
use crate::protocol;
use crate::upstream::{self, Endpoint, UpstreamConn};

use super::auth::Identity;
use super::{Context, LoginError, Role, Who, error};

/// The pinned settings a runtime session starts with, so the proxy's
/// reading of statement text is the server's own (a client that set them
/// already set these values: other values are refused).
const PINNED: [(&str, &str); 2] = [
    ("client_encoding", "UTF8"),
    ("standard_conforming_strings", "on"),
];

/// An upstream session ready for the client.
pub struct Connected {
    pub conn: UpstreamConn,
    pub endpoint: Arc<Endpoint>,
    /// Set for runtime sessions that may go back to the pool.
    pub pool_key: Option<PoolKey>,
    /// Taken from the pool rather than opened.
    pub reused: bool,
    pub cancel: Registration,
    /// Transaction mode: the client's side of its service's pool (`conn`
    /// is its first lease).
    pub pooled: Option<crate::txpool::session::Pooled>,
}

/// Where the session's logs and metrics point.
pub struct Trace<'a> {
    pub who: &'a Who,
    pub session_id: u64,
    pub peer: SocketAddr,
}

/// Find the credentials, check and pin the startup parameters, and get an
/// upstream session for `id`.
pub async fn connect(
    ctx: &Context<'_>,
    id: &Identity,
    startup: &BTreeMap<String, String>,
    trace: &Trace<'_>,
) -> Result<Connected, LoginError> {
    let creds = credentials(ctx, id)?;
    if let Some(db) = startup.get("database")
        && !db.is_empty()
        && db != &creds.database
    {
        return Err(LoginError::WrongDatabase {
            asked: db.clone(),
            served: creds.database.clone(),
        });
    }
    let params = upstream_params(ctx, id.role, startup, trace)?;
    check_length(creds, &params)?;
    if id.role == Role::Runtime
        && let Some(pool) = ctx.txpools.get(&id.service)
    {
        return lease(ctx, pool, &params, trace).await;
    }
    let pool_key = (id.role == Role::Runtime && ctx.config.pool.enabled)
        .then(|| ctx.pool.key(&id.service, &params));
    let reused = pool_key
        .as_ref()
        .and_then(|k| ctx.pool.take(k, &ctx.config.pool));
    let (conn, endpoint, reused) = match reused {
        Some(r) => {
            let mut conn = r.conn;
            conn.reuse_greeting();
            (conn, r.endpoint, true)
        }
        None => {
            let (conn, endpoint) = open(ctx, id, creds, &params).await?;
            (conn, endpoint, false)
        }
    };
    crate::metrics::upstream_session(id.role, reused);
    let cancel = ctx.cancels.register(UpstreamKey {
        endpoint: endpoint.clone(),
        pid: conn.pid,
        secret: conn.secret,
    });
    Ok(Connected {
        conn,
        endpoint,
        pool_key,
        reused,
        cancel,
        pooled: None,
    })
}

/// Transaction mode: the client's first lease, with its startup settings
/// applied (the greeting reports the values they produced).
async fn lease(
    ctx: &Context<'_>,
    pool: Arc<crate::txpool::ServicePool>,
    params: &[(String, String)],
    trace: &Trace<'_>,
) -> Result<Connected, LoginError> {
    use crate::txpool::{ClientSettings, LeaseError};
    let settings = ClientSettings::from_startup(params)
        .map_err(|e| LoginError::Lease(LeaseError::Prepare(e)))?;
    let lease = pool
        .acquire(trace.session_id, &settings)
        .await
        .map_err(LoginError::Lease)?;
    let mut conn = lease.conn;
    conn.reuse_greeting();
    let statements = crate::txpool::prepared::Statements::default();
    statements.on_lease(conn.pid, lease.kept);
    let key = pool.cancel_key(&conn);
    let endpoint = key.endpoint.clone();
    let cancel = ctx.cancels.register(key);
    crate::metrics::upstream_session(Role::Runtime, true);
    Ok(Connected {
        conn,
        endpoint,
        pool_key: None,
        reused: true,
        cancel,
        pooled: Some(crate::txpool::session::Pooled {
            pool,
            client: trace.session_id,
            settings,
            touched: Default::default(),
            statements,
            permit: Some(lease.permit),
        }),
    })
}

/// The upstream role's credentials for the identity's service.
fn credentials<'a>(ctx: &Context<'a>, id: &Identity) -> Result<&'a Credentials, LoginError> {
    let service = ctx.config.services.get(&id.service);
    let creds = match (service, id.role) {
        (Some(s), Role::Runtime) => Some(&s.runtime),
        (Some(s), Role::Migration) => s.migration.as_ref(),
        (None, _) => None,
    };
    creds.ok_or_else(|| LoginError::UnknownService {
        service: id.service.clone(),
    })
}

/// The client's startup parameters as they go upstream: without `user`,
/// `database` and protocol extensions; for runtime sessions checked by the
/// policy and with the pinned settings added.
fn upstream_params(
    ctx: &Context<'_>,
    role: Role,
    startup: &BTreeMap<String, String>,
    trace: &Trace<'_>,
) -> Result<Vec<(String, String)>, LoginError> {
    let mut params: Vec<(String, String)> = startup
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "user" | "database") && !k.starts_with("_pq_."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if role == Role::Migration {
        return Ok(params);
    }
    if let Err(reason) = crate::policy::check_startup(&params) {
        if ctx.config.policy.mode != PolicyMode::Report {
            return Err(LoginError::StartupRefused { reason });
        }
        error::startup_refused(trace.who, trace.session_id, trace.peer, &reason, false);
    }
    for (name, value) in PINNED {
        if !params.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
            params.push((name.to_string(), value.to_string()));
        }
    }
    Ok(params)
}

/// The upstream StartupMessage carries the proxy's role, database and
/// pinned settings too; PostgreSQL would drop one over its limit without a
/// useful error, so say so here.
fn check_length(creds: &Credentials, params: &[(String, String)]) -> Result<(), LoginError> {
    let len = 9
        + "user".len()
        + creds.user.len()
        + "database".len()
        + creds.database.len()
        + 4
        + params
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    if len > protocol::MAX_STARTUP_PACKET {
        return Err(LoginError::StartupTooLong);
    }
    Ok(())
}

/// Open and authenticate a new upstream session.
async fn open(
    ctx: &Context<'_>,
    id: &Identity,
    creds: &Credentials,
    params: &[(String, String)],
) -> Result<(UpstreamConn, Arc<Endpoint>), LoginError> {
    let endpoint = match ctx.endpoints.get(&id.service) {
        Some(e) if id.role == Role::Runtime => e.clone(),
        _ => Arc::new(Endpoint::new(creds, &ctx.config.upstream)),
    };
    let t0 = Instant::now();
    let conn = upstream::connect(&endpoint, creds, params)
        .await
        .map_err(LoginError::Upstream)?;
    crate::metrics::upstream_connect(id.role, t0.elapsed().as_secs_f64());
    Ok((conn, endpoint))
}

/// What the client gets once logged in: AuthenticationOk, the server's
/// ParameterStatus messages, the proxy's BackendKeyData, ReadyForQuery.
pub fn greeting(out: &mut BytesMut, c: &Connected) {
    protocol::auth_ok(out);
    out.put_slice(&c.conn.greeting);
    protocol::backend_key_data(out, c.cancel.pid, c.cancel.secret);
    protocol::ready_for_query(out, b'I');
}
