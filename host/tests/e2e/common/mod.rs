//! Helpers for end-to-end tests: a real host on 127.0.0.1 port 0 running the
//! real example components, and a real WebSocket client with timeouts.

pub use wharf_test_support::redis_server;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use wharf::app::Running;
use wharf::config::Config;

/// How long any single expectation may wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// The admin token every test host uses.
pub const ADMIN_TOKEN: &str = "test-token";

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A built guest component, or a panic that says how to build it. Names
/// with a language prefix (`js-echo`, `ts-chat`, `py-echo`) are the
/// components `make components` builds with `wharf build`.
pub fn component(name: &str) -> PathBuf {
    if ["js-", "ts-", "py-"].iter().any(|p| name.starts_with(p)) {
        let path = repo_root().join(format!("target/components/{name}.wasm"));
        assert!(path.is_file(), "component {} is missing: build it first with `make components`", path.display());
        return path;
    }
    let file = name.replace('-', "_");
    let path = repo_root().join(format!("target/wasm32-wasip2/release/{file}.wasm"));
    assert!(
        path.is_file(),
        "component {} is missing: build the guest components first with `make guests`",
        path.display()
    );
    path
}

/// A config with the given `(path, plugin)` routes, each plugin running the
/// component of the same name; `extra` is appended TOML (e.g. `[limits]`).
pub fn config(routes: &[(&str, &str)], extra: &str) -> Config {
    let routes: Vec<_> = routes.iter().map(|(path, plugin)| (*path, *plugin, "pooled")).collect();
    config_with_instances(&routes, extra)
}

/// Like [`config`], with each route's `instances` setting given.
pub fn config_with_instances(routes: &[(&str, &str, &str)], extra: &str) -> Config {
    let mut text = String::from("listen = \"127.0.0.1:0\"\nstore = \"memory\"\n");
    text += &format!("cache_dir = {:?}\n", cache_dir().display().to_string());
    text += extra;
    text += &format!("\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n");
    let mut plugins: Vec<&str> = routes.iter().map(|(_, p, _)| *p).collect();
    plugins.sort();
    plugins.dedup();
    for p in plugins {
        text += &format!("[plugins.{p}]\ncomponent = {:?}\n", component(p).display().to_string());
    }
    for (path, plugin, instances) in routes {
        text += &format!("[[routes]]\npath = \"{path}\"\nplugin = \"{plugin}\"\ninstances = \"{instances}\"\n");
    }
    let config = Config::parse(&text, "test config").expect("test config parses");
    config.validate("test config").expect("test config is valid");
    config
}

/// `wharf serve --config CONFIG` as a child process, logging at `info`;
/// each line it writes to stderr arrives on the receiver.
pub fn serve_process(config: &std::path::Path) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env_remove("WHARF_ADMIN_TOKEN")
        .current_dir(config.parent().expect("the config is in a directory"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wharf serve starts");
    let stderr = std::io::BufReader::new(child.stderr.take().expect("piped stderr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// The compile cache the tests share.
pub fn cache_dir() -> PathBuf {
    repo_root().join("target/test-data/cache")
}

/// An HTTP/1.1 request over a fresh connection; the status and body.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> (u16, String) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        req += &format!("Authorization: Bearer {token}\r\n");
    }
    let body = body.unwrap_or(("", b""));
    if !body.0.is_empty() {
        req += &format!("Content-Type: {}\r\n", body.0);
    }
    req += &format!("Content-Length: {}\r\n\r\n", body.1.len());
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body.1);
    http_raw(addr, &raw).await
}

/// Sends `request` as it is over a fresh connection; the status and body
/// of the answer.
pub async fn http_raw(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect to admin");
    tcp.write_all(request).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut resp)).await.expect("admin answered in time").unwrap();
    let resp = String::from_utf8(resp).expect("UTF-8 response");
    let (head, body) = resp.split_once("\r\n\r\n").expect("a complete HTTP response");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    (status, body.to_string())
}

/// An admin API request with the test token; the status and JSON body.
pub async fn admin(
    running: &Running,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> (u16, serde_json::Value) {
    let addr = running.admin_addr.expect("admin API enabled");
    let (status, body) = http(addr, method, path, Some(ADMIN_TOKEN), body).await;
    let json = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body))
    };
    (status, json)
}

/// Starts a host with `config` on 127.0.0.1 port 0.
pub async fn spawn(config: Config) -> Running {
    wharf::telemetry::init();
    wharf::app::start(config).await.expect("host starts")
}

/// Opens a WebSocket to `path` on `running`.
pub async fn connect(running: &Running, path: &str) -> Client {
    let url = format!("ws://{}{}", running.addr, path);
    let (ws, _) = tokio::time::timeout(WAIT, connect_async(url.as_str()))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    ws
}

