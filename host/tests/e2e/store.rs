//! The store end to end: key/value namespaces per plugin, the `counter`
//! example, durability across `kill -9`, and clear errors for a bad data
//! directory.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use tokio_tungstenite::connect_async;
use wharf::config::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_cannot_see_each_others_keys() {
    let host = spawn(config(&[("/counter", "counter"), ("/faulty", "faulty")], "")).await;
    let mut faulty = connect(&host, "/faulty").await;
    send_text(&mut faulty, "set:hits=999").await;
    assert_eq!(expect_text(&mut faulty).await, "ok");
    let mut counter = connect(&host, "/counter").await;
    for n in 1..=3 {
        send_text(&mut counter, "x").await;
        assert_eq!(expect_text(&mut counter).await, n.to_string());
    }
    send_text(&mut faulty, "get:hits").await;
    assert_eq!(expect_text(&mut faulty).await, "999");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_is_held_to_its_quota_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&[("/faulty", "faulty")], "[limits]\nkv_max_bytes = 100000\nkv_max_keys = 1000");
    config.store = wharf::config::StoreChoice::Embedded.into();
    config.data_dir = dir.path().to_path_buf();
    let host = spawn(config).await;
    let mut ws = connect(&host, "/faulty").await;
    let big = "x".repeat(30_000);
    // Three entries of 30,002 bytes (key and value) fit in 100,000; a fourth does not.
    for i in 0..3 {
        send_text(&mut ws, &format!("set:k{i}={big}")).await;
        assert_eq!(expect_text(&mut ws).await, "ok", "entry {i}");
    }
    send_text(&mut ws, &format!("set:k3={big}")).await;
    assert_eq!(expect_text(&mut ws).await, "quota exceeded");
    send_text(&mut ws, "get:k3").await;
    assert_eq!(expect_text(&mut ws).await, "(none)", "a refused write stores nothing");
    send_text(&mut ws, "get:k0").await;
    assert_eq!(expect_text(&mut ws).await.len(), 30_000, "and loses nothing");
    // Shrinking one entry makes room again.
    send_text(&mut ws, "set:k0=small").await;
    assert_eq!(expect_text(&mut ws).await, "ok");
    send_text(&mut ws, &format!("set:k3={big}")).await;
    assert_eq!(expect_text(&mut ws).await, "ok");
    let usage = host.store().kv.usage("faulty").await.unwrap();
    assert_eq!((usage.keys, usage.bytes), (4, 3 * 30_002 + 7));
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_keys_and_values_are_refused_with_an_error() {
    let host = spawn(config(&[("/faulty", "faulty")], "[limits]\nmax_message_bytes = 4096")).await;
    let mut ws = connect(&host, "/faulty").await;
    send_text(&mut ws, &format!("set:{}=v", "k".repeat(2000))).await;
    assert_eq!(expect_text(&mut ws).await, "too large", "keys are at most 1 KiB");
    send_text(&mut ws, &format!("set:k={}", "v".repeat(4000))).await;
    assert_eq!(expect_text(&mut ws).await, "ok", "a value within the limit is stored");
    send_text(&mut ws, "get:k").await;
    assert_eq!(expect_text(&mut ws).await.len(), 4000);
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_read_presence_and_connection_info() {
    let host = spawn(config(&[("/faulty", "faulty"), ("/chat", "chat")], "")).await;
    let mut a = connect(&host, "/faulty").await;
    let mut b = connect(&host, "/faulty").await;
    let mut ids = Vec::new();
    for ws in [&mut a, &mut b] {
        send_text(ws, "whoami").await;
        ids.push(expect_text(ws).await);
        send_text(ws, "join:lobby").await;
        assert_eq!(expect_text(ws).await, "ok");
    }
    send_text(&mut a, "members:lobby").await;
    assert_eq!(expect_text(&mut a).await, ids.join(","));
    send_text(&mut a, &format!("info:{}", ids[1])).await;
    assert_eq!(expect_text(&mut a).await, format!("{} /faulty [] [\"lobby\"]", ids[1]));

    // Another plugin's connection answers as if there were none, as a closed
    // one does.
    let _chat = connect(&host, "/chat").await;
    let (_, list) = admin(&host, "GET", "/connections?route=/chat", None).await;
    let chat_id = list["connections"][0]["id"].as_str().unwrap().to_owned();
    send_text(&mut a, &format!("info:{chat_id}")).await;
    assert_eq!(expect_text(&mut a).await, "unknown connection");
    b.close(None).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        send_text(&mut a, &format!("info:{}", ids[1])).await;
        if expect_text(&mut a).await == "unknown connection" {
            break;
        }
        assert!(Instant::now() < deadline, "a closed connection stayed visible");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_text(&mut a, "members:lobby").await;
    assert_eq!(expect_text(&mut a).await, ids[0]);
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_that_both_name_a_namespace_share_it() {
    let faulty = component("faulty").display().to_string();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstore = \"memory\"\ncache_dir = {cache:?}\n[admin]\nenabled = false\n\
         [plugins.a]\ncomponent = {faulty:?}\nkv_namespace = \"shared\"\n\
         [plugins.b]\ncomponent = {faulty:?}\nkv_namespace = \"shared\"\n\
         [plugins.c]\ncomponent = {faulty:?}\n\
         [[routes]]\npath = \"/a\"\nplugin = \"a\"\n[[routes]]\npath = \"/b\"\nplugin = \"b\"\n\
         [[routes]]\npath = \"/c\"\nplugin = \"c\"\n",
        cache = cache_dir().display().to_string()
    );
    let config = Config::parse(&text, "test").unwrap();
    config.validate("test").unwrap();
    let host = spawn(config).await;
    let (mut a, mut b, mut c) = (connect(&host, "/a").await, connect(&host, "/b").await, connect(&host, "/c").await);
    send_text(&mut a, "set:k=from-a").await;
    assert_eq!(expect_text(&mut a).await, "ok");
    send_text(&mut b, "get:k").await;
    assert_eq!(expect_text(&mut b).await, "from-a");
    send_text(&mut c, "get:k").await;
    assert_eq!(expect_text(&mut c).await, "(none)");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_each_plugins_own_unless_both_name_a_channel_namespace() {
    let faulty = component("faulty").display().to_string();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstore = \"memory\"\ncache_dir = {cache:?}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\ndefault_channel_namespace = \"chat\"\n\
         [plugins.a]\ncomponent = {faulty:?}\nchannel_namespace = \"shared\"\n\
         [plugins.b]\ncomponent = {faulty:?}\nchannel_namespace = \"shared\"\n\
         [plugins.c]\ncomponent = {faulty:?}\n\
         [plugins.chat]\ncomponent = {chat:?}\n\
         [[routes]]\npath = \"/a\"\nplugin = \"a\"\n[[routes]]\npath = \"/b\"\nplugin = \"b\"\n\
         [[routes]]\npath = \"/c\"\nplugin = \"c\"\n[[routes]]\npath = \"/chat\"\nplugin = \"chat\"\n",
        cache = cache_dir().display().to_string(),
        chat = component("chat").display().to_string(),
    );
    let config = Config::parse(&text, "test").unwrap();
    config.validate("test").unwrap();
    let host = spawn(config).await;
    let (mut a, mut b, mut c) = (connect(&host, "/a").await, connect(&host, "/b").await, connect(&host, "/c").await);
    let mut chat = connect(&host, "/chat").await; // joins chat's `room` in on-open
    let mut ids = Vec::new();
    for ws in [&mut a, &mut b, &mut c] {
        send_text(ws, "whoami").await;
        ids.push(expect_text(ws).await);
        send_text(ws, "join:room").await;
        assert_eq!(expect_text(ws).await, "ok");
    }
    // Presence is per namespace: a and b share one, c and chat have their own.
    send_text(&mut a, "members:room").await;
    assert_eq!(expect_text(&mut a).await, format!("{},{}", ids[0], ids[1]));
    send_text(&mut c, "members:room").await;
    assert_eq!(expect_text(&mut c).await, ids[2]);

    // A publish reaches its own namespace's `room` only.
    send_text(&mut c, "say:room=from c").await;
    let mut got = [expect_text(&mut c).await, expect_text(&mut c).await];
    got.sort();
    assert_eq!(got, ["from c", "ok"]);
    send_text(&mut a, "say:room=from a").await;
    let mut got = [expect_text(&mut a).await, expect_text(&mut a).await];
    got.sort();
    assert_eq!(got, ["from a", "ok"]);
    assert_eq!(expect_text(&mut b).await, "from a", "b shares a's namespace");
    for ws in [&mut c, &mut chat] {
        expect_silence(ws, Duration::from_millis(150)).await;
    }

    // The admin API: a bare name is in the default namespace, `?namespace=`
    // names another, and each answer says which.
    let (status, json) = admin(&host, "POST", "/channels/room/messages", Some(("text/plain", b"to chat"))).await;
    assert_eq!((status, &json["namespace"], &json["delivered"]), (200, &"chat".into(), &1.into()), "{json}");
    assert_eq!(expect_text(&mut chat).await, "to chat");
    let (status, json) =
        admin(&host, "POST", "/channels/room/messages?namespace=shared", Some(("text/plain", b"to shared"))).await;
    assert_eq!((status, &json["delivered"]), (200, &2.into()), "{json}");
    assert_eq!(expect_text(&mut a).await, "to shared");
    assert_eq!(expect_text(&mut b).await, "to shared");
    let (status, json) = admin(&host, "GET", "/channels/room?namespace=c", None).await;
    assert_eq!((status, &json["members"]), (200, &serde_json::json!([ids[2]])), "{json}");
    let (status, json) = admin(&host, "GET", "/channels/room?namespace=a", None).await;
    assert_eq!(status, 404, "`a` is a plugin whose channels are in `shared`: {json}");
    assert!(json["error"].as_str().unwrap().contains("chat, shared"), "{json}");
    for ws in [&mut a, &mut b, &mut c] {
        expect_silence(ws, Duration::from_millis(100)).await;
    }
    host.stop().await.unwrap();
}

/// A `wharf serve` process on an embedded store in `data_dir`.
fn serve_counter(data_dir: &std::path::Path, config_dir: &std::path::Path) -> (std::process::Child, String) {
    let path = config_dir.join("wharf.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstore = \"embedded\"\ndata_dir = {:?}\ncache_dir = {:?}\n[admin]\nenabled = false\n\
         [plugins.counter]\ncomponent = {:?}\n[[routes]]\npath = \"/counter\"\nplugin = \"counter\"\n",
        data_dir.display().to_string(),
        cache_dir().display().to_string(),
        component("counter").display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    let (child, lines) = serve_process(&path);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines {
            if let Some(addr) = line.split("addr=").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("host logged its address");
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_increments_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, addr) = serve_counter(&data, dir.path());

    // Drive increments from 4 clients at once and record every acknowledged
    // value; kill -9 the host while they are in flight.
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (mut ws, _) = connect_async(format!("ws://{addr}/counter").as_str()).await.unwrap();
        let acked = acked.clone();
        clients.push(tokio::spawn(async move {
            for _ in 0..100_000 {
                send_text(&mut ws, "+1").await;
                match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws)).await {
                    Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                        let n: i64 = t.as_str().parse().expect("a count");
                        acked.fetch_max(n, std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => return, // the host is gone
                }
            }
        }));
    }
    let started = Instant::now();
    while acked.load(std::sync::atomic::Ordering::SeqCst) < 300 {
        assert!(started.elapsed() < Duration::from_secs(30), "increments are not being acknowledged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let last_acked = acked.load(std::sync::atomic::Ordering::SeqCst);

    let (mut child, addr) = serve_counter(&data, dir.path());
    let (mut ws, _) = connect_async(format!("ws://{addr}/counter").as_str()).await.unwrap();
    send_text(&mut ws, "+1").await;
    let after: i64 = expect_text(&mut ws).await.parse().unwrap();
    assert!(
        after > last_acked,
        "lost acknowledged writes: last acknowledged {last_acked}, next increment gave {after}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_corrupt_data_dir_is_a_clear_error_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("wharf.redb"), vec![0x42; 16 * 1024]).unwrap();
    let path = dir.path().join("wharf.toml");
    std::fs::write(
        &path,
        format!("listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[admin]\nenabled = false\n", data.display().to_string()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wharf")).args(["serve", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wharf.redb") && stderr.contains("store"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A data dir that cannot be a directory.
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("creating the data directory"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// A `size` tmpfs at `dir`, or why there is none (mounting needs root).
    fn mount(dir: &std::path::Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `path` with one file until it is full.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 << 10];
    for _ in 0..100_000 {
        if f.write_all(&chunk).and_then(|()| f.sync_all()).is_err() {
            return;
        }
    }
    panic!("{} never filled up", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_degrades_the_store_until_space_is_back_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let _tmpfs = match Tmpfs::mount(&mnt, "4m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("skipped: this test mounts a 4 MiB tmpfs, which needs root ({why})");
            return;
        }
    };
    let config = || {
        let mut c = config(&[("/faulty", "faulty")], "");
        c.store = wharf::config::StoreChoice::Embedded.into();
        c.data_dir = mnt.join("data");
        c
    };
    let host = spawn(config()).await;
    let mut ws = connect(&host, "/faulty").await;
    let mut acked: Vec<(String, String)> = Vec::new();
    for i in 0..20 {
        let (k, v) = (format!("before{i}"), format!("{i}:{}", "v".repeat(1000)));
        send_text(&mut ws, &format!("set:{k}={v}")).await;
        assert_eq!(expect_text(&mut ws).await, "ok");
        acked.push((k, v));
    }

    // The disk fills up: writes fail with `unavailable`, and /healthz says why.
    fill(&mnt.join("filler"));
    let mut refused = false;
    for i in 0..2000 {
        let (k, v) = (format!("during{i}"), format!("{i}:{}", "w".repeat(1000)));
        send_text(&mut ws, &format!("set:{k}={v}")).await;
        match expect_text(&mut ws).await.as_str() {
            "ok" => acked.push((k, v)),
            "unavailable" => {
                refused = true;
                break;
            }
            other => panic!("unexpected answer {other}"),
        }
    }
    assert!(refused, "2,000 writes of 1 KB fit on a full 4 MiB disk");
    let admin = host.admin_addr.unwrap();
    let (status, body) = http(admin, "GET", "/healthz", None, None).await;
    assert_eq!(status, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "degraded", "{body}");
    assert!(health["store"].as_str().unwrap().contains("No space left on device"), "{body}");

    // Space comes back: the store recovers by itself.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        send_text(&mut ws, "set:after=1").await;
        match expect_text(&mut ws).await.as_str() {
            "ok" => break,
            "unavailable" => {}
            other => panic!("unexpected answer {other}"),
        }
        assert!(Instant::now() < deadline, "writes did not resume within 15 s of space coming back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    acked.push(("after".into(), "1".into()));
    let (status, body) = http(admin, "GET", "/healthz", None, None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    for (k, v) in &acked {
        send_text(&mut ws, &format!("get:{k}")).await;
        assert_eq!(&expect_text(&mut ws).await, v, "{k}");
    }
    drop(ws);
    host.stop().await.unwrap();

    // And every acknowledged value is in the file after a restart.
    let host = spawn(config()).await;
    let mut ws = connect(&host, "/faulty").await;
    for (k, v) in &acked {
        send_text(&mut ws, &format!("get:{k}")).await;
        assert_eq!(&expect_text(&mut ws).await, v, "{k} after a restart");
    }
    host.stop().await.unwrap();
}
