//! Routes served by WebSocket-over-HTTP backends written with Python's
//! `gripcontrol` (host/tests/grip/backend.py, a real HTTP server started per
//! test), with tokio-tungstenite and Python `websockets` clients.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::common::*;

/// The venv `make test-deps` makes, with gripcontrol and websockets.
fn python() -> std::path::PathBuf {
    let py = repo_root().join("target/grip-venv/bin/python");
    assert!(py.is_file(), "{} is missing: run `make test-deps`", py.display());
    py
}

/// A backend process (backend.py) on a free port; killed when dropped.
struct Backend {
    child: Child,
    port: u16,
}

impl Backend {
    /// The gripcontrol backend (backend.py).
    fn start() -> Backend {
        Backend::spawn(Command::new(python()).arg(repo_root().join("host/tests/grip/backend.py")))
    }

    /// The @fanoutio/grip backend (backend.mjs): echo and chat.
    fn start_node() -> Backend {
        let dir = repo_root().join("host/tests/grip");
        assert!(dir.join("node_modules/@fanoutio/grip").is_dir(), "@fanoutio/grip is missing: run `make test-deps`");
        Backend::spawn(Command::new("node").arg(dir.join("backend.mjs")))
    }

    fn spawn(cmd: &mut Command) -> Backend {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start the backend");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read port");
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the backend printed {line:?}, not its port"));
        Backend { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/base", self.port)
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// Every request the backend has seen.
    async fn log(&self) -> Vec<Value> {
        let (status, body) = http(self.addr(), "GET", "/_log", None, None).await;
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("log is JSON")
    }

    /// The events of every request on `path`, in order.
    async fn events(&self, path: &str) -> Vec<Vec<(String, String)>> {
        let evs = |r: &Value| {
            let list = r["events"].as_array().expect("events").iter();
            list.map(|e| (e[0].as_str().unwrap().to_string(), e[1].as_str().unwrap().to_string())).collect()
        };
        self.log().await.iter().filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with(path))).map(evs).collect()
    }

    /// The client messages (TEXT) the backend got on `path`, in order.
    async fn texts(&self, path: &str) -> Vec<String> {
        let evs = self.events(path).await.into_iter().flatten();
        evs.filter(|(t, _)| t == "TEXT").map(|(_, c)| c).collect()
    }

    async fn configure(&self, settings: Value) {
        let body = settings.to_string();
        let (status, _) =
            http(self.addr(), "POST", "/_config", None, Some(("application/json", body.as_bytes()))).await;
        assert_eq!(status, 200);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A host whose `/NAME` routes go to `backend`'s `/base/NAME`; `extra` is
/// appended to each route's backend table.
fn host_config(backend: &str, names: &[&str], extra: &str) -> wharf::config::Config {
    let mut body = String::new();
    for name in names {
        body += &format!("[[routes]]\npath = \"/{name}\"\n[routes.backend]\nurl = \"{backend}\"\n{extra}\n");
    }
    config_from(&body)
}

async fn next_binary(ws: &mut Client) -> Vec<u8> {
    match next_data(ws).await {
        Message::Binary(b) => b.to_vec(),
        other => panic!("expected a binary message, got {other:?}"),
    }
}

#[tokio::test]
async fn echoes_text_and_binary_of_every_size_through_gripcontrol() {
    let backend = Backend::start();
    let host = spawn(host_config(&backend.url(), &["echo"], "")).await;
    let mut ws = connect(&host, "/echo?x=1").await;
    assert_eq!(ask(&mut ws, "hello").await, "hello");
    ws.send(Message::binary(vec![0u8, 1, 255])).await.unwrap();
    assert_eq!(next_binary(&mut ws).await, [0, 1, 255]);
    for size in [64 << 10, 1 << 20] {
        let text: String = (0..size).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        assert_eq!(ask(&mut ws, &text).await, text, "{size} bytes of text");
        let bin: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(bin.clone())).await.unwrap();
        assert_eq!(next_binary(&mut ws).await, bin, "{size} bytes of binary");
    }
    ws.send(Message::Close(Some(CloseFrame { code: 4005.into(), reason: "bye".into() }))).await.unwrap();
    assert_eq!(expect_close(&mut ws).await, 4005);

    let log = backend.log().await;
    let first = &log[0];
    assert_eq!(first["path"], "/base/echo?x=1", "the client's path and query follow the backend's path");
    assert_eq!(first["events"], json!([["OPEN", ""]]));
    assert_eq!(first["headers"]["content-type"], "application/websocket-events");
    assert_eq!(first["headers"]["sec-websocket-extensions"], "grip");
    assert_eq!(first["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(
        first["headers"].get("sec-websocket-key").is_none(),
        "handshake headers of the gateway's own are not passed on"
    );
    let cid = first["cid"].as_str().expect("Connection-Id").to_string();
    assert!(log.iter().all(|r| r["cid"] == cid.as_str()), "every request names the connection");
    let last = eventually(|| async {
        let log = backend.log().await;
        let last = log.last().unwrap()["events"].clone();
        (last.as_array().unwrap().last().unwrap()[0] == "CLOSE").then_some(last)
    })
    .await;
    // The log holds content as Latin-1 text: one char per byte.
    let close: Vec<u8> =
        last.as_array().unwrap().last().unwrap()[1].as_str().unwrap().chars().map(|c| c as u8).collect();
    assert_eq!(close[..2], 4005u16.to_be_bytes(), "CLOSE carries the client's code 4005");
    assert_eq!(&close[2..], b"bye");
    host.stop().await.unwrap();
}

#[tokio::test]
async fn a_chat_backend_subscribes_sets_meta_and_publishes_with_gripcontrol() {
    let backend = Backend::start();
    let host = spawn(host_config(&backend.url(), &["chat"], "")).await;
    let admin_addr = host.admin_addr.unwrap();
    backend.configure(json!({ "control_uri": format!("http://{admin_addr}"), "key": ADMIN_TOKEN })).await;
    let mut ann = connect(&host, "/chat").await;
    let mut bob = connect(&host, "/chat").await;
    assert_eq!(expect_text(&mut ann).await, "welcome");
    assert_eq!(expect_text(&mut bob).await, "welcome");
    assert_eq!(ask(&mut ann, "/nick ann").await, "you are ann");
    assert_eq!(ask(&mut ann, "/whoami").await, "nick=ann", "Set-Meta-nick comes back as Meta-nick");
    send_text(&mut ann, "hi all").await;
    assert_eq!(expect_text(&mut ann).await, "ann: hi all", "the publish reached the sender");
    assert_eq!(expect_text(&mut bob).await, "ann: hi all", "and the other member");
    send_text(&mut bob, "hello").await;
    assert_eq!(expect_text(&mut ann).await, "anon: hello");
    assert_eq!(expect_text(&mut bob).await, "anon: hello");

    // The admin API sees the subscription and the metadata in the store.
    let (status, members) = admin(&host, "GET", "/channels/room", None).await;
    assert_eq!(status, 200, "{members}");
    assert_eq!(members["members"].as_array().map(Vec::len), Some(2), "{members}");
    let log = backend.log().await;
    let ann_id = log[0]["cid"].as_str().unwrap().to_string();
    let (_, record) = admin(&host, "GET", &format!("/connections/{ann_id}"), None).await;
    assert_eq!(record["metadata"]["nick"], "ann", "{record}");

    assert_eq!(ask(&mut bob, "/leave").await, "left");
    send_text(&mut ann, "still here?").await;
    assert_eq!(expect_text(&mut ann).await, "ann: still here?");
    expect_silence(&mut bob, Duration::from_millis(300)).await;
    host.stop().await.unwrap();
}

#[tokio::test]
async fn publishes_in_the_grip_format_reach_backend_and_wasm_members_alike() {
    let backend = Backend::start();
    let body = format!(
        "[plugins.chat]\ncomponent = @chat@\nchannel_namespace = \"rooms\"\n\
         [[routes]]\npath = \"/wasm\"\nplugin = \"chat\"\n\
         [[routes]]\npath = \"/chat\"\n[routes.backend]\nurl = \"{}\"\nchannel_namespace = \"rooms\"\n",
        backend.url()
    );
    let mut config = config_from(&body);
    config.admin.publish_key = Some("grip-secret".into());
    let host = spawn(config).await;
    let admin_addr = host.admin_addr.unwrap();
    // gripcontrol's publisher, signing its bearer token with the publish key.
    backend
        .configure(json!({ "control_uri": format!("http://{admin_addr}"), "key": "grip-secret", "iss": "backend" }))
        .await;
    let mut grip_client = connect(&host, "/chat").await;
    assert_eq!(expect_text(&mut grip_client).await, "welcome");
    let mut wasm_client = connect(&host, "/wasm").await;

    send_text(&mut grip_client, "from grip").await;
    assert_eq!(expect_text(&mut grip_client).await, "anon: from grip");
    assert_eq!(expect_text(&mut wasm_client).await, "anon: from grip", "the backend's publish reached the Wasm member");
    send_text(&mut wasm_client, "from wasm").await;
    assert_eq!(expect_text(&mut wasm_client).await, "anonymous: from wasm");
    assert_eq!(
        expect_text(&mut grip_client).await,
        "anonymous: from wasm",
        "the plugin's publish reached the connection the backend subscribed"
    );

    // A publish in the GRIP format with the admin token.
    let publish = json!({"items": [
        {"channel": "room", "formats": {"ws-message": {"content": "to everyone"}}},
        {"channel": "room", "formats": {"ws-message": {"content-bin": "AAH/"}}},
    ]});
    let (status, answer) =
        admin(&host, "POST", "/publish/", Some(("application/json", publish.to_string().as_bytes()))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], 4, "{answer}");
    assert_eq!(expect_text(&mut grip_client).await, "to everyone");
    assert_eq!(next_binary(&mut grip_client).await, [0, 1, 255]);

    // An unsigned publish is refused once a publish key is set.
    let (status, _) =
        http(admin_addr, "POST", "/publish", Some("wrong"), Some(("application/json", publish.to_string().as_bytes())))
            .await;
    assert_eq!(status, 401);
    let close = json!({"items": [{"channel": "room", "formats": {"ws-message": {"action": "close", "code": 4100}}}]});
    let (status, answer) =
        admin(&host, "POST", "/publish/", Some(("application/json", close.to_string().as_bytes()))).await;
    assert_eq!((status, &answer["closed"]), (200, &json!(2)), "{answer}");
    assert_eq!(expect_close(&mut grip_client).await, 4100);
    host.stop().await.unwrap();
}

