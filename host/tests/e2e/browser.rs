//! The chat page in a real headless browser: two pages served by the host
//! over HTTPS and `wss://` with permessage-deflate, a message typed in one
//! appears in both. Needs Debian's `chromium` and the npm packages of
//! `host/tests/browser` (`make test` installs both).

use std::process::Command;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_page_works_in_headless_chromium() {
    let dir = repo_root().join("host/tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci --prefix host/tests/browser` (make test does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: `apt-get install chromium` (make test does)"
    );
    let static_dir = repo_root().join("examples/static").display().to_string();
    let (ca, certs) = (TestCa::new("browser test CA"), tempfile::tempdir().unwrap());
    let (cert, key) = ca.server_files(certs.path(), "server");
    let mut config = config_from(&format!(
        "[plugins.chat]\ncomponent = @chat@\n[[routes]]\npath = \"/chat\"\nplugin = \"chat\"\ncompression = \"deflate\"\n\
         [tls]\ncert = {cert:?}\nkey = {key:?}\n"
    ));
    config.static_dir = Some(static_dir.into());
    let host = spawn(config).await;
    let url = format!("https://localhost:{}/", host.addr.port());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node").arg(dir.join("chat.mjs")).arg(url).output().expect("running node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ada: hello from the browser"), "{stdout}");
    assert!(
        stdout.contains("protocol: https:; extensions: permessage-deflate; client_no_context_takeover"),
        "Chromium negotiated permessage-deflate over TLS: {stdout}"
    );
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rooms_page_shows_every_message_once_in_order_after_a_drop() {
    let dir = repo_root().join("host/tests/browser");
    assert!(dir.join("node_modules/playwright-core").is_dir(), "playwright-core is missing: run `make test-deps`");
    let static_dir = repo_root().join("examples/static").display().to_string();
    let mut config = config_from(
        "[plugins.rooms]\ncomponent = @rooms@\n[[routes]]\npath = \"/rooms\"\nplugin = \"rooms\"\n\
         [[channels]]\nmatch = \"room:*\"\nhistory_size = 100\nhistory_ttl_ms = 600000\n",
    );
    config.static_dir = Some(static_dir.into());
    let host = spawn(config).await;
    let url = format!("http://127.0.0.1:{}/", host.addr.port());
    let admin = format!("http://{}", host.admin_addr.expect("admin API"));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(dir.join("rooms.mjs"))
            .args([url, admin, ADMIN_TOKEN.to_string()])
            .output()
            .expect("running node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ok: every message once, in order, after a drop"), "{stdout}");
    host.stop().await.unwrap();
}
