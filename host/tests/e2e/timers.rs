//! Timers over real sockets with the `timers` test guest, on the memory and
//! embedded stores: a timer fires once and not before its time, replace,
//! cancel and get, 1,000 due in the same second, a restart of the embedded
//! host (kill -9) with timers pending, a trapping `on-timer` retried then
//! dropped and counted, a component without `on-timer`, a hot reload, the
//! admin API, and the countdown example in each language on the real
//! clock. The first two also on a real `redis-server`; several hosts on
//! Redis are in `cluster.rs`.

use std::time::{Duration, Instant};

use crate::common::*;

/// A host of the `timers` guest at `/timers` (and `no-timer-export` at
/// `/nt`) on the memory or embedded store.
async fn host(embedded: Option<&std::path::Path>, extra: &str) -> wharf::app::Running {
    let mut config = config(&[("/timers", "timers"), ("/nt", "no-timer-export")], extra);
    if let Some(dir) = embedded {
        config.store = wharf::config::StoreChoice::Embedded.into();
        config.data_dir = dir.to_path_buf();
    }
    spawn(config).await
}

/// Like [`host`], on a real `redis-server`. Each timer call is a round
/// trip to Redis: events that set hundreds get a second.
async fn redis_host(redis: &redis_server::RedisServer) -> wharf::app::Running {
    let mut config =
        config(&[("/timers", "timers"), ("/nt", "no-timer-export")], "[limits]\nevent_timeout_ms = 1000\n");
    config.store.backend = wharf::config::StoreChoice::Redis(redis.url());
    spawn(config).await
}

/// The next text that is not a firing's notice (`fired …`): the answer to
/// a command.
async fn answer(ws: &mut Client) -> String {
    loop {
        let t = expect_text(ws).await;
        if !t.starts_with("fired ") {
            return t;
        }
    }
}

/// Sends a command; its answer.
async fn command(ws: &mut Client, text: &str) -> String {
    send_text(ws, text).await;
    answer(ws).await
}

/// Waits for the notice `text`, skipping others.
async fn notice(ws: &mut Client, text: &str) {
    while expect_text(ws).await != text {}
}