#[tokio::test]
async fn close_codes_travel_both_ways_and_a_disconnect_drops_the_client() {
    let backend = Backend::start();
    let host = spawn(host_config(&backend.url(), &["commands"], "")).await;
    let mut ws = connect(&host, "/commands").await;
    assert_eq!(expect_text(&mut ws).await, "ready");
    send_text(&mut ws, "close 4321").await;
    assert_eq!(expect_text(&mut ws).await, "closing", "what came before the CLOSE is delivered first");
    assert_eq!(expect_close(&mut ws).await, 4321);

    let mut ws = connect(&host, "/commands").await;
    assert_eq!(expect_text(&mut ws).await, "ready");
    send_text(&mut ws, "disconnect").await;
    let end = tokio::time::timeout(WAIT, ws.next()).await.expect("the connection ends");
    assert!(matches!(end, None | Some(Err(_))), "DISCONNECT drops the connection without a close frame: {end:?}");

    // A client that vanishes is a DISCONNECT to the backend.
    let mut ws = connect(&host, "/commands").await;
    assert_eq!(expect_text(&mut ws).await, "ready");
    drop(ws);
    eventually(|| async {
        let events = backend.events("/base/commands").await;
        events.iter().flatten().any(|(t, _)| t == "DISCONNECT").then_some(())
    })
    .await;
    host.stop().await.unwrap();
}

