//! A two-second smoke of the harness so it cannot rot: every mode against
//! the in-process baseline and an in-process Wharf serving the benchmark's
//! config, and the report built from the results.

use std::path::PathBuf;
use std::time::Duration;

use wharf_bench::load::{self, Window};
use wharf_bench::matrix::{BroadcastCell, BurstCell, EchoCell, IdleCell, Results};
use wharf_bench::{baseline, cluster, languages, matrix, report};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn wharf_host() -> wharf::app::Running {
    let mut config = wharf::config::Config::load(&root().join("bench/wharf.toml")).expect("bench/wharf.toml is valid");
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.store = wharf::config::StoreChoice::Memory.into();
    config.cache_dir = Some(root().join("target/test-data/cache"));
    wharf::app::start(config).await.expect("the benchmark config serves")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_runs_and_reports() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_addr = listener.local_addr().unwrap();
    let base = tokio::spawn(baseline::serve(listener));
    let host = wharf_host().await;
    let pid = Some(std::process::id());
    let window = Window { warmup: Duration::from_millis(100), measure: Duration::from_millis(300) };
    // The peers, as the matrix starts them (`make test-deps` installs them).
    let programs = matrix::Programs {
        bench: PathBuf::new(),
        wharf: PathBuf::new(),
        config: PathBuf::new(),
        peers: root().join("bench/peers"),
    };
    let peers = matrix::peers(&programs, None);
    let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["node-ws", "workerd"], "both peers start (make test-deps installs them)");
    let mut targets = vec![
        ("baseline", format!("ws://{base_addr}"), pid),
        ("wharf", format!("ws://{}", host.addr), pid),
        ("wharf-fresh", format!("ws://{}", host.addr), pid),
    ];
    targets.extend(peers.iter().map(|p| (p.name.as_str(), format!("ws://{}", p.addr), Some(p.pid()))));
    // The broadcast room on each.
    let rooms: Vec<_> = targets.iter().filter(|t| t.0 != "wharf-fresh").collect();

    let mut echo = Vec::new();
    for (name, url, pid) in &targets {
        let path = if *name == "wharf-fresh" { "/echo-fresh" } else { "/echo" };
        let r = load::echo(&format!("{url}{path}"), 4, 64, 2, window, *pid).await.unwrap();
        assert!(r.msgs_per_s > 0.0 && r.errors == 0, "{name}: {r:?}");
        assert!(r.latency.p50_us > 0.0 && r.latency.p50_us <= r.latency.p99_us, "{name}: {r:?}");
        echo.push(EchoCell { target: name.to_string(), conns: 4, size: 64, runs: vec![r] });
    }

    let mut broadcast = Vec::new();
    for (name, url, pid) in &rooms {
        let r = load::broadcast(&format!("{url}/broadcast"), 8, 0, 64, window, *pid).await.unwrap();
        // Every published message in the window reaches all 8 subscribers.
        assert!(r.published > 0 && r.errors == 0, "{name}: {r:?}");
        let expected = r.published as f64 * 8.0 / window.measure.as_secs_f64();
        assert!(r.deliveries_per_s >= expected * 0.95, "{name}: {r:?} (expected about {expected})");
        broadcast.push(BroadcastCell { target: name.to_string(), rate: 0, runs: vec![r] });
    }

    // An unpaced burst: every message reaches every subscriber on both.
    let mut burst = Vec::new();
    for (name, url, pid) in &rooms {
        let r = load::burst(&format!("{url}/broadcast"), 8, 300, 64, Duration::from_secs(10), *pid).await.unwrap();
        assert_eq!((r.expected, r.delivered, r.closed, r.errors), (2400, 2400, 0, 0), "{name}: {r:?}");
        assert!(r.deliveries_per_s > 0.0 && r.max_latency_us > 0.0, "{name}: {r:?}");
        burst.push(BurstCell { target: name.to_string(), runs: vec![r] });
    }

    let mut idle = Vec::new();
    for (name, url, _) in &targets[..2] {
        let r = load::idle(&format!("{url}/echo"), 50, Duration::from_millis(100), std::process::id()).await.unwrap();
        assert_eq!(r.connections, 50);
        assert!(r.connects_per_s > 0.0 && r.rss_after > 0, "{name}: {r:?}");
        idle.push(IdleCell { target: name.to_string(), runs: vec![r] });
    }

    // Subscribers spread over "hosts" (here the same host twice): the half on
    // the second one are counted as cross-host.
    let url = format!("ws://{}/broadcast", host.addr);
    let r = load::broadcast_across(&[&url, &url], load::BROADCAST, 8, 0, 64, window, pid).await.unwrap();
    assert!(r.published > 0 && r.errors == 0, "{r:?}");
    assert!(r.cross_host_latency.p50_us > 0.0 && r.latency.p50_us > 0.0, "{r:?}");
    let plan = cluster::Plan::quick();
    let cells: Vec<_> = [("memory", 1), ("redis", 2)]
        .map(|(store, hosts)| cluster::Cell {
            store: store.into(),
            hosts,
            light: vec![r.clone()],
            paced: vec![r.clone()],
            unpaced: vec![r.clone()],
        })
        .into();
    let section = cluster::markdown(&cells, &plan, "smoke");
    assert!(section.starts_with(cluster::BEGIN) && section.trim_end().ends_with(cluster::END));
    assert!(section.contains("| one host, memory store | 1 |") && section.contains("| Redis | 2 |"), "{section}");
    assert!(section.contains("| 1.00× |"), "{section}");

    // A chat room: the publisher is a member too, and its own copies are
    // read but not counted.
    let chat = format!("ws://{}/chat", host.addr);
    let r = load::broadcast_across(&[&chat], load::CHAT, 8, 0, 64, window, pid).await.unwrap();
    assert!(r.published > 0 && r.errors == 0, "{r:?}");
    let expected = r.published as f64 * 8.0 / window.measure.as_secs_f64();
    assert!(r.deliveries_per_s >= expected * 0.95, "chat: {r:?} (expected about {expected})");
    let lang = |name: &str, invoke_ns| languages::LangResult {
        lang: name.into(),
        echo_bytes: 12_000_000,
        cold_start_s: vec![7.0],
        cached_start_s: vec![0.3],
        echo: vec![echo[1].runs[0].clone()],
        chat: vec![r.clone()],
        idle: vec![languages::IdleMemory { rss_before: 80 << 20, rss_after: 88 << 20, bytes_per_connection: 8192.0 }],
        invoke_ns: Some(invoke_ns),
    };
    let section = languages::markdown(
        &[lang("Rust", 1000.0), lang("JavaScript", 17_000.0)],
        &languages::Plan::quick(None),
        "a machine",
        "smoke",
    );
    assert!(section.starts_with(languages::BEGIN) && section.trim_end().ends_with(languages::END));
    assert!(section.contains("| | Rust | JavaScript |"), "{section}");
    assert!(section.contains("| per-event cost over Rust | – | 16.00 µs |"), "{section}");
    assert!(section.contains("| RSS per idle connection (50 after a burst) | 8.0 KiB | 8.0 KiB |"), "{section}");

    // Targets outside loopback are refused before any connection.
    assert!(load::echo("ws://192.0.2.1:80/echo", 1, 8, 1, window, None).await.is_err());

    let results = Results {
        machine: report::machine(None),
        runs: 1,
        secs: 1,
        subscribers: 8,
        echo,
        broadcast,
        burst_messages: 300,
        burst,
        idle: vec![(50, idle)],
        counter: Vec::new(),
        invoke: vec![("warm text 64 B".into(), 900.0)],
    };
    let section = report::markdown(&results, "smoke");
    assert!(section.starts_with(report::BEGIN) && section.trim_end().ends_with(report::END));
    assert!(section.contains("| 4 | 64 B |"), "{section}");
    assert!(section.contains("| 8 | unpaced"), "{section}");
    assert!(section.contains("| wharf | 2,400 | 2,400 | 0 |"), "{section}");
    assert!(section.contains("| warm text 64 B | 900 ns |"), "{section}");
    for peer in ["node-ws", "workerd"] {
        assert_eq!(section.matches(&format!("| echo 4 × 64 B | {peer} |")).count(), 1, "{section}");
        assert!(section.contains(&format!("| broadcast to 8, unpaced | {peer} |")), "{section}");
        assert!(
            section.contains(&format!(
                "| burst of 300 to 8 (2,400 of 2,400 delivered by the peer, 2,400 by Wharf) | {peer} |"
            )),
            "{section}"
        );
    }
    let svg = report::chart(&results);
    assert_eq!(svg.matches("<polyline").count(), 10, "five targets on two panels");
    drop(peers);

    host.stop().await.unwrap();
    base.abort();
}

