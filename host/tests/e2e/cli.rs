//! The `wharf` binary: config errors name the file and key; SIGTERM closes
//! every connection with 1001 and exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use tokio_tungstenite::connect_async;

fn wharf() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.env("RUST_LOG", "info").env_remove("WHARF_CONFIG").env_remove("WHARF_LISTEN");
    cmd
}

fn serve_fails_with(config_text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    // Keep the embedded store out of the working directory.
    std::fs::write(&path, format!("store = \"memory\"\n{config_text}")).unwrap();
    let out = wharf().args(["serve", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success(), "a bad config must not start the host");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&path.display().to_string()), "error does not name the file: {stderr}");
    stderr
}

#[test]
fn bad_configs_are_refused_naming_the_file_and_key() {
    let e = serve_fails_with("listen = \"127.0.0.1:0\"\nlisten_port = 9\n");
    assert!(e.contains("line 3"), "the position counts the file's own lines: {e}");
    assert!(e.contains("listen_port"), "{e}");
    let e = serve_fails_with("[limits]\nevent_timeout_ms = \"soon\"\n");
    assert!(e.contains("limits.event_timeout_ms"), "{e}");
    let e = serve_fails_with("[[routes]]\npath = \"/x\"\nplugin = \"ghost\"\n");
    assert!(e.contains("routes[0].plugin") && e.contains("ghost"), "{e}");
    let e = serve_fails_with("[plugins.p]\ncomponent = \"missing.wasm\"\n[[routes]]\npath = \"/x\"\nplugin = \"p\"\n");
    assert!(e.contains("plugin `p`") && e.contains("missing.wasm"), "{e}");
    // Bytes that are not a component are refused with the plugin's name.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    let e = serve_fails_with(&format!(
        "[plugins.junk]\ncomponent = {:?}\n[[routes]]\npath = \"/x\"\nplugin = \"junk\"\n",
        junk.display().to_string()
    ));
    assert!(e.contains("plugin `junk`") && e.contains("not a valid component"), "{e}");
}

