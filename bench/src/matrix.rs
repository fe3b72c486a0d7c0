//! `make bench`: every scenario against the native baseline and Wharf,
//! side by side in one run, medians of several runs, ratios to the
//! baseline; written to `BENCHMARKS.md` (between markers) with a chart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::load::{self, BroadcastResult, BurstResult, EchoResult, IdleResult, Window};
use crate::report;
use crate::server::Server;
use crate::stats::median;

/// How much to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Runs per scenario (the tables show medians).
    pub runs: usize,
    /// Measured seconds per run (after one second of warm-up).
    pub secs: u64,
    /// Echo connection counts.
    pub echo_conns: Vec<usize>,
    /// Echo message sizes.
    pub echo_sizes: Vec<usize>,
    /// Broadcast subscribers.
    pub subscribers: usize,
    /// Messages of the unpaced burst to the broadcast subscribers.
    pub burst: u64,
    /// Idle connection counts.
    pub idle_conns: Vec<usize>,
    /// The core servers are pinned to, if any.
    pub server_core: Option<usize>,
}

impl Plan {
    /// The full matrix of the benchmark issue.
    pub fn full(server_core: Option<usize>) -> Plan {
        Plan {
            runs: 3,
            secs: 4,
            echo_conns: vec![1, 100, 1000],
            echo_sizes: vec![64, 4096],
            subscribers: 1000,
            burst: 2000,
            idle_conns: vec![10_000, 19_000],
            server_core,
        }
    }

    /// A few seconds of everything, to check that the harness works.
    pub fn quick(server_core: Option<usize>) -> Plan {
        Plan {
            runs: 1,
            secs: 1,
            echo_conns: vec![1, 10],
            echo_sizes: vec![64],
            subscribers: 20,
            burst: 200,
            idle_conns: vec![200],
            server_core,
        }
    }
}

/// Where the programs under test are.
#[derive(Clone, Debug)]
pub struct Programs {
    /// `wharf-bench` itself (runs the baseline server).
    pub bench: PathBuf,
    /// The `wharf` binary.
    pub wharf: PathBuf,
    /// The benchmark's Wharf config.
    pub config: PathBuf,
    /// The peers' servers and their npm packages (see [`peers`]).
    pub peers: PathBuf,
}

/// The median of a metric over some runs.
pub fn med<R>(runs: &[R], f: impl Fn(&R) -> f64) -> f64 {
    median(&runs.iter().map(f).collect::<Vec<_>>())
}

/// One echo scenario's runs on one target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EchoCell {
    /// `baseline`, `wharf` (warm pool), `wharf-fresh`, or a peer
    /// (`node-ws`, `workerd`).
    pub target: String,
    /// Connections.
    pub conns: usize,
    /// Message bytes.
    pub size: usize,
    /// Every run.
    pub runs: Vec<EchoResult>,
}

/// One broadcast scenario's runs on one target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BroadcastCell {
    /// `baseline`, `wharf` or a peer.
    pub target: String,
    /// Messages per second, 0 for unpaced.
    pub rate: u32,
    /// Every run.
    pub runs: Vec<BroadcastResult>,
}

/// The unpaced burst's runs on one target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BurstCell {
    /// `baseline`, `wharf` or a peer.
    pub target: String,
    /// Every run.
    pub runs: Vec<BurstResult>,
}

/// One idle scenario's runs on one target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdleCell {
    /// `baseline` or `wharf`.
    pub target: String,
    /// Every run.
    pub runs: Vec<IdleResult>,
}

/// Everything one `make bench` measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// The machine and how the run was set up.
    pub machine: String,
    /// Runs per scenario.
    pub runs: usize,
    /// Measured seconds per run.
    pub secs: u64,
    /// Broadcast subscribers.
    pub subscribers: usize,
    /// Echo cells.
    pub echo: Vec<EchoCell>,
    /// Broadcast cells.
    pub broadcast: Vec<BroadcastCell>,
    /// Messages of each burst.
    pub burst_messages: u64,
    /// Burst cells.
    pub burst: Vec<BurstCell>,
    /// Idle cells, by connection count.
    pub idle: Vec<(usize, Vec<IdleCell>)>,
    /// The `counter` example: (store, connections, runs).
    pub counter: Vec<(String, usize, Vec<EchoResult>)>,
    /// One handler invocation (criterion): (benchmark, median ns).
    pub invoke: Vec<(String, f64)>,
}

