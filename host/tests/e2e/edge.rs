//! The production edge: `wss://` on both listeners with certificates made
//! at test time (tokio-tungstenite over rustls, Python `websockets` with an
//! SSL context), swapped without dropping open connections.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
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

/// An HS256 token for `claims` signed with `secret`.
fn token(secret: &str, claims: serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn request(url: &str, headers: &[(&str, &str)]) -> http::Request<()> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_auth_admits_only_verified_tokens_and_the_handler_sees_the_claims() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "first-secret\n").unwrap();
    let body = format!(
        r#"
[plugins.relay]
component = @relay@
[[routes]]
path = "/room"
plugin = "relay"
subprotocols = ["wharf"]
[routes.auth]
hs256_secret_file = {secret_file:?}
audience = "wharf-test"
close_on_expiry = true
"#
    );
    let config = config_from(&body);
    let host = spawn(config.clone()).await;
    let url = format!("ws://{}/room", host.addr);
    let good = |sub: &str, ttl: u64| {
        token("first-secret", json!({"sub": sub, "aud": "wharf-test", "exp": unix_now() + ttl, "role": "mod"}))
    };

    // Refused before any handler runs: nothing is recorded.
    assert_eq!(refusal(request(&url, &[])).await, (401, "a token is required".into()));
    let forged = token("wrong", json!({"aud": "wharf-test", "exp": unix_now() + 60}));
    let (status, why) = refusal(request(&format!("{url}?token={forged}"), &[])).await;
    assert_eq!(status, 401);
    assert!(why.contains("InvalidSignature"), "{why}");
    let expired = token("first-secret", json!({"aud": "wharf-test", "exp": unix_now() - 10}));
    assert!(refusal(request(&format!("{url}?token={expired}"), &[])).await.1.contains("ExpiredSignature"));
    let wrong_aud = token("first-secret", json!({"aud": "elsewhere", "exp": unix_now() + 60}));
    assert!(refusal(request(&format!("{url}?token={wrong_aud}"), &[])).await.1.contains("InvalidAudience"));
    let (_, list) = admin(&host, "GET", "/connections", None).await;
    assert_eq!(list["connections"].as_array().map(Vec::len), Some(0), "{list}");
    let (_, metrics) = admin(&host, "GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(metrics.contains(r#"wharf_auth_refused_total{reason="missing",route="/room"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"wharf_auth_refused_total{reason="invalid",route="/room"} 3"#), "{metrics}");

    // The query, a bearer header and a subprotocol entry all carry it; the
    // handler sees the claims as metadata.
    async fn opened(req: http::Request<()>) -> (Client, Option<String>) {
        let (mut ws, resp) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await.unwrap().expect("opens");
        assert!(expect_text(&mut ws).await.starts_with("id:"));
        let protocol = resp.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_string());
        (ws, protocol)
    }
    let (mut by_query, _) = opened(request(&format!("{url}?token={}", good("ada", 60)), &[])).await;
    assert_eq!(ask(&mut by_query, "get:auth.sub").await, "auth.sub=ada");
    let claims = ask(&mut by_query, "get:auth.claims").await;
    let claims: serde_json::Value = serde_json::from_str(claims.strip_prefix("auth.claims=").unwrap()).unwrap();
    assert_eq!((claims["role"].as_str(), claims["aud"].as_str()), (Some("mod"), Some("wharf-test")));
    let bearer = format!("Bearer {}", good("bob", 60));
    let (mut by_header, _) = opened(request(&url, &[("authorization", &bearer)])).await;
    assert_eq!(ask(&mut by_header, "get:auth.sub").await, "auth.sub=bob");
    let offer = format!("wharf, wharf.token.{}", good("cy", 60));
    let (mut by_protocol, chosen) = opened(request(&url, &[("sec-websocket-protocol", &offer)])).await;
    assert_eq!(chosen.as_deref(), Some("wharf"), "the token entry is never the chosen subprotocol");
    assert_eq!(ask(&mut by_protocol, "get:auth.sub").await, "auth.sub=cy");

    // close_on_expiry: a token that expires closes its connection with 3000.
    let (mut short, _) = opened(request(&format!("{url}?token={}", good("dee", 2)), &[])).await;
    let started = std::time::Instant::now();
    assert_eq!(expect_close(&mut short).await, 3000);
    assert!(started.elapsed() <= Duration::from_secs(4), "closed {:?} after opening", started.elapsed());
    assert_eq!(ask(&mut by_query, "get:auth.sub").await, "auth.sub=ada", "others stay open");

    // A config reload re-reads the key: old tokens stop opening, open
    // connections stay.
    std::fs::write(&secret_file, "second-secret").unwrap();
    host.app().serve_config(&config).await.expect("reload");
    assert_eq!(refusal(request(&format!("{url}?token={}", good("eve", 60)), &[])).await.0, 401);
    let fresh = token("second-secret", json!({"sub": "eve", "aud": "wharf-test", "exp": unix_now() + 60}));
    let (mut eve, _) = opened(request(&format!("{url}?token={fresh}"), &[])).await;
    assert_eq!(ask(&mut eve, "get:auth.sub").await, "auth.sub=eve");
    assert_eq!(ask(&mut by_header, "get:auth.sub").await, "auth.sub=bob");
    // A key that cannot be read refuses the reload and changes nothing.
    std::fs::remove_file(&secret_file).unwrap();
    let err = format!("{:#}", host.app().serve_config(&config).await.expect_err("refused"));
    assert!(err.contains("routes[0].auth") && err.contains("hs256_secret_file: cannot read"), "{err}");
    let (mut again, _) = opened(request(&format!("{url}?token={fresh}"), &[])).await;
    assert_eq!(ask(&mut again, "get:auth.sub").await, "auth.sub=eve");
    host.stop().await.unwrap();
}