/// The GRIP bench's echo backend behind an in-process Wharf route, and its
/// report (Pushpin itself is not needed here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grip_backend_echoes_through_wharf_and_reports() {
    use wharf_bench::grip;
    let backend = grip::echo_backend().await.unwrap();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstore = \"memory\"\n[admin]\nenabled = false\n\
         [[routes]]\npath = \"/echo\"\nbackend = \"http://{backend}/\"\n"
    );
    let config = wharf::config::Config::parse(&text, "grip bench").unwrap();
    config.validate("grip bench").unwrap();
    let host = wharf::app::start(config).await.unwrap();
    let window = Window { warmup: Duration::from_millis(100), measure: Duration::from_millis(300) };
    let r = load::echo(&format!("ws://{}/echo", host.addr), 4, 64, 1, window, Some(std::process::id())).await.unwrap();
    assert!(r.msgs_per_s > 0.0 && r.errors == 0, "{r:?}");
    let points: Vec<grip::Point> = ["wharf", "pushpin"]
        .iter()
        .flat_map(|g| [1, 10].map(|conns| grip::Point { gateway: g.to_string(), conns, runs: vec![r.clone()] }))
        .collect();
    let section = grip::markdown(&points, &grip::Plan::quick(None), "a test machine", "make bench-grip-quick");
    assert!(section.starts_with(grip::BEGIN) && section.trim_end().ends_with(grip::END));
    assert!(section.contains("| 10 | msgs/s |") && section.contains("1.00×"), "{section}");
    host.stop().await.unwrap();
}