#[tokio::test]
async fn control_messages_set_meta_keep_alive_and_drop_unprefixed_messages() {
    let backend = Backend::start();
    let host = spawn(host_config(&backend.url(), &["commands"], "")).await;
    let mut ws = connect(&host, "/commands").await;
    assert_eq!(expect_text(&mut ws).await, "ready");
    assert_eq!(ask(&mut ws, "meta color=blue").await, "meta set");
    send_text(&mut ws, "unprefixed").await;
    assert_eq!(expect_text(&mut ws).await, "after", "a message without the m: prefix is dropped, as Pushpin does");
    ws.send(Message::text("binary")).await.unwrap();
    assert_eq!(next_binary(&mut ws).await, [0, 1, 255]);
    let requests = backend.log().await;
    assert_eq!(requests.last().unwrap()["meta"]["color"], "blue", "set-meta comes back as Meta-color");
    assert_eq!(ask(&mut ws, "keep-alive").await, "keeping alive");
    assert_eq!(expect_text(&mut ws).await, "ka", "the keep-alive message after a second of silence");
    // Pings are answered by the host, the connection unharmed.
    ws.send(Message::Ping(b"p1".to_vec().into())).await.unwrap();
    let pong = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Pong(p))) => return p.to_vec(),
                Some(Ok(_)) => continue,
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .expect("a pong");
    assert_eq!(pong, b"p1");
    assert_eq!(ask(&mut ws, "meta color=").await, "meta set");
    host.stop().await.unwrap();
}