/// Asks until `f` holds for the answer to `question`, for at most 10 s.
async fn ask_until(ws: &mut Client, question: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = command(ws, question).await;
        if f(&got) || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fires_once_on_time_with_replace_cancel_and_get(host: &wharf::app::Running) {
    let mut ws = connect(host, "/timers").await;
    let set_at = Instant::now();
    assert_eq!(command(&mut ws, "set a 300").await, "ok");
    // Each firing sends to the setter, publishes to `timers` (which the
    // guest's clients join) and broadcasts to the route, in that order.
    assert_eq!(expect_text(&mut ws).await, "fired a");
    let waited = set_at.elapsed();
    assert!(waited >= Duration::from_millis(300), "fired after {waited:?}, before its time");
    assert!(waited < Duration::from_secs(2), "fired after {waited:?}");
    assert_eq!(expect_text(&mut ws).await, "fired a (published)");
    assert_eq!(expect_text(&mut ws).await, "fired a (broadcast)");

    // Replace: only the second one fires, once.
    assert_eq!(command(&mut ws, "set b 60000").await, "ok");
    assert_eq!(command(&mut ws, "set b 200").await, "ok");
    notice(&mut ws, "fired b").await;
    // Cancel: it never fires.
    assert_eq!(command(&mut ws, "set c 300").await, "ok");
    assert_eq!(command(&mut ws, "cancel c").await, "true");
    assert_eq!(command(&mut ws, "cancel c").await, "false");
    // Get: its due time and attempts.
    let before = wharf::store::now_ms();
    assert_eq!(command(&mut ws, "set d 60000").await, "ok");
    let got = command(&mut ws, "get d").await;
    let fields: Vec<&str> = got.split(' ').collect();
    let due: u64 = fields[1].parse().unwrap();
    assert!(fields[0] == "d" && fields[2] == "0" && due >= before + 60_000 && due < before + 61_000, "{got}");
    assert_eq!(command(&mut ws, "get nothing").await, "none");

    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(command(&mut ws, "count a").await, "1");
    assert_eq!(command(&mut ws, "count b").await, "1");
    assert_eq!(command(&mut ws, "count c").await, "0");
    assert_eq!(command(&mut ws, "total").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_fires_once_on_time_and_replace_cancel_and_get_work_on_memory() {
    let host = host(None, "").await;
    fires_once_on_time_with_replace_cancel_and_get(&host).await;
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_fires_once_on_time_and_replace_cancel_and_get_work_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(Some(dir.path()), "").await;
    fires_once_on_time_with_replace_cancel_and_get(&host).await;
    host.stop().await.unwrap();
}

async fn a_thousand_due_in_one_second_all_fire(host: &wharf::app::Running) {
    let mut ws = connect(host, "/timers").await;
    // 1,000 timers in four events (on Redis each set is a round trip: a
    // thousand would take one event's whole 100 ms).
    for k in 0..4 {
        assert_eq!(command(&mut ws, &format!("many m{k}- 250 600")).await, "ok");
    }
    let mut counter = connect(host, "/timers").await;
    assert_eq!(ask_until(&mut counter, "total", |t| t == "1000").await, "1000");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(command(&mut counter, "total").await, "1000", "none fired twice");
    for name in ["m0-0", "m0-1", "m1-100", "m2-249", "m3-0", "m3-249"] {
        assert_eq!(command(&mut counter, &format!("count {name}")).await, "1", "{name}");
    }
    let (status, metrics) = http(host.admin_addr.unwrap(), "GET", "/metrics", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("wharf_timers_fired_total{plugin=\"timers\"} 1000"), "{metrics}");
    assert!(metrics.contains("wharf_timer_lateness_seconds_count 1000"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_timers_due_in_the_same_second_all_fire_once_on_memory() {
    let host = host(None, "").await;
    a_thousand_due_in_one_second_all_fire(&host).await;
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_timers_due_in_the_same_second_all_fire_once_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(Some(dir.path()), "").await;
    a_thousand_due_in_one_second_all_fire(&host).await;
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_fires_once_on_time_and_replace_cancel_and_get_work_on_redis() {
    let redis = redis_server::RedisServer::start();
    let host = redis_host(&redis).await;
    fires_once_on_time_with_replace_cancel_and_get(&host).await;
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_timers_due_in_the_same_second_all_fire_once_on_redis() {
    let redis = redis_server::RedisServer::start();
    let host = redis_host(&redis).await;
    a_thousand_due_in_one_second_all_fire(&host).await;
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_reload_keeps_pending_timers_and_the_new_version_runs_them() {
    let host = host(None, "").await;
    let mut ws = connect(&host, "/timers").await;
    assert_eq!(command(&mut ws, "set kept 1500").await, "ok");
    // The new version (echo v2, whose on-timer does nothing) replaces the
    // timers guest, which would have sent `fired kept` and counted it.
    let v2 = std::fs::read(component("echo-v2")).unwrap();
    let (status, body) = admin(&host, "PUT", "/plugins/timers", Some(("application/wasm", &v2))).await;
    assert_eq!((status, body["generation"].as_u64()), (200, Some(2)), "{body}");
    let (_, pending) = admin(&host, "GET", "/plugins/timers/timers", None).await;
    assert_eq!(pending["timers"][0]["name"], "kept", "still pending after the swap: {pending}");
    let metric = |name: &'static str| async move {
        let (_, m) = http(host.admin_addr.unwrap(), "GET", "/metrics", Some(ADMIN_TOKEN), None).await;
        m.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).unwrap_or(0.0)
    };
    assert_eq!(metric("wharf_timers_pending").await, 1.0);
    let deadline = Instant::now() + WAIT;
    while metric("wharf_timers_fired_total").await < 1.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric("wharf_timers_fired_total").await, 1.0, "the new version ran it");
    expect_silence(&mut ws, Duration::from_millis(300)).await;
    let (_, pending) = admin(&host, "GET", "/plugins/timers/timers", None).await;
    assert_eq!(pending["timers"], serde_json::json!([]), "{pending}");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_on_timer_is_retried_with_backoff_then_dropped_and_counted() {
    let host = host(None, "[limits]\ntimer_retries = 2\ntimer_retry_ms = 100\n").await;
    let mut ws = connect(&host, "/timers").await;
    let started = Instant::now();
    assert_eq!(command(&mut ws, "set trap1 50").await, "ok");
    // It counts itself before it traps: the first run and two retries.
    assert_eq!(ask_until(&mut ws, "count trap1", |c| c == "3").await, "3");
    assert!(started.elapsed() >= Duration::from_millis(50 + 100 + 200), "{:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(command(&mut ws, "count trap1").await, "3", "dropped after its last retry");
    assert_eq!(command(&mut ws, "get trap1").await, "none");
    let (_, metrics) = http(host.admin_addr.unwrap(), "GET", "/metrics", Some(ADMIN_TOKEN), None).await;
    assert!(metrics.contains("wharf_timers_retried_total{plugin=\"timers\"} 2"), "{metrics}");
    assert!(metrics.contains("wharf_timers_dropped_total{plugin=\"timers\"} 1"), "{metrics}");
    assert!(metrics.contains("wharf_handler_traps_total{event=\"timer\",plugin=\"timers\"} 3"), "{metrics}");
    // The connection that set it is untouched.
    assert_eq!(command(&mut ws, "total").await, "3");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_without_on_timer_may_not_set_a_timer() {
    let host = host(None, "").await;
    let mut ws = connect(&host, "/nt").await;
    assert_eq!(command(&mut ws, "set").await, "error: not allowed");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_lists_and_cancels_a_plugins_timers() {
    let host = host(None, "").await;
    let mut ws = connect(&host, "/timers").await;
    for name in ["x", "y", "z"] {
        assert_eq!(command(&mut ws, &format!("set {name} 60000")).await, "ok");
    }
    let (status, body) = admin(&host, "GET", "/plugins/timers/timers?limit=2", None).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["timers"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!((names.as_slice(), body["next"].as_str()), (["x", "y"].as_slice(), Some("y")));
    assert_eq!(body["timers"][0]["route"], "/timers");
    assert_eq!(body["timers"][0]["attempts"], 0);
    assert!(body["timers"][0]["text"].as_str().unwrap().parse::<u64>().is_ok(), "the payload, as text: {body}");
    let (_, rest) = admin(&host, "GET", "/plugins/timers/timers?after=y", None).await;
    assert_eq!(rest["timers"][0]["name"], "z");
    assert_eq!(rest["next"], serde_json::Value::Null);

    let (status, body) = admin(&host, "DELETE", "/plugins/timers/timers/y", None).await;
    assert_eq!((status, body["cancelled"].as_bool()), (200, Some(true)), "{body}");
    assert_eq!(command(&mut ws, "get y").await, "none");
    let (status, _) = admin(&host, "DELETE", "/plugins/timers/timers/y", None).await;
    assert_eq!(status, 404);
    let (status, _) = admin(&host, "GET", "/plugins/nobody/timers", None).await;
    assert_eq!(status, 404);
    let (status, _) = admin(&host, "GET", "/plugins/timers/timers?limit=0", None).await;
    assert_eq!(status, 400);
    host.stop().await.unwrap();
}

/// A `wharf serve` process of the `timers` guest on an embedded store in
/// `data_dir`; its address.
fn serve_timers(data_dir: &std::path::Path, config_dir: &std::path::Path) -> (std::process::Child, String) {
    let path = config_dir.join("wharf.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstore = \"embedded\"\ndata_dir = {:?}\ncache_dir = {:?}\n[admin]\nenabled = false\n\
         [plugins.timers]\ncomponent = {:?}\n[[routes]]\npath = \"/timers\"\nplugin = \"timers\"\n",
        data_dir.display().to_string(),
        cache_dir().display().to_string(),
        component("timers").display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    let (child, lines) = serve_process(&path);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines {
            if line.contains("wharf listening")
                && let Some(addr) = line.split("addr=").nth(1)
            {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("host logged its address");
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_timers_survive_kill_9_of_the_embedded_host_and_fire_after_start_up() {
    let (data, conf) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut child, addr) = serve_timers(data.path(), conf.path());
    let url = format!("ws://{addr}/timers");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    // Acknowledged, so on disk: one due during the outage, one after it.
    assert_eq!(command(&mut ws, "set during 500").await, "ok");
    assert_eq!(command(&mut ws, "set after 4000").await, "ok");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;

    let (mut child, addr) = serve_timers(data.path(), conf.path());
    let url = format!("ws://{addr}/timers");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    assert_eq!(
        ask_until(&mut ws, "count during", |c| c == "1").await,
        "1",
        "due while the host was down: fired at start-up"
    );
    let pending = command(&mut ws, "get after").await;
    assert!(pending.starts_with("after "), "still pending: {pending}");
    assert_eq!(ask_until(&mut ws, "count after", |c| c == "1").await, "1");
    // The timer's event may still be running: it counts its own name first,
    // then the total.
    assert_eq!(ask_until(&mut ws, "total", |c| c == "2").await, "2", "each timer ran once");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The countdown example in `plugin`'s language, on the real clock: two
/// clients of one room get `started`, a tick a second (never early) and
/// `done`.
async fn countdown_on_the_real_clock(plugin: &str) {
    let host = spawn(config(&[("/countdown", plugin)], "")).await;
    let mut ada = connect(&host, "/countdown?room=r").await;
    let mut bob = connect(&host, "/countdown?room=r").await;
    let json = |t: String| serde_json::from_str::<serde_json::Value>(&t).unwrap();
    for ws in [&mut ada, &mut bob] {
        assert_eq!(json(expect_text(ws).await)["type"], "welcome");
    }
    let started = Instant::now();
    send_text(&mut ada, r#"{"type":"start","seconds":2}"#).await;
    for ws in [&mut ada, &mut bob] {
        let got = json(expect_text(ws).await);
        assert_eq!((got["type"].as_str(), got["seconds"].as_u64()), (Some("started"), Some(2)), "{got}");
    }
    for (left, at) in [(1, 1000), (0, 2000)] {
        for ws in [&mut ada, &mut bob] {
            let got = json(expect_text(ws).await);
            assert_eq!((got["type"].as_str(), got["left"].as_u64()), (Some("tick"), Some(left)), "{got}");
        }
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(at), "tick {left} after {elapsed:?}, before its time");
        assert!(elapsed < Duration::from_millis(at + 1500), "tick {left} after {elapsed:?}");
    }
    for ws in [&mut ada, &mut bob] {
        assert_eq!(json(expect_text(ws).await)["type"], "done");
    }
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_countdown_ticks_on_the_real_clock() {
    countdown_on_the_real_clock("countdown").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_countdown_ticks_on_the_real_clock() {
    countdown_on_the_real_clock("ts-countdown").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_countdown_ticks_on_the_real_clock() {
    countdown_on_the_real_clock("py-countdown").await;
}
