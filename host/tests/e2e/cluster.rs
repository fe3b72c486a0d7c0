//! Several `wharf serve` processes sharing one real `redis-server`: chat
//! across hosts, admin sends to a connection on another host, kill -9 of a
//! host, a host that stops (and what its close handlers publish), a Redis
//! restart in the middle of traffic, and timers fired exactly once across
//! hosts, taken over from a host killed while it held them.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::redis_server::RedisServer;
use crate::common::*;
use tokio_tungstenite::connect_async;

/// One `wharf serve` process and what it logged.
struct Host {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Host {
    /// Starts a host of the examples on `redis`, with `store_extra` added to
    /// its `[store]` table.
    fn start(redis: &RedisServer, store_extra: &str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\ncache_dir = {:?}\n[store]\nbackend = {:?}\n{store_extra}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n",
            cache_dir().display().to_string(),
            redis.url(),
        );
        for name in ["echo", "chat", "broadcast", "relay", "timers"] {
            text += &format!(
                "[plugins.{name}]\ncomponent = {:?}\n[[routes]]\npath = \"/{name}\"\nplugin = \"{name}\"\n",
                component(name).display().to_string()
            );
        }
        // The timers guest's slow on-timer sleeps 1.5 s.
        text += "[plugins.timers.limits]\nevent_timeout_ms = 3000\n";
        let config = dir.path().join("wharf.toml");
        std::fs::write(&config, text).unwrap();
        let (child, lines) = serve_process(&config);
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines {
                let addr = line.split("addr=").nth(1).and_then(|a| a.split_whitespace().next()).map(str::to_string);
                if let Some(addr) = addr {
                    let _ = tx.send((line.contains("admin API"), addr));
                }
                kept.lock().unwrap().push(line);
            }
        });
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || admin.is_none() {
            let (is_admin, a) = rx.recv_timeout(Duration::from_secs(60)).expect("host logged its addresses");
            let a: SocketAddr = a.parse().unwrap();
            if is_admin { admin = Some(a) } else { addr = Some(a) }
        }
        Host { child, addr: addr.unwrap(), admin: admin.unwrap(), log, _dir: dir }
    }

    async fn connect(&self, path: &str) -> Client {
        let url = format!("ws://{}{path}", self.addr);
        tokio::time::timeout(WAIT, connect_async(url.as_str())).await.expect("connect timed out").unwrap().0
    }

    async fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let body = body.map(|b| ("text/plain", b.as_bytes()));
        let (status, body) = http(self.admin, method, path, Some(ADMIN_TOKEN), body).await;
        (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)))
    }

    async fn members(&self, channel: &str) -> Vec<String> {
        let (status, body) = self.admin("GET", &format!("/channels/{channel}?namespace=chat"), None).await;
        assert_eq!(status, 200, "{body}");
        body["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()).collect()
    }

    async fn metric(&self, name: &str) -> f64 {
        let (status, body) = http(self.admin, "GET", "/metrics", Some(ADMIN_TOKEN), None).await;
        assert_eq!(status, 200);
        body.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    }

    fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    fn kill_9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits (at most [`WAIT`]) for a clean exit.
    fn terminate(&mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the host exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "the host did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn live_hosts(&self) -> u64 {
        let (status, body) = self.admin("GET", "/healthz", None).await;
        assert_eq!(status, 200, "{body}");
        body["hosts"].as_u64().unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The id a `broadcast` connection is told on open.
async fn broadcast_id(ws: &mut Client) -> String {
    let hello: serde_json::Value = serde_json::from_str(&expect_text(ws).await).unwrap();
    hello["yourConnectionId"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_between_clients_on_three_hosts_arrives_once_in_publish_order() {
    let redis = RedisServer::start();
    let hosts = [Host::start(&redis, ""), Host::start(&redis, ""), Host::start(&redis, "")];
    let mut a = hosts[0].connect("/chat").await;
    let mut b = hosts[1].connect("/chat").await;
    let mut c = hosts[2].connect("/chat").await;
    eventually(|| async { (hosts[0].members("room").await.len() == 3).then_some(()) }).await;

    send_text(&mut b, "/nick bea").await;
    assert_eq!(expect_text(&mut b).await, "nickname set to [bea]");
    send_text(&mut a, "/nick ada").await;
    assert_eq!(expect_text(&mut a).await, "nickname set to [ada]");
    for i in 0..50 {
        send_text(&mut a, &format!("m{i}")).await;
    }
    send_text(&mut b, "hi from B").await;
    for (name, ws) in [("a", &mut a), ("c", &mut c)] {
        let mut from_a = Vec::new();
        let mut from_b = 0;
        while from_a.len() < 50 || from_b < 1 {
            let t = expect_text(ws).await;
            if t == "bea: hi from B" {
                from_b += 1;
            } else {
                from_a.push(t);
            }
        }
        let want: Vec<String> = (0..50).map(|i| format!("ada: m{i}")).collect();
        assert_eq!(from_a, want, "{name} got A's messages in publish order, each once");
    }
    let mut seen = Vec::new();
    while seen.len() < 51 {
        seen.push(expect_text(&mut b).await);
    }
    assert_eq!(seen.iter().filter(|t| t.starts_with("ada: ")).count(), 50);
    expect_silence(&mut c, Duration::from_millis(300)).await;

    // Connection ids are unique across hosts, and every host lists all three.
    let (status, list) = hosts[2].admin("GET", "/connections?route=/chat", None).await;
    assert_eq!(status, 200);
    let mut ids: Vec<&str> =
        list["connections"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{list}");

    // Route broadcast reaches the route's connections on every host but the sender.
    let mut x = hosts[0].connect("/broadcast").await;
    let mut y = hosts[2].connect("/broadcast").await;
    let x_id = broadcast_id(&mut x).await;
    broadcast_id(&mut y).await;
    eventually(|| async {
        let (_, l) = hosts[0].admin("GET", "/connections?route=/broadcast", None).await;
        (l["connections"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;
    send_text(&mut x, "hello").await;
    assert_eq!(expect_text(&mut y).await, format!("{x_id} says: hello"));
    expect_silence(&mut x, Duration::from_millis(300)).await;
}

/// Sends `text` and returns the answer.
/// The id a `relay` connection is told on open.
async fn relay_id(ws: &mut Client) -> String {
    expect_text(ws).await.strip_prefix("id:").expect("the relay handler's greeting").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_plugins_channels_stay_its_own_across_hosts() {
    let redis = RedisServer::start();
    let hosts = [Host::start(&redis, ""), Host::start(&redis, "")];
    let mut chat = [hosts[0].connect("/chat").await, hosts[1].connect("/chat").await];
    let mut relay = [hosts[0].connect("/relay").await, hosts[1].connect("/relay").await];
    let mut relay_ids = Vec::new();
    for ws in relay.iter_mut() {
        let id = relay_id(ws).await;
        send_text(ws, &format!("join:{id}:room")).await;
        assert_eq!(expect_text(ws).await, "ok");
        relay_ids.push(id);
    }
    eventually(|| async { (hosts[1].members("room").await.len() == 2).then_some(()) }).await;
    // The relay plugin's `room` is its own, on both hosts.
    send_text(&mut relay[0], "members:room").await;
    assert_eq!(expect_text(&mut relay[0]).await, relay_ids.join(","));
    let (status, body) = hosts[0].admin("GET", "/channels/room?namespace=relay", None).await;
    assert_eq!((status, &body["count"]), (200, &2.into()), "{body}");
    send_text(&mut relay[0], "pub:room:for relays").await;
    let mut got = [expect_text(&mut relay[0]).await, expect_text(&mut relay[0]).await];
    got.sort();
    assert_eq!(got, ["for relays", "ok"]);
    assert_eq!(expect_text(&mut relay[1]).await, "for relays", "a publish reaches the namespace on every host");
    send_text(&mut chat[1], "for chat").await;
    for ws in chat.iter_mut() {
        assert_eq!(expect_text(ws).await, "anonymous: for chat");
    }
    for ws in chat.iter_mut().chain(relay.iter_mut()) {
        expect_silence(ws, Duration::from_millis(200)).await;
    }
    // A chat connection on the other host is no relay connection's business.
    let (_, list) = hosts[0].admin("GET", "/connections?route=/chat", None).await;
    let chat_ids: Vec<String> =
        list["connections"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
    for chat_id in &chat_ids {
        send_text(&mut relay[0], &format!("info:{chat_id}")).await;
        assert_eq!(expect_text(&mut relay[0]).await, "error: unknown connection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_act_on_connections_held_by_another_host() {
    let redis = RedisServer::start();
    let (a, b) = (Host::start(&redis, ""), Host::start(&redis, ""));
    let mut x = a.connect("/relay").await;
    let mut y = b.connect("/relay").await;
    let x_id = relay_id(&mut x).await;
    let y_id = relay_id(&mut y).await;
    assert_ne!(x_id, y_id);

    // emit
    assert_eq!(ask(&mut x, &format!("send:{y_id}:hello")).await, "ok");
    assert_eq!(expect_text(&mut y).await, "hello");
    // metadata set on A, read by the holder B and by `info` on A
    assert_eq!(ask(&mut x, &format!("set:{y_id}:nick=yan")).await, "ok");
    let deadline = Instant::now() + WAIT;
    while ask(&mut y, "get:nick").await != "nick=yan" {
        assert!(Instant::now() < deadline, "the holder never saw the metadata set on the other host");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ask(&mut x, &format!("info:{y_id}")).await, "info /relay  nick=yan");
    // subscribe another host's connection, then publish to it
    assert_eq!(ask(&mut x, &format!("join:{y_id}:team")).await, "ok");
    assert_eq!(ask(&mut x, "members:team").await, y_id);
    assert_eq!(ask(&mut x, "pub:team:go").await, "ok");
    assert_eq!(expect_text(&mut y).await, "go");
    assert_eq!(ask(&mut y, &format!("info:{y_id}")).await, "info /relay team nick=yan");
    // close
    assert_eq!(ask(&mut x, &format!("close:{y_id}")).await, "ok");
    assert_eq!(expect_close(&mut y).await, 4000);
    let deadline = Instant::now() + WAIT;
    let late = loop {
        let answer = ask(&mut x, &format!("send:{y_id}:late")).await;
        if answer != "ok" {
            break answer;
        }
        assert!(Instant::now() < deadline, "sends to a closed connection kept succeeding");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(late, "error: unknown connection");
    assert!(ask(&mut x, "members:team").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_on_one_host_sends_to_and_closes_a_connection_on_another() {
    let redis = RedisServer::start();
    let (a, _b, c) = (Host::start(&redis, ""), Host::start(&redis, ""), Host::start(&redis, ""));
    let mut ws = c.connect("/broadcast").await;
    let id = broadcast_id(&mut ws).await;

    let (status, info) = a.admin("GET", &format!("/connections/{id}"), None).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["route"], "/broadcast");
    let (status, body) = a.admin("POST", &format!("/connections/{id}/messages"), Some("from A")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(expect_text(&mut ws).await, "from A");

    let (status, body) = a.admin("DELETE", &format!("/connections/{id}?code=4001&reason=bye"), None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(expect_close(&mut ws).await, 4001);
    let gone = eventually(|| async {
        let (status, _) = a.admin("POST", &format!("/connections/{id}/messages"), Some("late")).await;
        (status != 200).then_some(status)
    })
    .await;
    assert_eq!(gone, 410);
    assert_eq!(a.admin("GET", &format!("/connections/{id}"), None).await.0, 410);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A `GET` of the admin API that must answer 200.
async fn get(host: &Host, path: &str) -> serde_json::Value {
    let (status, body) = host.admin("GET", path, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `last_active_at` of connection `id` in a `GET /connections` answer.
fn last_active_in(list: &serde_json::Value, id: &str) -> Option<serde_json::Value> {
    list["connections"].as_array()?.iter().find(|c| c["id"] == id).map(|c| c["last_active_at"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_on_one_host_reads_when_a_connection_on_another_was_last_active() {
    let redis = RedisServer::start();
    let (a, mut b) = (Host::start(&redis, ""), Host::start(&redis, ""));
    let mut ws = b.connect("/relay").await;
    let id = relay_id(&mut ws).await;

    let first = get(&a, &format!("/connections/{id}")).await;
    let opened = first["last_active_at"].as_u64().expect("B answered for its connection");
    assert!(opened >= first["connected_at"].as_u64().unwrap());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sent_at = now_ms();
    assert_eq!(ask(&mut ws, "get:nick").await, "nick unset");
    let later = get(&a, &format!("/connections/{id}")).await["last_active_at"].as_u64().unwrap();
    assert!(later >= sent_at && later > opened, "last active {later}, message sent at {sent_at}, opened {opened}");
    // A listing asks too (one question per host).
    let mut on_a = a.connect("/relay").await;
    let a_id = relay_id(&mut on_a).await;
    let list = get(&a, "/connections?route=/relay").await;
    assert_eq!(last_active_in(&list, &id), Some(later.into()), "{list}");
    assert!(last_active_in(&list, &a_id).unwrap().as_u64().is_some(), "{list}");

    // A host that cannot answer (killed; its records stay until its
    // heartbeat expires): its connection is listed, its activity unknown.
    b.kill_9();
    let list = get(&a, "/connections?route=/relay").await;
    assert_eq!(last_active_in(&list, &id), Some(serde_json::Value::Null), "{list}");
    assert!(last_active_in(&list, &a_id).unwrap().as_u64().is_some(), "{list}");
    drop(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hosts_connections_leave_presence_within_the_heartbeat_ttl() {
    let redis = RedisServer::start();
    // The default TTL: 10 s.
    let (a, mut b) = (Host::start(&redis, ""), Host::start(&redis, ""));
    let mut on_a = a.connect("/chat").await;
    let mut on_b = b.connect("/broadcast").await;
    let b_id = broadcast_id(&mut on_b).await;
    let mut b_chat = b.connect("/chat").await;
    let members = eventually(|| async {
        let m = a.members("room").await;
        (m.len() == 2).then_some(m)
    })
    .await;
    let a_chat_id = a.admin("GET", "/connections?route=/chat", None).await.1["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .find(|id| members.contains(id))
        .unwrap();

    let mut relay = a.connect("/relay").await;
    expect_text(&mut relay).await;

    b.kill_9();
    let killed = Instant::now();
    // Nobody listens for B any more: sends to its connections answer 410 at once.
    let (status, body) = a.admin("POST", &format!("/connections/{b_id}/messages"), Some("x")).await;
    assert_eq!(status, 410, "{body}");

    let deadline = killed + Duration::from_secs(15);
    loop {
        if a.members("room").await == [a_chat_id.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "B's connection never left the channel");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "left presence after {took:?}, more than the 10 s TTL");
    assert_eq!(a.admin("GET", &format!("/connections/{b_id}"), None).await.0, 410);
    // Handlers no longer see it either.
    assert_eq!(ask(&mut relay, &format!("send:{b_id}:x")).await, "error: unknown connection");
    let (_, list) = a.admin("GET", "/connections?route=/chat", None).await;
    assert_eq!(list["connections"].as_array().unwrap().len(), 1, "only A's chat connection is left: {list}");
    assert!(a.metric("wharf_cluster_reaped_connections_total").await >= 2.0);
    assert!(a.logged("stopped renewing its heartbeat"));

    // A's client is unaffected.
    send_text(&mut on_a, "still here").await;
    assert_eq!(expect_text(&mut on_a).await, "anonymous: still here");
    drop(b_chat.close(None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_stops_leaves_at_once_not_after_the_ttl() {
    let redis = RedisServer::start();
    let (a, mut b) = (Host::start(&redis, ""), Host::start(&redis, ""));
    let _on_a = a.connect("/chat").await;
    let mut on_b = b.connect("/chat").await;
    eventually(|| async { (a.members("room").await.len() == 2).then_some(()) }).await;
    eventually(|| async { (a.live_hosts().await == 2).then_some(()) }).await;

    b.terminate();
    let stopped = Instant::now();
    assert_eq!(expect_close(&mut on_b).await, 1001);
    // B's close handlers removed its connections before it exited, and it
    // deregistered: A sees one host within a reaper tick, far below the
    // 10 s heartbeat TTL.
    assert_eq!(a.members("room").await.len(), 1);
    eventually(|| async { (a.live_hosts().await == 1).then_some(()) }).await;
    assert!(stopped.elapsed() < Duration::from_secs(5), "took {:?}", stopped.elapsed());
    assert_eq!(a.metric("wharf_cluster_reaped_connections_total").await, 0.0, "nothing was left to reap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_close_handlers_publish_while_a_host_stops_reaches_the_other_hosts() {
    let redis = RedisServer::start();
    let (a, mut b) = (Host::start(&redis, ""), Host::start(&redis, ""));
    let mut listener = a.connect("/relay").await;
    let listener_id = relay_id(&mut listener).await;
    assert_eq!(ask(&mut listener, &format!("join:{listener_id}:farewells")).await, "ok");
    // B's connections each publish farewells from their close handler: more
    // than one pipelined round trip to Redis takes.
    const CONNS: usize = 40;
    const EACH: usize = 50;
    let mut leaving = Vec::new();
    for i in 0..CONNS {
        let mut ws = b.connect("/relay").await;
        let id = relay_id(&mut ws).await;
        assert_eq!(ask(&mut ws, &format!("set:{id}:farewell=farewells:{EACH}:bye {i:02}")).await, "ok");
        leaving.push(ws);
    }

    b.terminate();
    for ws in &mut leaving {
        assert_eq!(expect_close(ws).await, 1001);
    }
    let mut got = Vec::new();
    for _ in 0..CONNS * EACH {
        got.push(expect_text(&mut listener).await);
    }
    got.sort();
    let mut want: Vec<String> =
        (0..CONNS).flat_map(|i| (1..=EACH).map(move |k| format!("bye {i:02} {k} (1001)"))).collect();
    want.sort();
    assert!(got == want, "every farewell published while B stopped reached A, once");
    expect_silence(&mut listener, Duration::from_millis(300)).await;
    assert_eq!(a.metric("wharf_cluster_undelivered_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_keep_serving_through_a_redis_restart_and_rejoin() {
    let mut redis = RedisServer::start();
    let ttl = "heartbeat_ttl_ms = 2000";
    let (a, b) = (Host::start(&redis, ttl), Host::start(&redis, ttl));
    let mut on_a = a.connect("/chat").await;
    let mut on_b = b.connect("/chat").await;
    let mut echo = a.connect("/echo").await;
    eventually(|| async { (a.members("room").await.len() == 2).then_some(()) }).await;
    send_text(&mut on_a, "before").await;
    assert_eq!(expect_text(&mut on_b).await, "anonymous: before");
    assert_eq!(expect_text(&mut on_a).await, "anonymous: before");

    // Traffic from A to B on channel `traffic`, every 10 ms, throughout.
    let mut r_a = a.connect("/relay").await;
    let mut r_b = b.connect("/relay").await;
    expect_text(&mut r_a).await;
    let r_b_id = relay_id(&mut r_b).await;
    assert_eq!(ask(&mut r_b, &format!("join:{r_b_id}:traffic")).await, "ok");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let sender = tokio::spawn(async move {
        let mut sent = 0u32;
        while !stopped.load(std::sync::atomic::Ordering::SeqCst) && sent < 10_000 {
            assert_eq!(ask(&mut r_a, &format!("pub:traffic:t{sent}")).await, "ok", "A keeps serving");
            sent += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (r_a, sent)
    });
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let t = expect_text(&mut r_b).await;
            if t == "end" {
                return got;
            }
            got.push(t.strip_prefix('t').and_then(|n| n.parse::<u32>().ok()).expect("a traffic message"));
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    redis.kill();
    let unhealthy = eventually(|| async {
        let (status, body) = a.admin("GET", "/healthz", None).await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(unhealthy["redis"], "unreachable", "{unhealthy}");
    // The outage is in the log while it lasts.
    eventually(|| async { a.logged("Redis unreachable").then_some(()) }).await;
    assert!(unhealthy["redis_down_since"].is_u64());
    assert_eq!(a.metric("wharf_redis_up").await, 0.0);

    // Local connections keep being served: echo, and chat on the same host
    // (metadata is read from the host's own records).
    for i in 0..20 {
        send_text(&mut echo, &format!("e{i}")).await;
        assert_eq!(expect_text(&mut echo).await, format!("e{i}"));
    }
    send_text(&mut on_a, "/nick ada").await;
    assert_eq!(expect_text(&mut on_a).await, "nickname set to [ada]");
    send_text(&mut on_a, "during").await;
    assert_eq!(expect_text(&mut on_a).await, "ada: during");
    // What could not reach B is counted, not silently dropped.
    eventually(|| async { (a.metric("wharf_cluster_undelivered_total").await >= 1.0).then_some(()) }).await;
    // A new client on A is accepted too.
    let mut late = a.connect("/chat").await;

    redis.restart();
    for h in [&a, &b] {
        eventually(|| async { (h.admin("GET", "/healthz", None).await.0 == 200).then_some(()) }).await;
    }
    // The restarted Redis was empty: the hosts wrote their connections back.
    let members = eventually(|| async {
        let m = b.members("room").await;
        (m.len() == 3).then_some(m)
    })
    .await;
    assert_eq!(members.len(), 3);
    send_text(&mut on_a, "after").await;
    for ws in [&mut on_b, &mut late, &mut on_a] {
        assert_eq!(expect_text(ws).await, "ada: after");
    }
    eventually(|| async { a.logged("Redis answers again").then_some(()) }).await;
    assert!(a.metric("wharf_redis_outages_total").await >= 1.0);
    assert_eq!(a.metric("wharf_redis_up").await, 1.0);

    // The traffic: what arrived came once and in order, the messages sent
    // during the outage did not arrive, and the ones after it did.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut r_a, sent) = sender.await.unwrap();
    assert_eq!(ask(&mut r_a, "pub:traffic:end").await, "ok");
    let got = reader.await.unwrap();
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in publish order, each once: {got:?}");
    assert!(got.first().is_some_and(|f| *f < 10), "traffic before the outage arrived: {got:?}");
    assert_eq!(got.last().copied(), Some(sent - 1), "traffic after the outage arrived");
    assert!((got.len() as u32) < sent, "the outage lost messages ({} of {sent} arrived)", got.len());
    assert!(a.metric("wharf_cluster_undelivered_total{reason=\"redis_unavailable\"}").await >= 1.0);
}

#[test]
fn an_unreachable_redis_at_start_up_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("wharf.toml");
    std::fs::write(&config, format!("store = \"redis://127.0.0.1:{port}/0\"\n[admin]\nenabled = false\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store") && err.contains(&format!("redis://127.0.0.1:{port}/0")), "{err}");
}

/// A relay answer `at OFFSET@EPOCH` → (offset, epoch).
fn position(answer: &str) -> (u64, String) {
    let (o, e) =
        answer.strip_prefix("at ").unwrap_or_else(|| panic!("not a position: {answer}")).split_once('@').unwrap();
    (o.parse().unwrap(), e.to_string())
}

/// The offsets of stamped publications (of `epoch`) among `texts`, the
/// relay's own answers left out.
fn stamped_offsets(texts: &[String], epoch: &str) -> Vec<u64> {
    texts
        .iter()
        .filter(|t| t.starts_with('{'))
        .map(|t| {
            let v: serde_json::Value = serde_json::from_str(t).unwrap();
            assert_eq!(v["epoch"], epoch, "{t}");
            v["offset"].as_u64().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_on_redis_is_one_sequence_and_a_resume_on_another_host_misses_nothing() {
    let redis = RedisServer::start();
    let rooms = "[[channels]]\nmatch = \"room*\"\nhistory_size = 1000\nhistory_ttl_ms = 600000\n";
    let hosts = [Host::start(&redis, rooms), Host::start(&redis, rooms)];
    let mut writer = hosts[0].connect("/relay").await;
    relay_id(&mut writer).await;
    let mut here = hosts[0].connect("/relay").await;
    let here_id = relay_id(&mut here).await;
    send_text(&mut writer, "pub:room:one").await;
    let (first, epoch) = position(&expect_text(&mut writer).await);
    send_text(&mut writer, "pub:room:two").await;
    assert_eq!(position(&expect_text(&mut writer).await), (first + 1, epoch.clone()));
    assert_eq!(first, 1);
    send_text(&mut here, &format!("resume:{here_id}:room:2@{epoch}")).await;
    assert_eq!(expect_text(&mut here).await, format!("resumed recovered=true replayed=0 latest=2@{epoch}"));

    // The writer publishes 200 stamped messages as fast as it can; a client
    // on the other host resumes from 2 meanwhile.
    let mut there = hosts[1].connect("/relay").await;
    let there_id = relay_id(&mut there).await;
    for i in 0..200 {
        futures_util::SinkExt::feed(
            &mut writer,
            tokio_tungstenite::tungstenite::Message::text(format!("stamp:room:{{\"n\":{i}}}")),
        )
        .await
        .unwrap();
    }
    futures_util::SinkExt::flush(&mut writer).await.unwrap();
    send_text(&mut there, &format!("resume:{there_id}:room:2@{epoch}")).await;
    let mut last = 0;
    for _ in 0..200 {
        last = position(&expect_text(&mut writer).await).0;
    }
    assert_eq!(last, 202);
    let mut got = Vec::new();
    while got.len() < 201 {
        got.push(expect_text(&mut there).await);
    }
    assert_eq!(got.iter().filter(|t| t.starts_with("resumed recovered=true")).count(), 1, "{got:?}");
    assert_eq!(stamped_offsets(&got, &epoch), (3..=202).collect::<Vec<u64>>(), "no gap, no duplicate, in order");
    let mut live = Vec::new();
    while live.len() < 200 {
        live.push(expect_text(&mut here).await);
    }
    assert_eq!(stamped_offsets(&live, &epoch), (3..=202).collect::<Vec<u64>>(), "the publishing host's member too");
    // Either host reads the same history.
    let (status, page) =
        hosts[1].admin("GET", &format!("/channels/room/history?namespace=relay&since=200&epoch={epoch}"), None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["publications"].as_array().unwrap().len(), 2);
    let (status, body) = hosts[1].admin("POST", "/channels/room/messages?namespace=relay", Some("from admin")).await;
    assert_eq!((status, &body["offset"]), (200, &203.into()), "{body}");
    assert_eq!(expect_text(&mut here).await, "from admin");
    assert_eq!(expect_text(&mut there).await, "from admin");
}

/// A command to the `timers` guest; its answer (skipping firings' notices).
async fn timer_command(ws: &mut Client, text: &str) -> String {
    send_text(ws, text).await;
    loop {
        let t = expect_text(ws).await;
        if !t.starts_with("fired ") {
            return t;
        }
    }
}

/// Asks `question` until the answer is `want`, for at most `within`.
async fn timer_answer_becomes(ws: &mut Client, question: &str, want: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let got = timer_command(ws, question).await;
        if got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_fire_each_of_500_timers_exactly_once() {
    let redis = RedisServer::start();
    let hosts: Vec<Host> = (0..3).map(|_| Host::start(&redis, "")).collect();
    let mut setter = hosts[0].connect("/timers").await;
    assert_eq!(timer_command(&mut setter, "many t 500 1000").await, "ok");
    let mut counter = hosts[2].connect("/timers").await;
    assert_eq!(timer_answer_becomes(&mut counter, "total", "500", WAIT).await, "500");
    // Give any second firing the time to happen: there is none.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(timer_command(&mut counter, "total").await, "500");
    for i in 0..500 {
        assert_eq!(timer_command(&mut counter, &format!("count t{i}")).await, "1", "timer t{i}");
    }
    let mut fired = 0.0;
    for h in &hosts {
        fired += h.metric("wharf_timers_fired_total").await;
    }
    assert_eq!(fired, 500.0, "firings counted by the three hosts together");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_a_killed_host_held_are_fired_by_the_others_after_its_lease() {
    let redis = RedisServer::start();
    let mut hosts: Vec<Host> = (0..3).map(|_| Host::start(&redis, "")).collect();
    // Only the first host may claim: the others are stopped (SIGSTOP).
    let signal = |h: &Host, sig: &str| {
        let status = Command::new("kill").args([sig, &h.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    };
    let mut ws = hosts[0].connect("/timers").await;
    signal(&hosts[1], "-STOP");
    signal(&hosts[2], "-STOP");
    assert_eq!(timer_command(&mut ws, "many slow 20 200").await, "ok");
    // Every one has started on the first host (each sleeps 1.5 s)...
    assert_eq!(timer_answer_becomes(&mut ws, "started", "20", WAIT).await, "20");
    // ...which dies holding them, none finished.
    hosts[0].kill_9();
    signal(&hosts[1], "-CONT");
    signal(&hosts[2], "-CONT");
    let mut ws = hosts[1].connect("/timers").await;
    assert_eq!(timer_command(&mut ws, "total").await, "0", "the killed host finished none");
    // Its leases end (5.2 s) and the others run every one, once.
    assert_eq!(timer_answer_becomes(&mut ws, "total", "20", Duration::from_secs(30)).await, "20");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(timer_command(&mut ws, "total").await, "20");
    for i in 0..20 {
        assert_eq!(timer_command(&mut ws, &format!("count slow{i}")).await, "1", "slow{i} fired once");
    }
    assert_eq!(timer_command(&mut ws, "started").await, "40", "each started on the killed host, then on another");
}