#[tokio::test]
async fn a_refusal_passes_status_and_body_and_a_dead_backend_is_502() {
    let backend = Backend::start();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/base", l.local_addr().unwrap())
    };
    let body = format!(
        "[[routes]]\npath = \"/reject\"\nbackend = \"{}\"\n[[routes]]\npath = \"/nowhere\"\nbackend = \"{dead}\"\n",
        backend.url()
    );
    let host = spawn(config_from(&body)).await;
    let url = format!("ws://{}/reject", host.addr);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403);
            assert_eq!(resp.body().as_deref(), Some(&b"go away"[..]));
        }
        other => panic!("expected a 403 refusal, got {other:?}"),
    }
    assert_eq!(refused_with(&host, "/nowhere").await, Some(502));
    host.stop().await.unwrap();
}

#[tokio::test]
async fn a_backend_that_dies_mid_session_closes_its_clients_1011_after_retries() {
    let backend = Backend::start();
    let cfg = host_config(&backend.url(), &["echo"], "retries = 2\nretry_backoff_ms = 50\n");
    let host = spawn(cfg).await;
    let mut ws = connect(&host, "/echo").await;
    assert_eq!(ask(&mut ws, "before").await, "before");
    drop(backend);
    let started = std::time::Instant::now();
    send_text(&mut ws, "after").await;
    assert_eq!(expect_close(&mut ws).await, 1011);
    assert!(started.elapsed() >= Duration::from_millis(150), "two retries with backoff came first");
    let (_, metrics) = http(host.admin_addr.unwrap(), "GET", "/metrics", Some(ADMIN_TOKEN), None).await;
    assert!(
        metrics.contains("wharf_backend_errors_total{reason=\"unreachable\",route=\"/echo\"} 1"),
        "counted: {}",
        metrics.lines().filter(|l| l.contains("backend")).collect::<Vec<_>>().join("\n")
    );
    host.stop().await.unwrap();
}

#[tokio::test]
async fn garbage_from_the_backend_closes_the_client_1011() {
    let backend = Backend::start();
    let host = spawn(host_config(&backend.url(), &["garbage", "bad-events"], "")).await;
    for path in ["/garbage", "/bad-events"] {
        let mut ws = connect(&host, path).await;
        send_text(&mut ws, "hello").await;
        assert_eq!(expect_close(&mut ws).await, 1011, "{path}");
        let (_, metrics) = http(host.admin_addr.unwrap(), "GET", "/metrics", Some(ADMIN_TOKEN), None).await;
        let counted = format!("wharf_backend_errors_total{{reason=\"garbage\",route=\"{path}\"}} 1");
        assert!(metrics.contains(&counted), "{path}: {counted} not in the metrics");
    }
    host.stop().await.unwrap();
}

