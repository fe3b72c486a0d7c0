//! The `wharf` binary: config errors name the file and key; SIGTERM closes
//! every connection with 1001 and exits 0.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tokio_tungstenite::connect_async;

fn wharf() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.env("RUST_LOG", "info").env_remove("WHARF_CONFIG").env_remove("WHARF_LISTEN");
    cmd
}

fn serve_fails_with(config_text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config_text).unwrap();
    let out = wharf().args(["serve", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success(), "a bad config must not start the host");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&path.display().to_string()), "error does not name the file: {stderr}");
    stderr
}

#[test]
fn bad_configs_are_refused_naming_the_file_and_key() {
    let e = serve_fails_with("listen = \"127.0.0.1:0\"\nlisten_port = 9\n");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_connections_with_1001_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[plugins.echo]\ncomponent = {:?}\n[[routes]]\npath = \"/echo\"\nplugin = \"echo\"\n",
        repo_root().join("target/test-data").display().to_string(),
        component("echo").display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    let mut child = wharf().args(["serve", "--config"]).arg(&path).stderr(Stdio::piped()).spawn().unwrap();

    // The host logs its bound address; read stderr until it does.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("addr=").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("host logged its address");

    let (mut ws, _) = connect_async(format!("ws://{addr}/echo").as_str()).await.unwrap();
    send_text(&mut ws, "before").await;
    assert_eq!(expect_text(&mut ws).await, "before");

    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    assert_eq!(expect_close(&mut ws).await, 1001);

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wharf did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "wharf exited with {status}");
}
