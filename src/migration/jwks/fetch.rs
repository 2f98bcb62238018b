//! The HTTP side of a fetch: HTTPS only (rustls with the `ring` provider;
//! the compiled-in Mozilla roots, or only the CA of `ca_file`), OIDC
//! discovery (`/.well-known/openid-configuration`, whose `issuer` must be
//! the configured one and whose `jwks_uri` must be `https://`), the JWKS
//! GET, and its `Cache-Control: max-age`. Redirects are not followed and
//! bodies are capped at [`MAX_BODY`]. The caller bounds the whole fetch
//! with `fetch_timeout`.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CACHE_CONTROL, HeaderMap, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

use crate::migration::settings::{CaFile, RemoteLocation};

/// The largest discovery document or JWKS read (real ones are a few KiB).
pub const MAX_BODY: usize = 1024 * 1024;

/// Why a fetch failed; `outcome` is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered HTTP {status}{hint}")]
    Status {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("{url}: {reason}")]
    Invalid { url: String, reason: String },
}

impl FetchError {
    /// The `outcome` label of `rolegate_migration_jwks_fetches_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            FetchError::Timeout(_) => "timeout",
            FetchError::Unreachable { .. } => "unreachable",
            FetchError::Status { .. } => "http_status",
            FetchError::Invalid { .. } => "invalid",
        }
    }

    pub(super) fn invalid(url: &str, reason: impl Into<String>) -> FetchError {
        FetchError::Invalid {
            url: url.to_string(),
            reason: reason.into(),
        }
    }
}

/// Every `outcome` label, for series present from startup.
pub const OUTCOMES: &[&str] = &["ok", "timeout", "unreachable", "http_status", "invalid"];

/// A fetched JWKS: its text, where it came from, and its `max-age`.
#[derive(Debug)]
pub struct Document {
    pub body: Bytes,
    pub url: String,
    pub max_age: Option<Duration>,
}

/// An HTTPS client for one issuer's trust roots.
#[derive(Debug)]
pub struct Http {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Http {
    /// A client trusting `ca` alone, or the Mozilla roots without one.
    pub fn new(ca: Option<&CaFile>) -> Result<Http, String> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        // A fetch an hour: keeping connections open buys nothing.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Ok(Http { client })
    }

    /// GET `url`; a 200 answer's body (at most [`MAX_BODY`]) and headers.
    async fn get(&self, url: &str) -> Result<(Bytes, HeaderMap), FetchError> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| FetchError::invalid(url, format!("not a URL: {e}")))?;
        let request = hyper::Request::get(uri)
            .header(USER_AGENT, concat!("rolegate/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| FetchError::invalid(url, e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| FetchError::Unreachable {
                url: url.to_string(),
                reason: error_chain(&e),
            })?;
        let status = response.status();
        if status != hyper::StatusCode::OK {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                hint: if status.is_redirection() {
                    " (redirects are not followed; configure the final URL)"
                } else {
                    ""
                },
            });
        }
        let headers = response.headers().clone();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| FetchError::invalid(url, format!("reading the body: {e}")))?
            .to_bytes();
        Ok((body, headers))
    }
}

fn roots(ca: Option<&CaFile>) -> Result<RootCertStore, String> {
    let Some(ca) = ca else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let path = ca.path.display();
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca.pem) {
        let cert = cert.map_err(|e| format!("{path}: {e}"))?;
        store.add(cert).map_err(|e| format!("{path}: {e}"))?;
    }
    if store.is_empty() {
        return Err(format!("{path}: no PEM certificate found"));
    }
    Ok(store)
}

/// An error and its causes, for a log line ("client error (Connect): tcp
/// connect error: Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Fetch the JWKS of `location`: by discovery first, or directly.
pub async fn fetch(http: &Http, location: &RemoteLocation) -> Result<Document, FetchError> {
    let url = match location {
        RemoteLocation::Url(url) => url.clone(),
        RemoteLocation::Discovery { issuer } => discover(http, issuer).await?,
    };
    let (body, headers) = http.get(&url).await?;
    Ok(Document {
        body,
        max_age: max_age(&headers),
        url,
    })
}

/// Where OpenID Connect Discovery 1.0 puts an issuer's configuration.
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// The issuer's `jwks_uri`, from a configuration that names this issuer.
async fn discover(http: &Http, issuer: &str) -> Result<String, FetchError> {
    let url = discovery_url(issuer);
    let (body, _) = http.get(&url).await?;
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| FetchError::invalid(&url, format!("not JSON: {e}")))?;
    // The discovery spec requires it, and it stops one issuer's
    // configuration from vouching for another's keys.
    let named = doc.get("issuer").and_then(Value::as_str);
    if named != Some(issuer) {
        return Err(FetchError::invalid(
            &url,
            format!("the document's issuer is {named:?}, not {issuer:?}"),
        ));
    }
    let jwks_uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| FetchError::invalid(&url, "no jwks_uri"))?;
    match url::Url::parse(jwks_uri) {
        Ok(u) if u.scheme() == "https" && u.username().is_empty() && u.password().is_none() => {
            Ok(jwks_uri.to_string())
        }
        _ => Err(FetchError::invalid(
            &url,
            format!("jwks_uri {jwks_uri:?} is not an https:// URL"),
        )),
    }
}

/// `Cache-Control: max-age=N` (`no-cache` / `no-store` count as 0); the
/// caller bounds it.
pub fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        for directive in text.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-cache" || lower == "no-store" {
                return Some(Duration::ZERO);
            }
            if let Some(secs) = lower.strip_prefix("max-age=") {
                let secs = secs.trim_matches('"').parse::<u64>().ok()?;
                found = Some(Duration::from_secs(secs));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CACHE_CONTROL, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age(&headers(&[])), None);
        assert_eq!(
            max_age(&headers(&["public, max-age=3600, must-revalidate"])),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            max_age(&headers(&["Max-Age=\"60\""])),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            max_age(&headers(&["max-age=600", "no-cache"])),
            Some(Duration::ZERO)
        );
        assert_eq!(max_age(&headers(&["max-age=soon"])), None);
    }

    #[test]
    fn discovery_url_follows_the_spec() {
        assert_eq!(
            discovery_url("https://token.actions.githubusercontent.com"),
            "https://token.actions.githubusercontent.com/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://gitlab.example/"),
            "https://gitlab.example/.well-known/openid-configuration"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let ca = CaFile {
            path: "/etc/rolegate/issuer-ca.crt".into(),
            pem: b"not a certificate".to_vec(),
        };
        let e = Http::new(Some(&ca)).expect_err("no certificate");
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
