//! The handshake and auth phases in-process, over `tokio::io::duplex`: the
//! edge cases of encryption negotiation, the first packet, the transport
//! rules and both authentication methods, without a process or a server.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

use super::auth::{self, Identity};
use super::handshake::{self, Failed, Hello, Stream, Transport};
use super::{LoginError, Role, Who};
use crate::config::{Config, Sources};

const WEB_PASSWORD: &str = "web-secret";

/// The server's end of an in-memory connection, with the one-byte peek
/// direct TLS detection needs.
struct Pipe {
    io: DuplexStream,
    peeked: Option<u8>,
}

impl Transport for Pipe {
    async fn peek_first(&mut self) -> Option<u8> {
        if self.peeked.is_none() {
            let mut b = [0u8; 1];
            if self.io.read_exact(&mut b).await.is_ok() {
                self.peeked = Some(b[0]);
            }
        }
        self.peeked
    }
}

impl AsyncRead for Pipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(b) = self.peeked.take() {
            buf.put_slice(&[b]);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A connected pair: the client's end and the server's.
fn pipe() -> (DuplexStream, Pipe) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    (
        client,
        Pipe {
            io: server,
            peeked: None,
        },
    )
}

fn packet(code_or_version: u32, body: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&((8 + body.len()) as u32).to_be_bytes());
    p.extend_from_slice(&code_or_version.to_be_bytes());
    p.extend_from_slice(body);
    p
}

fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    packet(crate::protocol::PROTOCOL_3_0, &body)
}

fn ssl_request() -> Vec<u8> {
    packet(crate::protocol::SSL_REQUEST_CODE, &[])
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Read one backend message: (tag, body).
async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> (u8, Vec<u8>) {
    let mut header = [0u8; 5];
    r.read_exact(&mut header).await.expect("message header");
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    r.read_exact(&mut body).await.expect("message body");
    (header[0], body)
}

/// A self-signed certificate for localhost and the configs of both ends.
fn tls_pair() -> (Arc<rustls::ServerConfig>, tokio_rustls::TlsConnector) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let dir = tempfile::tempdir().expect("dir");
    let (cert_file, key_file) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).expect("cert file");
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).expect("key file");
    let server = crate::tls::server_config(&cert_file, &key_file).expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"postgresql".to_vec()];
    (server, tokio_rustls::TlsConnector::from(Arc::new(client)))
}

fn server_name() -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::try_from("localhost").expect("name")
}

fn started(hello: Result<Hello<Pipe>, Failed<Pipe>>) -> (Stream<Pipe>, Vec<(String, String)>) {
    match hello {
        Ok(Hello::Startup(stream, s)) => (stream, s.parameters.into_iter().collect()),
        Ok(Hello::Cancel(..)) => panic!("expected a StartupMessage, got a CancelRequest"),
        Err(Failed(_, e)) => panic!("handshake failed: {e:?}"),
    }
}

fn failure(hello: Result<Hello<Pipe>, Failed<Pipe>>) -> LoginError {
    match hello {
        Ok(_) => panic!("the handshake should have failed"),
        Err(Failed(_, e)) => e,
    }
}

#[tokio::test]
async fn a_plaintext_startup_message_is_read() {
    let (mut client, server) = pipe();
    client
        .write_all(&startup(&[("user", "web"), ("database", "app")]))
        .await
        .expect("send");
    let (stream, params) = started(handshake::negotiate(server, None).await);
    assert!(!stream.is_tls());
    assert!(params.contains(&("user".into(), "web".into())));
    assert!(params.contains(&("database".into(), "app".into())));
}

#[tokio::test]
async fn ssl_and_gssenc_requests_are_declined_without_tls() {
    let (mut client, server) = pipe();
    let task = tokio::spawn(handshake::negotiate(server, None));
    client.write_all(&ssl_request()).await.expect("send");
    client
        .write_all(&packet(crate::protocol::GSSENC_REQUEST_CODE, &[]))
        .await
        .expect("send");
    let mut answers = [0u8; 2];
    client.read_exact(&mut answers).await.expect("answers");
    assert_eq!(&answers, b"NN");
    client
        .write_all(&startup(&[("user", "web")]))
        .await
        .expect("send");
    let (stream, _) = started(task.await.expect("task"));
    assert!(!stream.is_tls());
}

