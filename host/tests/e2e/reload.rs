//! Hot reload end to end: swapping a plugin under load drops no connection
//! and loses or repeats no message; bad versions are refused while the old
//! one keeps serving; the admin API uploads and lists plugins.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use wharf::config::Config;

/// A host serving `/echo` from a copy of echo-v1 that the test may replace.
async fn versioned_host(dir: &Path) -> (wharf::app::Running, PathBuf) {
    let file = dir.join("echo.wasm");
    std::fs::copy(component("echo-v1"), &file).unwrap();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstore = \"memory\"\ncache_dir = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n\
         [plugins.echo]\ncomponent = {:?}\n[[routes]]\npath = \"/echo\"\nplugin = \"echo\"\n",
        cache_dir().display().to_string(),
        file.display().to_string()
    );
    let config = Config::parse(&text, "test").unwrap();
    config.validate("test").unwrap();
    (spawn(config).await, file)
}

/// Replaces a file the way a build does: write elsewhere, then rename.
fn replace(file: &Path, bytes: &[u8]) {
    let tmp = file.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// Client `c` echoes numbered messages until it has heard v2 answer five
/// times, checking that every message is answered once, by v1 until the
/// swap and by v2 after it, never v1 again once v2 has answered; then that
/// nothing more is in flight. How many it sent and its slowest round trip.
async fn talk_until_v2(ws: &mut Client, c: usize, swapped: &std::sync::atomic::AtomicBool) -> (u32, Duration) {
    let (mut seen_v2, mut v2_replies, mut sent, mut worst) = (false, 0, 0u32, Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(60);
    while v2_replies < 5 {
        assert!(Instant::now() < deadline, "client {c} never heard v2");
        let payload = format!("c{c}-{sent}");
        let t = Instant::now();
        ws.send(Message::text(payload.clone())).await.expect("connection still open");
        let reply = expect_text(ws).await;
        worst = worst.max(t.elapsed());
        sent += 1;
        match reply.split_once(':') {
            Some(("v1", p)) if p == payload => assert!(!seen_v2, "client {c}: v1 answered after v2 had"),
            Some(("v2", p)) if p == payload => {
                assert!(swapped.load(std::sync::atomic::Ordering::SeqCst), "v2 before the swap");
                seen_v2 = true;
                v2_replies += 1;
            }
            _ => panic!("client {c}: reply {reply:?} to {payload:?}"),
        }
    }
    expect_silence(ws, Duration::from_millis(100)).await;
    (sent, worst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_under_load_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (host, file) = versioned_host(dir.path()).await;
    let swapped = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut clients = Vec::new();
    for c in 0..100 {
        let mut ws = connect(&host, "/echo").await;
        let swapped = swapped.clone();
        clients.push(tokio::spawn(async move {
            let (sent, worst) = talk_until_v2(&mut ws, c, &swapped).await;
            (ws, sent, worst)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    swapped.store(true, std::sync::atomic::Ordering::SeqCst);
    replace(&file, &std::fs::read(component("echo-v2")).unwrap());

    let mut total = 0;
    let mut worst = Duration::ZERO;
    let mut open = Vec::new();
    for c in clients {
        let (ws, sent, w) = c.await.unwrap();
        total += sent;
        worst = worst.max(w);
        open.push(ws);
    }
    eprintln!("100 clients, {total} round trips across the swap, worst round trip {worst:?}");
    let (_, info) = admin(&host, "GET", "/plugins/echo", None).await;
    assert_eq!(info["generation"], 2);
    assert_eq!(open.len(), 100, "no connection dropped");
    for mut ws in open {
        ws.close(None).await.unwrap();
    }
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_versions_are_refused_and_the_old_one_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (host, file) = versioned_host(dir.path()).await;
    let mut ws = connect(&host, "/echo").await;
    assert_eq!(ask(&mut ws, "a").await, "v1:a");
    let (status, before) = admin(&host, "GET", "/plugins/echo", None).await;
    assert_eq!(status, 200);
    assert_eq!(before["generation"], 1);
    assert_eq!(before["routes"], serde_json::json!(["/echo"]));
    assert_eq!(before["sha256"].as_str().unwrap().len(), 64);

    // Uploads: not Wasm; a core module, not a component; a component of
    // another world (a plain WASI command is not a Wharf handler).
    let core_module = b"\0asm\x01\0\0\0".as_slice();
    let command = std::fs::read(repo_root().join("target/wasm32-wasip2/release/not-a-handler.wasm"))
        .expect("not-a-handler.wasm is built by `make guests`");
    let uploads = [
        (b"not wasm".as_slice(), "not a valid component"),
        (core_module, "not a valid component"),
        (command.as_slice(), "wharf:handler"),
    ];
    for (bytes, why) in uploads {
        let (status, json) = admin(&host, "PUT", "/plugins/echo", Some(("application/wasm", bytes))).await;
        assert_eq!(status, 422, "{json}");
        assert!(json["error"].as_str().unwrap().contains(why), "{json}");
        assert_eq!(ask(&mut ws, "b").await, "v1:b");
    }
    let (status, _) = admin(&host, "PUT", "/plugins/nope", Some(("application/wasm", b"x"))).await;
    assert_eq!(status, 404);

    // A bad file on disk is refused too.
    replace(&file, b"garbage from a broken build");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(ask(&mut ws, "c").await, "v1:c");
    let (_, after) = admin(&host, "GET", "/plugins/echo", None).await;
    assert_eq!(after["generation"], 1);
    assert_eq!(after["sha256"], before["sha256"]);

    // A good upload swaps; the same bytes again do not.
    let v2 = std::fs::read(component("echo-v2")).unwrap();
    let (status, json) = admin(&host, "PUT", "/plugins/echo", Some(("application/wasm", &v2))).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["generation"], 2);
    assert_eq!(ask(&mut ws, "d").await, "v2:d");
    let (_, json) = admin(&host, "PUT", "/plugins/echo", Some(("application/wasm", &v2))).await;
    assert_eq!(json["generation"], 2, "unchanged bytes are not a new version");
    let (_, list) = admin(&host, "GET", "/plugins", None).await;
    assert_eq!(list["plugins"][0]["name"], "echo");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_component_file_is_swapped_in() {
    let dir = tempfile::tempdir().unwrap();
    let (host, file) = versioned_host(dir.path()).await;
    let mut ws = connect(&host, "/echo").await;
    assert_eq!(ask(&mut ws, "x").await, "v1:x");
    replace(&file, &std::fs::read(component("echo-v2")).unwrap());
    let deadline = Instant::now() + WAIT;
    loop {
        if ask(&mut ws, "y").await == "v2:y" {
            break;
        }
        assert!(Instant::now() < deadline, "the new file was not swapped in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_reload_points_routes_at_other_components_and_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.toml");
    let write = |v_component: &str, extra_route: &str| {
        let text = format!(
            "listen = \"127.0.0.1:0\"\nstore = \"memory\"\ncache_dir = {:?}\n[admin]\nenabled = false\n\
             [plugins.v]\ncomponent = {:?}\n[plugins.faulty]\ncomponent = {:?}\n\
             [[routes]]\npath = \"/v\"\nplugin = \"v\"\n{extra_route}",
            cache_dir().display().to_string(),
            component(v_component).display().to_string(),
            component("faulty").display().to_string(),
        );
        std::fs::write(&path, text).unwrap();
    };
    write("echo-v1", "");
    let host = spawn(Config::load(&path).unwrap()).await;
    let mut v = connect(&host, "/v").await;
    assert_eq!(ask(&mut v, "a").await, "v1:a");

    // Point plugin `v` at another component and mount a second route.
    write("echo-v2", "[[routes]]\npath = \"/f\"\nplugin = \"faulty\"\n");
    let summary = host.app().reload_config().await.unwrap();
    assert_eq!(summary.swapped_plugins, ["v"]);
    assert_eq!(summary.added_routes, ["/f"]);
    assert_eq!(ask(&mut v, "b").await, "v2:b", "the open connection now runs the new component");
    let mut f = connect(&host, "/f").await;
    assert!(ask(&mut f, "whoami").await.parse::<u64>().is_ok());

    // Point route /v at another plugin: new events on /v run `faulty`.
    write("echo-v2", "[[routes]]\npath = \"/f\"\nplugin = \"faulty\"\n");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("path = \"/v\"\nplugin = \"v\"", "path = \"/v\"\nplugin = \"faulty\"");
    std::fs::write(&path, text).unwrap();
    host.app().reload_config().await.unwrap();
    let mut v2 = connect(&host, "/v").await;
    assert_eq!(ask(&mut v2, "closes?").await, "", "answered by faulty");

    // A config that does not load changes nothing.
    std::fs::write(&path, "[[routes]]\npath = \"/x\"\nplugin = \"ghost\"\n").unwrap();
    let err = host.app().reload_config().await.expect_err("a bad config is refused");
    assert!(format!("{err:#}").contains("ghost"), "{err:#}");
    assert_eq!(ask(&mut f, "echo me").await, "echo me");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_reload_applies_new_plugin_limits_to_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.toml");
    let write = |max_messages: u32| {
        let text = format!(
            "listen = \"127.0.0.1:0\"\nstore = \"memory\"\ncache_dir = {:?}\n[admin]\nenabled = false\n\
             [plugins.faulty]\ncomponent = {:?}\n[plugins.faulty.limits]\nmax_messages_per_event = {max_messages}\n\
             [[routes]]\npath = \"/f\"\nplugin = \"faulty\"\n",
            cache_dir().display().to_string(),
            component("faulty").display().to_string(),
        );
        std::fs::write(&path, text).unwrap();
    };
    write(5);
    let host = spawn(Config::load(&path).unwrap()).await;
    let mut ws = connect(&host, "/f").await;
    send_text(&mut ws, "flood:1").await;
    for _ in 0..5 {
        assert_eq!(expect_text(&mut ws).await, "x");
    }
    assert_eq!(expect_text(&mut ws).await, "flood stopped after 5: quota exceeded");

    // Same component, new limits: a new version of the same plugin, which
    // the connection opened before the reload runs too.
    write(3);
    let summary = host.app().reload_config().await.unwrap();
    assert_eq!(summary.swapped_plugins, ["faulty"]);
    send_text(&mut ws, "flood:1").await;
    for _ in 0..3 {
        assert_eq!(expect_text(&mut ws).await, "x");
    }
    assert_eq!(expect_text(&mut ws).await, "flood stopped after 3: quota exceeded");
    // Unchanged config: nothing to swap.
    assert!(host.app().reload_config().await.unwrap().swapped_plugins.is_empty());
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_one_handler_of_a_chain_under_load_drops_nothing_and_leaves_the_others() {
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstore = \"memory\"\ncache_dir = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n\
         [plugins.faulty]\ncomponent = {:?}\n[plugins.echo]\ncomponent = {:?}\n\
         [[routes]]\npath = \"/chain\"\nplugins = [\"faulty\", \"echo\"]\n[[routes]]\npath = \"/f\"\nplugin = \"faulty\"\n",
        cache_dir().display().to_string(),
        component("faulty").display().to_string(),
        component("echo-v1").display().to_string(),
    );
    let config = Config::parse(&text, "test").unwrap();
    config.validate("test").unwrap();
    let host = spawn(config).await;
    let swapped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..20 {
        let mut ws = connect(&host, "/chain").await;
        let swapped = swapped.clone();
        clients.push(tokio::spawn(async move {
            talk_until_v2(&mut ws, c, &swapped).await;
            ws
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    swapped.store(true, std::sync::atomic::Ordering::SeqCst);
    let v2 = std::fs::read(component("echo-v2")).unwrap();
    let (status, body) = admin(&host, "PUT", "/plugins/echo", Some(("application/wasm", &v2))).await;
    assert_eq!((status, body["generation"].as_u64()), (200, Some(2)), "{body}");
    let mut open = Vec::new();
    for c in clients {
        open.push(c.await.expect("a client failed"));
    }
    let (_, faulty) = admin(&host, "GET", "/plugins/faulty", None).await;
    assert_eq!(faulty["generation"], 1, "the chain's other handler is untouched");
    for mut ws in open {
        ws.close(None).await.unwrap();
    }
    // Each connection's close ran on faulty, the chain's first handler.
    let mut f = connect(&host, "/f").await;
    let deadline = Instant::now() + WAIT;
    while ask(&mut f, "closes?").await != "20" {
        assert!(Instant::now() < deadline, "not every close ran on faulty");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    host.stop().await.unwrap();
}