#[test]
fn missing_config_file_is_named() {
    let out = wharf().args(["serve", "--config", "/nonexistent/wharf.toml"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("/nonexistent/wharf.toml") && stderr.contains("cannot read"), "{stderr}");
}

/// A `wharf serve` process with its bound address and its log lines.
struct Served {
    child: std::process::Child,
    addr: String,
    log: std::sync::mpsc::Receiver<String>,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config for the binary on 127.0.0.1 port 0 serving `routes` (path,
/// plugin), its data under `dir`.
fn binary_config(dir: &std::path::Path, routes: &[(&str, &str)]) -> String {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\ncache_dir = {:?}\n[admin]\nenabled = false\n",
        dir.join("data").display().to_string(),
        cache_dir().display().to_string()
    );
    for (route, plugin) in routes {
        text += &format!(
            "[plugins.{plugin}]\ncomponent = {:?}\n[[routes]]\npath = \"{route}\"\nplugin = \"{plugin}\"\n",
            component(plugin).display().to_string()
        );
    }
    text
}

/// Sends a signal (`TERM`, `INT`, `HUP`) to the served process.
fn signal(served: &Served, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &served.child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name} failed");
}

/// Waits (at most 20 s) for a child to exit.
fn wait_for_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "wharf did not exit within 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts the binary on 127.0.0.1 port 0 serving `routes` (path, plugin).
fn serve_binary(routes: &[(&str, &str)]) -> Served {
    serve_binary_in(tempfile::tempdir().unwrap(), routes, "")
}

/// Like [`serve_binary`], its files in `dir` and `extra` TOML appended.
fn serve_binary_in(dir: tempfile::TempDir, routes: &[(&str, &str)], extra: &str) -> Served {
    let path = dir.path().join("wharf.toml");
    let text = binary_config(dir.path(), routes) + extra;
    std::fs::write(&path, text).unwrap();
    let mut child = wharf().args(["serve", "--config"]).arg(&path).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The host logs its bound address once it listens.
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let line =
            log.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("host logged its address");
        if let Some(addr) = line.split("addr=").nth(1) {
            break addr.trim().to_string();
        }
    };
    Served { child, addr, log, config: path, _dir: dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_connections_with_1001_and_exits_zero() {
    let mut served = serve_binary(&[("/echo", "echo")]);
    let (mut ws, _) = connect_async(format!("ws://{}/echo", served.addr).as_str()).await.unwrap();
    send_text(&mut ws, "before").await;
    assert_eq!(expect_text(&mut ws).await, "before");

    signal(&served, "TERM");
    assert_eq!(expect_close(&mut ws).await, 1001);
    let status = wait_for_exit(&mut served.child);
    assert!(status.success(), "wharf exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_panic_message_reaches_the_host_log() {
    let served = serve_binary(&[("/faulty", "faulty")]);
    let (mut ws, _) = connect_async(format!("ws://{}/faulty", served.addr).as_str()).await.unwrap();
    send_text(&mut ws, "panic").await;
    assert_eq!(expect_close(&mut ws).await, 1011);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = served.log.recv_timeout(left).unwrap_or_else(|_| panic!("no panic message in the log: {seen:#?}"));
        if line.contains("asked to panic") && line.contains("plugin=\"faulty\"") {
            break;
        }
        seen.push(line);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_routes() {
    let served = serve_binary(&[("/echo", "echo")]);
    let (mut echo, _) = connect_async(format!("ws://{}/echo", served.addr).as_str()).await.unwrap();
    send_text(&mut echo, "before").await;
    assert_eq!(expect_text(&mut echo).await, "before");

    let dir = served.config.parent().unwrap();
    // The new route's handler keeps no state, so that its answers do not
    // wait on a disk this test does not own.
    std::fs::write(&served.config, binary_config(dir, &[("/v1", "echo-v1")])).unwrap();
    signal(&served, "HUP");

    // The removed route's connection is closed with 1001; the new route serves.
    assert_eq!(expect_close(&mut echo).await, 1001);
    let (mut v1, _) = connect_async(format!("ws://{}/v1", served.addr).as_str()).await.unwrap();
    send_text(&mut v1, "a").await;
    assert_eq!(expect_text(&mut v1).await, "v1:a");
    match connect_async(format!("ws://{}/echo", served.addr).as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 404),
        other => panic!("/echo should be gone, got {other:?}"),
    }

    // A broken config is refused and the host keeps serving.
    std::fs::write(&served.config, "routes = 5\n").unwrap();
    signal(&served, "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_text(&mut v1, "b").await;
    assert_eq!(expect_text(&mut v1).await, "v1:b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_without_waiting() {
    let mut served = serve_binary(&[("/echo", "echo")]);
    // A client that never reads keeps the closing handshake waiting.
    let (mut ws, _) = connect_async(format!("ws://{}/echo", served.addr).as_str()).await.unwrap();
    send_text(&mut ws, "x").await;
    assert_eq!(expect_text(&mut ws).await, "x");
    signal(&served, "TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&served, "INT");
    let status = wait_for_exit(&mut served.child);
    // A graceful shutdown exits 0; only the second-signal path exits 1.
    assert_eq!(status.code(), Some(1), "{status}");
    drop(ws);
}

#[test]
fn a_missing_or_mismatched_certificate_is_refused_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let (cert, key) = ca.server_files(dir.path(), "a");
    let (_, other_key) = ca.server_files(dir.path(), "b");
    let e = serve_fails_with(&format!("[tls]\ncert = {cert:?}\nkey = {other_key:?}\n"));
    assert!(e.contains("tls") && e.contains("b.key does not match the certificate"), "{e}");
    let e = serve_fails_with(&format!("[admin.tls]\ncert = \"nowhere.crt\"\nkey = {key:?}\n"));
    assert!(e.contains("admin.tls") && e.contains("cannot read the certificate") && e.contains("nowhere.crt"), "{e}");
    let e = serve_fails_with("[tls]\ncert = \"a.crt\"\n");
    assert!(e.contains("tls") && e.contains("missing field `key`"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    ca.server_files(dir.path(), "server");
    let served = serve_binary_in(dir, &[("/echo", "echo")], "[tls]\ncert = \"server.crt\"\nkey = \"server.key\"\n");
    let addr: std::net::SocketAddr = served.addr.parse().unwrap();
    ca.tls(addr).await.expect("the relative paths resolve against the config's directory");
    signal(&served, "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = served.log.recv_timeout(left).expect("SIGHUP logs the certificate reload");
        if line.contains("TLS certificate reloaded") && line.contains("server.crt") {
            break;
        }
    }
    ca.tls(addr).await.expect("still serving TLS after SIGHUP");
}

#[test]
fn wharf_token_mints_what_a_route_with_that_secret_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "minted\n").unwrap();
    let out = wharf()
        .args(["token", "--sub", "ada", "--aud", "chat", "--ttl", "60", "--secret-file"])
        .arg(&secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let config = wharf::config::AuthConfig {
        hs256_secret_file: Some(secret),
        audience: Some("chat".into()),
        ..Default::default()
    };
    let verified =
        wharf::auth::Verifier::load(&config).unwrap().verify(token.trim()).expect("the minted token verifies");
    assert_eq!(verified.metadata[0], ("auth.sub".to_string(), "ada".to_string()));
    let wrong = wharf::config::AuthConfig { audience: Some("other".into()), ..config };
    assert!(wharf::auth::Verifier::load(&wrong).unwrap().verify(token.trim()).is_err());
    let out = wharf().args(["token", "--secret-env", "WHARF_TEST_SURELY_UNSET_VARIABLE"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("WHARF_TEST_SURELY_UNSET_VARIABLE"));
}