fn baseline(p: &Programs, core: Option<usize>) -> anyhow::Result<Server> {
    Server::start("baseline", &p.bench, &["baseline", "--listen", "127.0.0.1:0"], core, "listening on ")
}

fn wharf(p: &Programs, core: Option<usize>, store: &str, data_dir: &Path) -> anyhow::Result<Server> {
    let config = p.config.display().to_string();
    let data = data_dir.display().to_string();
    let args = ["serve", "--config", &config, "--listen", "127.0.0.1:0", "--store", store, "--data-dir", &data];
    Server::start("wharf", &p.wharf, &args, core, "wharf listening addr=")
}

/// The peers a user would pick instead of Wharf, serving the same echo
/// and broadcast room, each started if its npm package is installed under
/// `programs.peers`: Node `ws` (`ws-server.js`) and Cloudflare's workerd
/// (`workerd.capnp`: a Worker echo and a Durable Object room on the
/// hibernation API). A peer that is missing or does not start is left out,
/// with a line saying why.
pub fn peers(p: &Programs, core: Option<usize>) -> Vec<Server> {
    let dir = &p.peers;
    let mut started = Vec::new();
    let node_ws = dir.join("node_modules/ws/package.json");
    if node_ws.exists() {
        let script = dir.join("ws-server.js").display().to_string();
        match Server::start("node-ws", Path::new("node"), &[&script], core, "listening on ") {
            Ok(s) => started.push(s),
            Err(e) => eprintln!("peer node-ws left out: {e:#}"),
        }
    } else {
        eprintln!("peer node-ws left out: {} is missing (npm ci --prefix {})", node_ws.display(), dir.display());
    }
    let workerd = dir.join("node_modules/@cloudflare/workerd-linux-64/bin/workerd");
    if workerd.exists() {
        let config = dir.join("workerd.capnp").display().to_string();
        match Server::start("workerd", &workerd, &["serve", &config], core, "Listening on http://") {
            Ok(s) => started.push(s),
            Err(e) => eprintln!("peer workerd left out: {e:#}"),
        }
    } else {
        eprintln!("peer workerd left out: {} is missing (npm ci --prefix {})", workerd.display(), dir.display());
    }
    started
}