#[tokio::test]
async fn keep_alive_interval_makes_the_host_send_empty_requests() {
    let backend = Backend::start();
    let host = spawn(host_config(&backend.url(), &["refresh"], "")).await;
    let mut ws = connect(&host, "/refresh").await;
    assert_eq!(ask(&mut ws, "one").await, "one");
    let started = std::time::Instant::now();
    eventually(|| async {
        let requests = backend.events("/base/refresh").await;
        (requests.iter().filter(|evs| evs.is_empty()).count() >= 2).then_some(())
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(1500), "two empty requests, a second apart");
    assert_eq!(ask(&mut ws, "two").await, "two", "the connection still works");
    host.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_backend_gets_the_events_batched_in_order() {
    let backend = Backend::start();
    let host = spawn(host_config(&backend.url(), &["slow"], "")).await;
    let mut ws = connect(&host, "/slow").await;
    for i in 0..20 {
        send_text(&mut ws, &format!("m{i}")).await;
    }
    let mut echoes = Vec::new();
    let mut batches = Vec::new();
    while echoes.len() < 20 {
        let t = expect_text(&mut ws).await;
        match t.strip_prefix("batch ") {
            Some(n) => batches.push(n.parse::<usize>().unwrap()),
            None => echoes.push(t),
        }
    }
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(echoes, want, "every message, in order");
    assert!(batches.len() < 20 && batches.iter().any(|&n| n > 1), "requests carried several events: {batches:?}");
    host.stop().await.unwrap();
}

#[tokio::test]
async fn max_concurrent_requests_makes_the_routes_requests_take_turns() {
    let backend = Backend::start();
    let host = spawn(host_config(&backend.url(), &["slow"], "max_concurrent_requests = 1\n")).await;
    let (mut a, mut b) = (connect(&host, "/slow").await, connect(&host, "/slow").await);
    // Each open took its turn; now both speak at once.
    let started = std::time::Instant::now();
    send_text(&mut a, "a").await;
    send_text(&mut b, "b").await;
    assert_eq!(expect_text(&mut a).await, "a");
    assert_eq!(expect_text(&mut b).await, "b");
    assert!(started.elapsed() >= Duration::from_millis(550), "one request at a time, 300 ms each");
    host.stop().await.unwrap();
}

#[tokio::test]
async fn grip_sig_validates_with_gripcontrol() {
    let backend = Backend::start();
    let host = spawn(host_config(&backend.url(), &["sig"], "sig_key = \"shared-secret\"\n")).await;
    backend.configure(json!({ "control_uri": "http://127.0.0.1:9", "key": "x", "sig_key": "shared-secret" })).await;
    let mut ws = connect(&host, "/sig").await;
    assert_eq!(expect_text(&mut ws).await, "sig valid");
    backend.configure(json!({ "control_uri": "http://127.0.0.1:9", "key": "x", "sig_key": "another" })).await;
    let mut ws = connect(&host, "/sig").await;
    assert_eq!(expect_text(&mut ws).await, "sig invalid", "the check can fail");
    host.stop().await.unwrap();
}

#[tokio::test]
async fn a_python_websockets_client_talks_to_a_backend_route() {
    let backend = Backend::start();
    let host = spawn(host_config(&backend.url(), &["echo"], "")).await;
    let url = format!("ws://{}/echo", host.addr);
    let script = r#"
import asyncio, sys
from websockets.asyncio.client import connect
async def main(url):
    async with connect(url, max_size=None) as ws:
        await ws.send("hi"); assert await ws.recv() == "hi"
        await ws.send(b"\x00\xff"); assert await ws.recv() == b"\x00\xff"
        big = "z" * 200000
        await ws.send(big); assert await ws.recv() == big
        pong = await ws.ping(b"x"); await asyncio.wait_for(pong, 5)
    print("ok")
asyncio.run(main(sys.argv[1]))
"#;
    // The client bounds its own waits (asyncio.wait_for, websockets' open
    // and close timeouts); the test's runtime keeps serving meanwhile.
    let out = tokio::task::spawn_blocking(move || Command::new(python()).args(["-c", script, &url]).output())
        .await
        .unwrap()
        .expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_reaches_a_backend_client_on_another_host_over_redis() {
    let redis = redis_server::RedisServer::start();
    let backend = Backend::start();
    let on_redis = || {
        let mut config = host_config(&backend.url(), &["chat"], "");
        config.store.backend = wharf::config::StoreChoice::Redis(redis.url());
        config
    };
    let (a, b) = (spawn(on_redis()).await, spawn(on_redis()).await);
    // The backend publishes through host A's admin API.
    backend.configure(json!({ "control_uri": format!("http://{}", a.admin_addr.unwrap()), "key": ADMIN_TOKEN })).await;
    let mut on_a = connect(&a, "/chat").await;
    let mut on_b = connect(&b, "/chat").await;
    assert_eq!(expect_text(&mut on_a).await, "welcome");
    assert_eq!(expect_text(&mut on_b).await, "welcome");
    eventually(|| async {
        let (_, members) = admin(&a, "GET", "/channels/room", None).await;
        (members["count"] == 2).then_some(())
    })
    .await;

    // A client of host B speaks; its backend publishes to host A; both hear it.
    send_text(&mut on_b, "across").await;
    assert_eq!(expect_text(&mut on_b).await, "anon: across");
    assert_eq!(expect_text(&mut on_a).await, "anon: across");
    // A GRIP publish to host B reaches host A's member.
    let publish = json!({"items": [{"channel": "room", "formats": {"ws-message": {"content": "from b"}}}]});
    let body = publish.to_string();
    let (status, answer) = admin(&b, "POST", "/publish/", Some(("application/json", body.as_bytes()))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(expect_text(&mut on_a).await, "from b");
    assert_eq!(expect_text(&mut on_b).await, "from b");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_backend_written_with_npm_fanoutio_grip_echoes_and_publishes() {
    let backend = Backend::start_node();
    let host = spawn(host_config(&backend.url(), &["echo", "chat"], "")).await;
    let mut ws = connect(&host, "/echo").await;
    assert_eq!(ask(&mut ws, "hello node").await, "hello node");
    ws.send(Message::binary(vec![0u8, 255, 7])).await.unwrap();
    assert_eq!(next_binary(&mut ws).await, [0, 255, 7]);

    backend
        .configure(json!({ "control_uri": format!("http://{}", host.admin_addr.unwrap()), "key": ADMIN_TOKEN }))
        .await;
    let mut ann = connect(&host, "/chat").await;
    let mut bob = connect(&host, "/chat").await;
    assert_eq!(expect_text(&mut ann).await, "welcome");
    assert_eq!(expect_text(&mut bob).await, "welcome");
    send_text(&mut ann, "hi").await;
    assert_eq!(expect_text(&mut ann).await, "node: hi", "the Publisher's message reached the sender");
    assert_eq!(expect_text(&mut bob).await, "node: hi", "and the other member");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_points_a_route_at_another_backend_and_open_connections_keep_theirs() {
    let (first, second) = (Backend::start(), Backend::start());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.toml");
    let write = |url: &str| {
        let text = format!(
            "listen = \"127.0.0.1:0\"\nstore = \"memory\"\n[admin]\nenabled = false\n\
             [[routes]]\npath = \"/echo\"\nbackend = \"{url}\"\n"
        );
        std::fs::write(&path, text).unwrap();
    };
    write(&first.url());
    let host = spawn(wharf::config::Config::load(&path).unwrap()).await;
    let mut old = connect(&host, "/echo").await;
    assert_eq!(ask(&mut old, "one").await, "one");

    write(&second.url());
    host.app().reload_config().await.unwrap();
    let mut new = connect(&host, "/echo").await;
    assert_eq!(ask(&mut new, "two").await, "two");
    assert_eq!(ask(&mut old, "three").await, "three", "the open connection was not dropped");
    assert_eq!(first.texts("/base/echo").await, ["one", "three"], "a connection keeps the backend it opened on");
    assert_eq!(second.texts("/base/echo").await, ["two"], "new connections go to the new one");

    // A bad backend in the config changes nothing.
    std::fs::write(&path, "[[routes]]\npath = \"/echo\"\nbackend = \"https://x/\"\n").unwrap();
    let err = host.app().reload_config().await.expect_err("an https backend is refused");
    assert!(format!("{err:#}").contains("routes[0].backend"), "{err:#}");
    assert_eq!(ask(&mut new, "four").await, "four");
    host.stop().await.unwrap();
}