/// The next data message, skipping pings and pongs.
pub async fn next_data(ws: &mut Client) -> Message {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("connection ended")
            .expect("read error");
        match msg {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

/// The next text message.
pub async fn expect_text(ws: &mut Client) -> String {
    match next_data(ws).await {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Sends a text message.
pub async fn send_text(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// Waits for the server's close frame; its code.
/// The HTTP status a handshake on `path` was refused with (`None`: accepted).
pub async fn refused_with(host: &Running, path: &str) -> Option<u16> {
    let url = format!("ws://{}{path}", host.addr);
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => None,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Some(resp.status().as_u16()),
        Err(e) => panic!("handshake on {path} failed: {e}"),
    }
}

/// The HTTP status and body a handshake was refused with; a panic when it
/// opened or failed otherwise.
pub async fn refusal(request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin) -> (u16, String) {
    match tokio::time::timeout(WAIT, connect_async(request)).await.expect("handshake answered") {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, the connection opened"),
    }
}

/// Sends `text` and returns the text that comes back.
pub async fn ask(ws: &mut Client, text: &str) -> String {
    send_text(ws, text).await;
    expect_text(ws).await
}

pub async fn expect_close(ws: &mut Client) -> u16 {
    match next_data(ws).await {
        Message::Close(Some(frame)) => u16::from(frame.code),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Asserts that nothing but pings arrives within `wait`.
pub async fn expect_silence(ws: &mut Client, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected no message, got {other:?}"),
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most [`WAIT`].
pub async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "condition not met within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A config from TOML `body` (plugins, routes, limits) in which `@NAME@`
/// stands for the path of built component NAME, with the test listener,
/// store, cache and admin settings added.
pub fn config_from(body: &str) -> Config {
    let mut text = String::from("listen = \"127.0.0.1:0\"\nstore = \"memory\"\n");
    text += &format!("cache_dir = {:?}\n", cache_dir().display().to_string());
    text += &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n");
    for (i, part) in body.split('@').enumerate() {
        if i % 2 == 1 {
            text += &format!("{:?}", component(part).display().to_string());
        } else {
            text += part;
        }
    }
    let config = Config::parse(&text, "test config").unwrap_or_else(|e| panic!("test config parses: {e}"));
    config.validate("test config").unwrap_or_else(|e| panic!("test config is valid: {e}"));
    config
}

/// A client on a route served by `echo` that keeps asking and checks every
/// answer, to show that a misbehaving neighbour does not disturb it.
pub struct EchoProbe {
    stop: tokio::sync::oneshot::Sender<()>,
    answered: std::sync::Arc<std::sync::atomic::AtomicU32>,
    task: tokio::task::JoinHandle<Duration>,
}

impl EchoProbe {
    /// Starts probing `path` on `running` every 5 ms, on one connection.
    pub async fn start(running: &Running, path: &str) -> EchoProbe {
        use std::sync::atomic::Ordering;
        let mut ws = connect(running, path).await;
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let count = answered.clone();
        let task = tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for i in 0..100_000u32 {
                if stopped.try_recv().is_ok() {
                    break;
                }
                let started = std::time::Instant::now();
                let text = format!("probe {i}");
                send_text(&mut ws, &text).await;
                assert_eq!(expect_text(&mut ws).await, text, "the echo neighbour answered wrongly");
                slowest = slowest.max(started.elapsed());
                count.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = ws.close(None).await;
            slowest
        });
        EchoProbe { stop, answered, task }
    }

    /// Round trips answered so far.
    pub fn answered(&self) -> u32 {
        self.answered.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until more than `before` round trips have been answered.
    pub async fn answers_after(&self, before: u32) {
        eventually(|| async { (self.answered() > before).then_some(()) }).await;
    }

    /// Stops probing; how many round trips were answered and the slowest.
    /// Panics if any answer was wrong or missing.
    pub async fn finish(self) -> (u32, Duration) {
        let EchoProbe { stop, answered, task } = self;
        let _ = stop.send(());
        let slowest = tokio::time::timeout(WAIT, task).await.expect("probe stops").expect("every probe was answered");
        (answered.load(std::sync::atomic::Ordering::SeqCst), slowest)
    }
}

/// Sends each of `cmds` to `/faulty` on a connection of its own: each must
/// close that connection with 1011 while `probe` (an echo neighbour) keeps
/// being answered, during an infinite loop too (`spin`), and `bystander` (a
/// connection of the same plugin) still answers. Then each connection must
/// have had exactly one on-close, with 1011, as the faulty handler records
/// it (`close-code?ID`).
pub async fn each_command_fails_only_its_own_event(
    host: &Running,
    probe: &EchoProbe,
    bystander: &mut Client,
    cmds: &[&str],
) {
    let mut ids = Vec::new();
    for cmd in cmds {
        let mut ws = connect(host, "/faulty").await;
        ids.push(ask(&mut ws, "whoami").await);
        let before = probe.answered();
        send_text(&mut ws, cmd).await;
        assert_eq!(expect_close(&mut ws).await, 1011, "`{cmd}` closes its own connection with 1011");
        if *cmd == "spin" {
            // The loop ran for its whole 100 ms budget: the neighbour (a
            // round trip every 5 ms) was answered while it ran.
            assert!(probe.answered() > before, "the echo neighbour was answered during the infinite loop");
        }
        probe.answers_after(probe.answered()).await;
        assert_eq!(ask(bystander, &format!("after {cmd}")).await, format!("after {cmd}"));
    }
    for id in &ids {
        let code = eventually(|| async move {
            let mut ws = connect(host, "/faulty").await;
            let code = ask(&mut ws, &format!("close-code?{id}")).await;
            (!code.is_empty()).then_some(code)
        })
        .await;
        assert_eq!(code, "1011", "on-close of connection {id}");
    }
}

/// A certificate authority made for one test, and the server certificates
/// it signs (for `localhost` and 127.0.0.1), written as PEM files.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA's certificate, PEM.
    pub pem: String,
}

impl TestCa {
    /// A new CA with a fresh P-256 key.
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) }
    }

    /// Writes a server certificate and key signed by this CA to
    /// `dir/NAME.crt` and `dir/NAME.key`.
    pub fn server_files(&self, dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params");
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("server certificate");
        let (cert_file, key_file) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&cert_file, cert.pem()).expect("write certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        (cert_file, key_file)
    }

    /// A rustls client that trusts this CA only.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("CA PEM")).expect("CA root");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
    }

    /// A TLS connection to `addr` (as `localhost`) trusting this CA.
    pub async fn tls(&self, addr: std::net::SocketAddr) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("a DNS name");
        tokio::time::timeout(WAIT, self.connector().connect(name, tcp)).await.map_err(std::io::Error::other)?
    }
}