#[tokio::test]
async fn an_ssl_request_upgrades_to_tls() {
    let (server_tls, connector) = tls_pair();
    let (mut client, server) = pipe();
    let task = tokio::spawn(handshake::negotiate(server, Some(server_tls)));
    client.write_all(&ssl_request()).await.expect("send");
    let mut answer = [0u8; 1];
    client.read_exact(&mut answer).await.expect("answer");
    assert_eq!(&answer, b"S");
    let mut tls = connector
        .connect(server_name(), client)
        .await
        .expect("TLS handshake");
    tls.write_all(&startup(&[("user", "web")]))
        .await
        .expect("send");
    tls.flush().await.expect("flush");
    let (stream, params) = started(task.await.expect("task"));
    assert!(stream.is_tls());
    assert!(params.contains(&("user".into(), "web".into())));
}

#[tokio::test]
async fn direct_tls_is_recognised_by_its_first_byte() {
    let (server_tls, connector) = tls_pair();
    let (client, server) = pipe();
    let task = tokio::spawn(handshake::negotiate(server, Some(server_tls)));
    let mut tls = connector
        .connect(server_name(), client)
        .await
        .expect("direct TLS handshake");
    tls.write_all(&startup(&[("user", "web")]))
        .await
        .expect("send");
    tls.flush().await.expect("flush");
    let (stream, _) = started(task.await.expect("task"));
    assert!(stream.is_tls());
}

#[tokio::test]
async fn an_ssl_request_inside_tls_is_refused() {
    let (server_tls, connector) = tls_pair();
    let (mut client, server) = pipe();
    let task = tokio::spawn(handshake::negotiate(server, Some(server_tls)));
    client.write_all(&ssl_request()).await.expect("send");
    let mut answer = [0u8; 1];
    client.read_exact(&mut answer).await.expect("answer");
    let mut tls = connector
        .connect(server_name(), client)
        .await
        .expect("TLS handshake");
    tls.write_all(&ssl_request()).await.expect("send");
    tls.flush().await.expect("flush");
    let e = failure(task.await.expect("task"));
    assert!(matches!(e, LoginError::EncryptionTwice), "{e:?}");
}

#[tokio::test]
async fn a_fourth_negotiation_request_is_refused() {
    let (mut client, server) = pipe();
    let task = tokio::spawn(handshake::negotiate(server, None));
    for _ in 0..4 {
        client.write_all(&ssl_request()).await.expect("send");
    }
    let e = failure(task.await.expect("task"));
    assert!(matches!(e, LoginError::TooManyNegotiations), "{e:?}");
}

#[tokio::test]
async fn a_cancel_request_is_told_apart() {
    let (mut client, server) = pipe();
    let mut body = Vec::new();
    body.extend_from_slice(&1234i32.to_be_bytes());
    body.extend_from_slice(&(-99i32).to_be_bytes());
    client
        .write_all(&packet(crate::protocol::CANCEL_REQUEST_CODE, &body))
        .await
        .expect("send");
    match handshake::negotiate(server, None).await {
        Ok(Hello::Cancel(_, pid, secret)) => assert_eq!((pid, secret), (1234, -99)),
        _ => panic!("expected a CancelRequest"),
    }
}

#[tokio::test]
async fn bad_lengths_and_silence_end_the_handshake() {
    for len in [0u32, 7, 10_001, u32::MAX] {
        let (mut client, server) = pipe();
        let mut p = len.to_be_bytes().to_vec();
        p.extend_from_slice(&crate::protocol::PROTOCOL_3_0.to_be_bytes());
        client.write_all(&p).await.expect("send");
        let e = failure(handshake::negotiate(server, None).await);
        assert!(matches!(e, LoginError::InvalidStartup(_)), "{len}: {e:?}");
    }
    let (client, server) = pipe();
    drop(client);
    let e = failure(handshake::negotiate(server, None).await);
    assert!(matches!(e, LoginError::Gone), "{e:?}");
}