/// Runs the plan; prints progress to stderr.
pub async fn run(plan: &Plan, programs: &Programs) -> anyhow::Result<Results> {
    let data = std::env::temp_dir().join(format!("wharf-bench-{}", std::process::id()));
    std::fs::create_dir_all(&data)?;
    let window = Window { warmup: Duration::from_secs(1), measure: Duration::from_secs(plan.secs) };
    let core = plan.server_core;

    let mut echo = Vec::new();
    let mut broadcast = Vec::new();
    let burst;
    {
        let base = baseline(programs, core)?;
        let host = wharf(programs, core, "memory", &data)?;
        let peers = peers(programs, core);
        let mut targets =
            vec![("baseline", &base, "/echo"), ("wharf", &host, "/echo"), ("wharf-fresh", &host, "/echo-fresh")];
        targets.extend(peers.iter().map(|p| (p.name.as_str(), p, "/echo")));
        // The broadcast room on each server.
        let rooms: Vec<(&str, &Server)> = [("baseline", &base), ("wharf", &host)]
            .into_iter()
            .chain(peers.iter().map(|p| (p.name.as_str(), p)))
            .collect();
        for &conns in &plan.echo_conns {
            for &size in &plan.echo_sizes {
                let mut cells: Vec<EchoCell> = targets
                    .iter()
                    .map(|(t, _, _)| EchoCell { target: t.to_string(), conns, size, runs: Vec::new() })
                    .collect();
                for run in 0..plan.runs {
                    // Alternate targets within each run, so drift hits all.
                    for (cell, (name, server, path)) in cells.iter_mut().zip(targets.iter()) {
                        let r = load::echo(&server.url(path), conns, size, 1, window, Some(server.pid())).await?;
                        eprintln!(
                            "echo {name:<11} conns={conns:<5} size={size:<5} run {}: {:>9.0} msg/s p99 {:>8.0} µs cpu {:.2} µs/msg errors {}",
                            run + 1,
                            r.msgs_per_s,
                            r.latency.p99_us,
                            r.cpu_us_per_msg,
                            r.errors
                        );
                        cell.runs.push(r);
                    }
                }
                echo.extend(cells);
            }
        }
        for rate in [100u32, 0] {
            let mut cells: Vec<BroadcastCell> =
                rooms.iter().map(|(t, _)| BroadcastCell { target: t.to_string(), rate, runs: Vec::new() }).collect();
            for run in 0..plan.runs {
                for (cell, (_, server)) in cells.iter_mut().zip(&rooms) {
                    let r = load::broadcast(
                        &server.url("/broadcast"),
                        plan.subscribers,
                        rate,
                        64,
                        window,
                        Some(server.pid()),
                    )
                    .await?;
                    eprintln!(
                        "broadcast {:<8} subs={} rate={rate:<4} run {}: {:>10.0} deliveries/s p99 {:>8.0} µs errors {}",
                        cell.target,
                        plan.subscribers,
                        run + 1,
                        r.deliveries_per_s,
                        r.latency.p99_us,
                        r.errors
                    );
                    cell.runs.push(r);
                }
            }
            broadcast.extend(cells);
        }
        let mut cells: Vec<BurstCell> =
            rooms.iter().map(|(t, _)| BurstCell { target: t.to_string(), runs: Vec::new() }).collect();
        for run in 0..plan.runs {
            for (cell, (_, server)) in cells.iter_mut().zip(&rooms) {
                let url = server.url("/broadcast");
                let r =
                    load::burst(&url, plan.subscribers, plan.burst, 64, Duration::from_secs(10), Some(server.pid()))
                        .await?;
                eprintln!(
                    "burst {:<8} subs={} messages={} run {}: {} of {} delivered in {:.2} s, {} closed, {} failed",
                    cell.target,
                    plan.subscribers,
                    plan.burst,
                    run + 1,
                    r.delivered,
                    r.expected,
                    r.secs,
                    r.closed,
                    r.errors
                );
                cell.runs.push(r);
            }
        }
        burst = cells;
    }

    // Idle memory on fresh servers, so earlier runs' allocations don't count.
    let mut idle = Vec::new();
    for &conns in &plan.idle_conns {
        let mut cells = vec![
            IdleCell { target: "baseline".into(), runs: Vec::new() },
            IdleCell { target: "wharf".into(), runs: Vec::new() },
        ];
        for run in 0..plan.runs {
            for cell in cells.iter_mut() {
                let (server, path) = if cell.target == "baseline" {
                    (baseline(programs, core)?, "/echo")
                } else {
                    (wharf(programs, core, "memory", &data)?, "/echo")
                };
                tokio::time::sleep(Duration::from_millis(300)).await;
                let r = load::idle(&server.url(path), conns, Duration::from_secs(2), server.pid()).await?;
                eprintln!(
                    "idle {:<8} conns={conns} run {}: {:.0} connects/s, {:.2} KiB per connection",
                    cell.target,
                    run + 1,
                    r.connects_per_s,
                    r.bytes_per_connection / 1024.0
                );
                cell.runs.push(r);
            }
        }
        idle.push((conns, cells));
    }

    // The counter example on both stores.
    let mut counter = Vec::new();
    for store in ["memory", "embedded"] {
        let host = wharf(programs, core, store, &data.join(store))?;
        for conns in [1usize, 16] {
            let mut runs = Vec::new();
            for run in 0..plan.runs {
                let r = load::echo(&host.url("/counter"), conns, 8, 1, window, Some(host.pid())).await?;
                eprintln!("counter {store:<8} conns={conns:<3} run {}: {:.0} increments/s", run + 1, r.msgs_per_s);
                runs.push(r);
            }
            counter.push((store.to_string(), conns, runs));
        }
    }
    let _ = std::fs::remove_dir_all(&data);
    Ok(Results {
        machine: report::machine(core),
        runs: plan.runs,
        secs: plan.secs,
        subscribers: plan.subscribers,
        echo,
        broadcast,
        burst_messages: plan.burst,
        burst,
        idle,
        counter,
        invoke: Vec::new(),
    })
}
