//! The production edge: `wss://` on both listeners with certificates made
//! at test time (tokio-tungstenite over rustls, Python `websockets` with an
//! SSL context), swapped without dropping open connections.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const ECHO: &str = r#"
[plugins.echo]
component = @echo@
[[routes]]
path = "/echo"
plugin = "echo"
"#;

type TlsClient = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A `wss://` connection to `path`, trusting `ca`.
async fn wss(ca: &TestCa, addr: std::net::SocketAddr, path: &str) -> std::io::Result<TlsClient> {
    let tls = ca.tls(addr).await?;
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, tls))
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?;
    Ok(ws)
}

async fn echo(ws: &mut TlsClient, text: &str) -> String {
    ws.send(Message::text(text)).await.expect("send");
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("answer in time") {
            Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text answer, got {other:?}"),
        }
    }
}

/// A host serving the echo example with `[tls]` and `[admin.tls]` from
/// certificates `ca` signs, written under `dir`.
async fn tls_host(ca: &TestCa, dir: &std::path::Path) -> wharf::app::Running {
    let (cert, key) = ca.server_files(dir, "server");
    let (admin_cert, admin_key) = ca.server_files(dir, "admin");
    spawn(config_from(&format!(
        "{ECHO}\n[tls]\ncert = {cert:?}\nkey = {key:?}\n[admin.tls]\ncert = {admin_cert:?}\nkey = {admin_key:?}\n"
    )))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_serves_rustls_and_python_clients_and_the_admin_api_speaks_https() {
    let (ca, dir) = (TestCa::new("wharf test CA"), tempfile::tempdir().unwrap());
    let host = tls_host(&ca, dir.path()).await;

    let mut ws = wss(&ca, host.addr, "/echo").await.expect("wss handshake");
    assert_eq!(echo(&mut ws, "over tls").await, "over tls");
    let big = "t".repeat(200_000);
    assert_eq!(echo(&mut ws, &big).await, big, "a message spanning many TLS records");
    let tls = ws.get_ref().get_ref().1;
    assert_eq!(tls.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));

    // A TLS 1.2 client is served too; offered HTTP/2 and HTTP/1.1 as a
    // browser offers them, the host picks the one it speaks.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap()).unwrap();
    let mut tls12 = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls12.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls12)).connect(name, tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut ws12, _) = tokio_tungstenite::client_async("wss://localhost/echo", stream).await.unwrap();
    assert_eq!(echo(&mut ws12, "tls 1.2").await, "tls 1.2");

    // A client that does not trust the CA fails its handshake; one that
    // speaks plain HTTP to the TLS port gets nowhere; neither disturbs the
    // open connection.
    let stranger = TestCa::new("another CA");
    assert!(wss(&stranger, host.addr, "/echo").await.is_err(), "an untrusted certificate must fail");
    let plain = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(format!("ws://{}/echo", host.addr)))
        .await
        .expect("the plain handshake ends");
    assert!(plain.is_err(), "plain ws:// must not open on a TLS listener");
    assert_eq!(echo(&mut ws, "still here").await, "still here");

    // Python `websockets` with an SSL context that trusts the CA.
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let script = r#"
import asyncio, ssl, sys
from websockets.asyncio.client import connect
async def main(url, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    async with connect(url, ssl=ctx, open_timeout=10) as ws:
        await ws.send("from python"); assert await asyncio.wait_for(ws.recv(), 10) == "from python"
        print(ws.transport.get_extra_info("ssl_object").version())
asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;
    let url = format!("wss://localhost:{}/echo", host.addr.port());
    let python = repo_root().join("target/grip-venv/bin/python");
    assert!(python.is_file(), "{} is missing: run `make test-deps`", python.display());
    let ca_arg = ca_file.display().to_string();
    let out = tokio::task::spawn_blocking(move || Command::new(python).args(["-c", script, &url, &ca_arg]).output())
        .await
        .unwrap()
        .expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "TLSv1.3");

    // The admin API over HTTPS.
    let admin = host.admin_addr.unwrap();
    let mut tls = ca.tls(admin).await.expect("admin TLS handshake");
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    tokio::time::timeout(WAIT, tls.read_to_string(&mut resp)).await.unwrap().unwrap_or_default();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let mut tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut plain = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut plain)).await.expect("the plain request ends");
    assert!(!plain.starts_with(b"HTTP/"), "plain HTTP must not reach the admin API on a TLS listener");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_certificate_files_reach_new_handshakes_and_open_connections_stay() {
    let (ca, dir) = (TestCa::new("first CA"), tempfile::tempdir().unwrap());
    let host = tls_host(&ca, dir.path()).await;
    let mut open = wss(&ca, host.addr, "/echo").await.expect("wss handshake");
    assert_eq!(echo(&mut open, "before").await, "before");

    // A renewal by another CA, written over the same files: the watcher
    // re-reads them, new handshakes present the new certificate.
    let next = TestCa::new("second CA");
    let (cert, key) = next.server_files(dir.path(), "renewed");
    std::fs::copy(&cert, dir.path().join("server.crt")).unwrap();
    std::fs::copy(&key, dir.path().join("server.key")).unwrap();
    let mut renewed = eventually(|| async { wss(&next, host.addr, "/echo").await.ok() }).await;
    assert_eq!(echo(&mut renewed, "after").await, "after");
    assert!(wss(&ca, host.addr, "/echo").await.is_err(), "the old certificate is no longer presented");
    assert_eq!(echo(&mut open, "still open").await, "still open", "the open connection was not dropped");

    // A broken key is refused on reload and the renewed pair keeps serving.
    std::fs::write(dir.path().join("server.key"), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        .unwrap();
    let err = format!("{:#}", host.app().reload_tls().expect_err("a broken key is refused"));
    assert!(err.contains("server.key"), "{err}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut again = wss(&next, host.addr, "/echo").await.expect("the renewed certificate still serves");
    assert_eq!(echo(&mut again, "again").await, "again");
    host.stop().await.unwrap();
}