/// A config with client `web`, a migration key and an always-open window;
/// `extra` is appended (more sections or keys).
fn config(dir: &Path, extra: &str) -> Config {
    let (_, public) = crate::migration::token::keygen(&dir.join("keys")).expect("keygen");
    let toml = format!(
        r#"[upstream]
host = "127.0.0.1"
database = "app"
tls = "disable"
[upstream.runtime]
user = "app_user"
password = "r"
[upstream.migration]
user = "app_migrator"
password = "m"

[[clients]]
name = "web"
password_scram = "{verifier}"

[migration]
environment = "staging"
[[migration.keys]]
public_key_file = "{public}"
[[migration.windows]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
from = "00:00"
to = "23:59"
timezone = "UTC"
{extra}"#,
        verifier = crate::client_auth::hash_password(WEB_PASSWORD),
        public = public.display(),
    );
    let file = dir.join("rolegate.toml");
    std::fs::write(&file, toml).expect("config file");
    Config::load(&Sources {
        file: Some(file),
        env: Default::default(),
    })
    .expect("config loads")
}

fn token(dir: &Path) -> String {
    let key = std::fs::read_to_string(dir.join("keys/migrator.key")).expect("key");
    crate::migration::token::issue(
        &key,
        crate::migration::token::IssueOptions {
            subject: "ci-job".into(),
            ttl: std::time::Duration::from_secs(600),
            env: Some("staging".into()),
            confirm: false,
            service: None,
            kid: None,
            now: jiff::Timestamp::now(),
        },
    )
    .expect("token")
}

const LOOPBACK: &str = "127.0.0.1:50000";
const REMOTE: &str = "10.1.2.3:50000";

fn peer(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

#[test]
fn transport_rules_hold_for_each_kind_of_login() {
    let dir = tempfile::tempdir().expect("dir");
    let plain = config(dir.path(), "");
    let migrator = auth::claimed(&plain, "migrator");
    let web = auth::claimed(&plain, "web");
    // A token is a password: over plaintext only from loopback.
    let e = auth::check_transport(&plain, &migrator, false, peer(REMOTE));
    assert!(matches!(e, Err(LoginError::MigrationNeedsTls)), "{e:?}");
    assert!(auth::check_transport(&plain, &migrator, false, peer(LOOPBACK)).is_ok());
    assert!(auth::check_transport(&plain, &migrator, true, peer(REMOTE)).is_ok());
    // SCRAM never sends the password: runtime logins may come from anywhere.
    assert!(auth::check_transport(&plain, &web, false, peer(REMOTE)).is_ok());
    let nobody = auth::claimed(&plain, "");
    let e = auth::check_transport(&plain, &nobody, true, peer(LOOPBACK));
    assert!(matches!(e, Err(LoginError::NoUser)), "{e:?}");
    // Names nobody configured are one bounded metric label.
    assert_eq!(auth::claimed(&plain, "mallory").label, "unknown");
    assert_eq!(web.role, Some(Role::Runtime));
    assert_eq!(migrator.role, Some(Role::Migration));
}

#[test]
fn required_tls_refuses_plaintext_logins() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        let (cf, kf) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cf, c.cert.pem()).expect("cert");
        std::fs::write(&kf, c.signing_key.serialize_pem()).expect("key");
        (cf, kf)
    };
    let required = config(
        dir.path(),
        &format!(
            "[listen.tls]\nmode = \"require\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    let web = auth::claimed(&required, "web");
    let e = auth::check_transport(&required, &web, false, peer(LOOPBACK));
    assert!(matches!(e, Err(LoginError::TlsRequired)), "{e:?}");
    assert!(auth::check_transport(&required, &web, true, peer(LOOPBACK)).is_ok());
}

/// Run the client side of SCRAM-SHA-256 over `client` with `password`;
/// returns the server's final message (none when it refused: the login's
/// caller sends the error).
async fn scram_client(client: &mut DuplexStream, password: &str) -> Option<(u8, Vec<u8>)> {
    let (tag, body) = read_message(client).await;
    assert_eq!(tag, b'R');
    assert_eq!(&body[..4], &10i32.to_be_bytes(), "AuthenticationSASL");
    let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let mut initial = BytesMut::new();
    initial.put_slice(b"SCRAM-SHA-256\0");
    initial.put_i32(scram.message().len() as i32);
    initial.put_slice(scram.message());
    client
        .write_all(&message(b'p', &initial))
        .await
        .expect("send");
    let (tag, body) = read_message(client).await;
    assert_eq!((tag, &body[..4]), (b'R', &11i32.to_be_bytes()[..]));
    scram.update(&body[4..]).expect("server-first");
    client
        .write_all(&message(b'p', scram.message()))
        .await
        .expect("send");
    let mut header = [0u8; 5];
    client.read_exact(&mut header).await.ok()?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    client.read_exact(&mut body).await.ok()?;
    Some((header[0], body))
}

async fn authenticate(
    config: &Config,
    who: Who,
    server: &mut Pipe,
) -> Result<Identity, LoginError> {
    let (mut pending, mut out) = (BytesMut::new(), BytesMut::new());
    auth::authenticate(config, &[7u8; 32], server, &mut pending, &mut out, &who).await
}

#[tokio::test]
async fn scram_admits_the_right_password_only() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = Arc::new(config(dir.path(), ""));
    for (user, password, admitted) in [
        ("web", WEB_PASSWORD, true),
        ("web", "wrong", false),
        // An unknown name runs the same exchange and fails the same way.
        ("mallory", WEB_PASSWORD, false),
    ] {
        let (mut client, mut server) = pipe();
        let who = auth::claimed(&cfg, user);
        let c = cfg.clone();
        let task = tokio::spawn(async move { authenticate(&c, who, &mut server).await });
        let last = scram_client(&mut client, password).await;
        let result = task.await.expect("task");
        if admitted {
            let (tag, body) = last.expect("SASLFinal");
            assert_eq!(
                (tag, &body[..4]),
                (b'R', &12i32.to_be_bytes()[..]),
                "SASLFinal"
            );
            let id = result.expect("admitted");
            assert_eq!((id.role, id.service.as_str()), (Role::Runtime, "default"));
        } else {
            let e = result.err().expect("refused");
            assert!(matches!(e, LoginError::BadPassword { .. }), "{user}: {e:?}");
        }
    }
}

