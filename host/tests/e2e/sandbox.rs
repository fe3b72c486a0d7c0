//! Handlers that do the worst they can are contained: each misbehaviour
//! fails only its own event (or is refused at load), a neighbour's echo
//! client on another route is answered throughout on the same connection,
//! and the host keeps running.

use crate::common::*;

/// `faulty` with tight per-plugin limits beside a plain `echo` route.
const SANDBOX: &str = r#"
[limits]
max_metadata_bytes = 2000000

[plugins.faulty]
component = @faulty@
[plugins.faulty.limits]
memory_mib = 16
max_messages_per_event = 50
max_bytes_per_event = 100000
max_store_ops_per_event = 20
max_value_bytes = 65536

[plugins.echo]
component = @echo@

[[routes]]
path = "/faulty"
plugin = "faulty"

[[routes]]
path = "/echo"
plugin = "echo"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_misbehaving_handler_fails_only_its_own_event() {
    let host = spawn(config_from(SANDBOX)).await;
    let probe = EchoProbe::start(&host, "/echo").await;
    let mut bystander = connect(&host, "/faulty").await;
    // An infinite loop, a memory bomb, a panic, unbounded recursion.
    each_command_fails_only_its_own_event(&host, &probe, &mut bystander, &["spin", "bomb", "panic", "recurse"]).await;
    // Every probe on the same connection was answered correctly.
    probe.finish().await;
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_get_a_wit_error_not_the_hosts_memory() {
    let host = spawn(config_from(SANDBOX)).await;
    let probe = EchoProbe::start(&host, "/echo").await;
    let mut ws = connect(&host, "/faulty").await;

    // Messages per event: 50, then quota-exceeded; the event goes on.
    send_text(&mut ws, "flood:100").await;
    for _ in 0..50 {
        assert_eq!(expect_text(&mut ws).await.len(), 100);
    }
    assert_eq!(expect_text(&mut ws).await, "flood stopped after 50: quota exceeded");
    // Bytes per event: 100,000, so ten messages of 10,000.
    send_text(&mut ws, "flood:10000").await;
    for _ in 0..10 {
        assert_eq!(expect_text(&mut ws).await.len(), 10_000);
    }
    assert_eq!(expect_text(&mut ws).await, "flood stopped after 10: quota exceeded");
    // A message larger than max_message_bytes is too large on its own.
    send_text(&mut ws, "flood:2000000").await;
    assert_eq!(expect_text(&mut ws).await, "flood stopped after 0: too large");
    // Store operations per event: 20.
    assert_eq!(ask(&mut ws, "kv-flood").await, "kv stopped after 20: quota exceeded");
    // A value over max_value_bytes is refused; one under it is stored.
    assert_eq!(ask(&mut ws, "bigkv:70000").await, "too large");
    assert_eq!(ask(&mut ws, "bigkv:60000").await, "stored");
    // The caps are per event: the next event starts afresh.
    assert_eq!(ask(&mut ws, "kv-flood").await, "kv stopped after 20: quota exceeded");
    assert_eq!(ask(&mut ws, "still here").await, "still here");

    probe.answers_after(probe.answered()).await;
    probe.finish().await;
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_has_no_environment_arguments_or_files() {
    assert!(std::env::var_os("PATH").is_some(), "the host itself has an environment");
    let host = spawn(config_from(SANDBOX)).await;
    let mut ws = connect(&host, "/faulty").await;
    assert_eq!(ask(&mut ws, "env").await, "vars=0 args=0 home=(unset)");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_wants_the_network_is_refused_at_load_naming_the_import() {
    // At start-up: the config error names the plugin and the import.
    let config = config_from("[plugins.dialer]\ncomponent = @opens-socket@\n");
    let err = wharf::app::start(config).await.err().expect("a component that opens sockets is refused");
    let err = format!("{err:#}");
    assert!(err.contains("plugins.dialer.component"), "{err}");
    assert!(err.contains("wasi:sockets/"), "{err}");
    assert!(err.contains("handlers get no network"), "{err}");

    // As an upload: refused with the reason, and the old version serves on.
    let host = spawn(config_from(SANDBOX)).await;
    let probe = EchoProbe::start(&host, "/echo").await;
    let bytes = std::fs::read(component("opens-socket")).unwrap();
    let (status, json) = admin(&host, "PUT", "/plugins/echo", Some(("application/wasm", &bytes))).await;
    assert_eq!(status, 422, "{json}");
    let reason = json["error"].as_str().unwrap();
    assert!(reason.contains("refused imports") && reason.contains("wasi:sockets/"), "{reason}");
    probe.answers_after(probe.answered()).await;
    probe.finish().await;
    let (_, info) = admin(&host, "GET", "/plugins/echo", None).await;
    assert_eq!(info["generation"], 1, "nothing was swapped");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_reads_files_loads_and_reaches_none() {
    // The filesystem imports (every JavaScript and Python runtime has them)
    // are linked with no directory preopened: a read fails in the guest.
    let host = spawn(config_from(
        "[plugins.reader]\ncomponent = @reads-file@\n[[routes]]\npath = \"/read\"\nplugin = \"reader\"\n",
    ))
    .await;
    let mut ws = connect(&host, "/read").await;
    let answer = ask(&mut ws, "read").await;
    assert!(answer.starts_with("refused: "), "{answer}");
    assert!(!answer.contains("root:"), "the host's file leaked: {answer}");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_answers_go_through_the_limits_its_calls_do() {
    let host = spawn(config_from(SANDBOX)).await;
    let probe = EchoProbe::start(&host, "/echo").await;

    // A direct reply is a message: within max_message_bytes (1 MiB), or
    // the event fails (1011) and nothing of it is sent.
    let mut ws = connect(&host, "/faulty").await;
    assert_eq!(ask(&mut ws, "reply:1048576").await.len(), 1 << 20);
    send_text(&mut ws, "reply:1048577").await;
    assert_eq!(expect_close(&mut ws).await, 1011, "over max_message_bytes");
    let mut ws = connect(&host, "/faulty").await;
    send_text(&mut ws, "reply:20000000").await;
    assert_eq!(expect_close(&mut ws).await, 1011);

    // Accept metadata goes through set-metadata's checks: values within
    // max_value_bytes (65,536), one store operation each (20 per event),
    // and the connection's caps (max_metadata_bytes is raised here; the
    // limits tests check the caps).
    assert_eq!(refused_with(&host, "/faulty?meta=20&meta-bytes=65536").await, None);
    assert_eq!(refused_with(&host, "/faulty?meta=21&meta-bytes=1").await, Some(500));
    assert_eq!(refused_with(&host, "/faulty?meta=1&meta-bytes=65537").await, Some(500));
    let (status, json) = admin(&host, "GET", "/connections?route=/faulty", None).await;
    assert_eq!(status, 200);
    let open = json["connections"].as_array().unwrap();
    assert!(open.iter().all(|c| c["metadata"].as_object().unwrap().len() <= 20), "no refused open left a record");

    // A log flood of 4 MB in one event writes at most the event's budget.
    let mut ws = connect(&host, "/faulty").await;
    assert_eq!(ask(&mut ws, "log-flood").await, "logged");
    let (_, metrics) = admin(&host, "GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_string();
    let dropped: f64 = metrics
        .lines()
        .find(|l| l.starts_with("wharf_guest_log_dropped_total{plugin=\"faulty\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("the dropped lines are counted");
    // 64 KiB of 4,000-byte lines is 16 lines; the other 984 are dropped.
    assert_eq!(dropped, 984.0, "{metrics}");

    let before = probe.answered();
    probe.answers_after(before).await;
    let (answered, _) = probe.finish().await;
    assert!(answered > 0);
    host.stop().await.unwrap();
}

/// The linear memory the host's instances hold, from `/metrics`.
async fn instance_memory(host: &wharf::app::Running) -> u64 {
    let (_, metrics) = admin(host, "GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_string();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("wharf_instance_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no wharf_instance_memory_bytes in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_memory_is_bounded_in_total_and_given_back() {
    let body = r#"
[limits]
memory_mib = 16
instance_memory_mib = 40
[plugins.faulty]
component = @faulty@
[plugins.echo]
component = @echo@
[[routes]]
path = "/faulty"
plugin = "faulty"
[[routes]]
path = "/echo"
plugin = "echo"
"#;
    let host = spawn(config_from(body)).await;
    let probe = EchoProbe::start(&host, "/echo").await;
    // Six memory bombs at once want 96 MiB; the host's instances may hold
    // 40 MiB together. Each bomb fails (1011); the echo client is answered.
    let mut bombs = Vec::new();
    for _ in 0..6 {
        bombs.push(connect(&host, "/faulty").await);
    }
    for ws in &mut bombs {
        send_text(ws, "bomb").await;
    }
    for ws in &mut bombs {
        assert_eq!(expect_close(ws).await, 1011);
    }
    let held = instance_memory(&host).await;
    assert!(held <= 40 << 20, "{held} bytes held");
    probe.answers_after(probe.answered()).await;

    // An event that grows its instance by 8 MB and succeeds: the instance
    // is dropped afterwards, not kept warm with that memory.
    let mut ws = connect(&host, "/faulty").await;
    let first: u32 = ask(&mut ws, "count").await.parse().unwrap();
    assert_eq!(ask(&mut ws, "count").await, (first + 1).to_string(), "a warm instance is reused");
    let before = instance_memory(&host).await;
    assert_eq!(ask(&mut ws, "bigkv:8000000").await, "too large");
    let after = instance_memory(&host).await;
    assert!(after <= before + (1 << 20), "the grown instance kept its memory: {before} -> {after} bytes");
    assert_eq!(ask(&mut ws, "still here").await, "still here");
    probe.finish().await;
    host.stop().await.unwrap();
}