/// Runs a Python `websockets` script (from the test venv) with `args`; its
/// stdout, or a panic with its stderr.
async fn python(script: &'static str, args: Vec<String>) -> String {
    let python = repo_root().join("target/grip-venv/bin/python");
    assert!(python.is_file(), "{} is missing: run `make test-deps`", python.display());
    let out = tokio::task::spawn_blocking(move || Command::new(python).arg("-c").arg(script).args(args).output())
        .await
        .unwrap()
        .expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permessage_deflate_is_negotiated_per_route_and_a_bomb_gets_1009() {
    let host = spawn(config_from(
        r#"
[plugins.echo]
component = @echo@
[[routes]]
path = "/echo"
plugin = "echo"
compression = "deflate"
[[routes]]
path = "/plain"
plugin = "echo"
[[routes]]
path = "/small"
plugin = "echo"
compression = "deflate"
[routes.limits]
max_message_bytes = 65536
"#,
    ))
    .await;
    // websockets offers permessage-deflate with client_max_window_bits, as
    // browsers do; the echo comes back compressed and inflates to the same.
    let script = r#"
import asyncio, sys
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError
async def main(base):
    async with connect(base + "/echo", max_size=None) as ws:
        print(ws.response.headers.get("Sec-WebSocket-Extensions"))
        for msg in ["hi", '{"type":"chat","text":"' + "hello " * 500 + '"}', bytes(range(256)) * 64, "é" * 10000]:
            await ws.send(msg)
            assert await asyncio.wait_for(ws.recv(), 10) == msg, "echo differs"
        # A fragmented compressed message.
        await ws.send(["part one, " * 50, "part two, " * 50])
        assert await asyncio.wait_for(ws.recv(), 10) == "part one, " * 50 + "part two, " * 50
    async with connect(base + "/plain") as ws:
        print(ws.response.headers.get("Sec-WebSocket-Extensions"))
        await ws.send("plain"); assert await asyncio.wait_for(ws.recv(), 10) == "plain"
    async with connect(base + "/small", max_size=None) as ws:
        # 4 MiB of one letter compresses to a few KiB: inflated, it is far
        # past the route's 64 KiB.
        await ws.send("z" * (4 << 20))
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosedError as e:
            print(e.rcvd.code)
asyncio.run(main(sys.argv[1]))
"#;
    let out = python(script, vec![format!("ws://{}", host.addr)]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["permessage-deflate; client_no_context_takeover", "None", "1009"], "{out}");
    // Every message reached the handler once; the bomb never did.
    let (_, metrics) = admin(&host, "GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap_or_default();
    assert!(metrics.contains("wharf_messages_received_total{route=\"/echo\"} 5"), "{metrics}");
    assert!(metrics.contains("wharf_messages_sent_total{route=\"/echo\"} 5"), "{metrics}");
    assert!(metrics.contains("wharf_messages_received_total{route=\"/small\"} 0"), "{metrics}");
    host.stop().await.unwrap();
}