#[tokio::test]
async fn a_migration_login_takes_a_token_as_its_password() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = Arc::new(config(dir.path(), ""));
    let good = token(dir.path());
    let mut cleartext = b"".to_vec();
    cleartext.extend_from_slice(&3i32.to_be_bytes());
    for (password, admitted) in [(good.as_str(), true), ("not-a-token", false)] {
        let (mut client, mut server) = pipe();
        let who = auth::claimed(&cfg, "migrator");
        let c = cfg.clone();
        let task = tokio::spawn(async move { authenticate(&c, who, &mut server).await });
        let (tag, body) = read_message(&mut client).await;
        assert_eq!(
            (tag, body),
            (b'R', cleartext.clone()),
            "AuthenticationCleartextPassword"
        );
        let mut p = password.as_bytes().to_vec();
        p.push(0);
        client.write_all(&message(b'p', &p)).await.expect("send");
        match task.await.expect("task") {
            Ok(id) if admitted => {
                assert_eq!(id.role, Role::Migration);
                assert_eq!(id.name(), "ci-job");
            }
            Err(LoginError::Token(r)) if !admitted => assert_eq!(r.sqlstate, "28P01"),
            other => panic!("{password}: {:?}", other.map(|i| i.name())),
        }
    }
    // Anything but a password message breaks the protocol.
    let (mut client, mut server) = pipe();
    let who = auth::claimed(&cfg, "migrator");
    let c = cfg.clone();
    let task = tokio::spawn(async move { authenticate(&c, who, &mut server).await });
    let _ = read_message(&mut client).await;
    client
        .write_all(&message(b'Q', b"select 1\0"))
        .await
        .expect("send");
    let e = task.await.expect("task").err().expect("refused");
    assert!(matches!(e, LoginError::ExpectedPassword), "{e:?}");
}
