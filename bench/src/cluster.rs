//! `make bench-cluster`: broadcast fan-out with the subscribers spread over
//! 1, 2 and 3 hosts sharing one `redis-server`, beside one host on the
//! memory store, side by side in one run; medians of several runs, written
//! to `BENCHMARKS.md` between its own markers.
//!
//! Every process shares the machine's cores (no pinning): on one machine,
//! more hosts cannot add capacity. What this measures is the price of the
//! Redis hop: cross-host delivery latency, and deliveries per second when
//! every message also crosses Redis.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::load::{self, BroadcastResult, Window};
use crate::matrix::{Programs, med};
use crate::redis::Redis;
use crate::report::{ratio, thousands, us};
use crate::server::Server;

/// Where the generated section starts in `BENCHMARKS.md`.
pub const BEGIN: &str = "<!-- make bench-cluster: begin -->";
/// Where it ends.
pub const END: &str = "<!-- make bench-cluster: end -->";

/// How much to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Runs per setup.
    pub runs: usize,
    /// Measured seconds per run (after one second of warm-up).
    pub secs: u64,
    /// Subscribers, spread evenly over the hosts.
    pub subscribers: usize,
    /// Subscribers of the light paced runs, which show the hop's own
    /// latency rather than the cost of writing to a thousand sockets.
    pub light_subscribers: usize,
    /// Messages per second of the paced (latency) runs.
    pub paced_rate: u32,
    /// Host counts on Redis.
    pub hosts: Vec<usize>,
}

impl Plan {
    /// The full plan.
    pub fn full() -> Plan {
        Plan { runs: 3, secs: 4, subscribers: 1000, light_subscribers: 30, paced_rate: 100, hosts: vec![1, 2, 3] }
    }

    /// A second of everything.
    pub fn quick() -> Plan {
        Plan { runs: 1, secs: 1, subscribers: 60, light_subscribers: 6, paced_rate: 20, hosts: vec![1, 2] }
    }
}

/// One setup's runs.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    /// `memory` (one host, no Redis) or `redis`.
    pub store: String,
    /// Hosts serving the subscribers.
    pub hosts: usize,
    /// Paced runs with few subscribers (the hop's latency).
    pub light: Vec<BroadcastResult>,
    /// Paced runs (latency).
    pub paced: Vec<BroadcastResult>,
    /// Unpaced runs (throughput).
    pub unpaced: Vec<BroadcastResult>,
}

fn host(p: &Programs, store: &str, data_dir: &Path) -> anyhow::Result<Server> {
    let config = p.config.display().to_string();
    let data = data_dir.display().to_string();
    let args = ["serve", "--config", &config, "--listen", "127.0.0.1:0", "--store", store, "--data-dir", &data];
    Server::start("wharf", &p.wharf, &args, None, "wharf listening addr=")
}

/// Runs the plan; prints progress to stderr.
pub async fn run(plan: &Plan, programs: &Programs) -> anyhow::Result<Vec<Cell>> {
    let window = Window { warmup: Duration::from_secs(1), measure: Duration::from_secs(plan.secs) };
    let mut setups = vec![("memory", 1)];
    setups.extend(plan.hosts.iter().map(|h| ("redis", *h)));
    let mut cells = Vec::new();
    for (store, hosts) in setups {
        let dir = tempfile::tempdir()?;
        let redis = if store == "redis" { Some(Redis::start(dir.path())?) } else { None };
        let backend = redis.as_ref().map_or("memory", |r| r.url.as_str());
        let mut servers = Vec::new();
        for i in 0..hosts {
            servers.push(host(programs, backend, &dir.path().join(format!("host{i}")))?);
        }
        // Let every host subscribe to the others before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let urls: Vec<String> = servers.iter().map(|s| s.url("/broadcast")).collect();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let mut cell = Cell { store: store.into(), hosts, light: Vec::new(), paced: Vec::new(), unpaced: Vec::new() };
        for run in 0..plan.runs {
            for (subs, rate) in
                [(plan.light_subscribers, plan.paced_rate), (plan.subscribers, plan.paced_rate), (plan.subscribers, 0)]
            {
                let r = load::broadcast_across(&urls, load::BROADCAST, subs, rate, 64, window, None).await?;
                eprintln!(
                    "cluster {store:<6} hosts={hosts} subs={subs:<5} rate={rate:<4} run {}: {:>10.0} deliveries/s p50 {:>8.0} µs p99 {:>8.0} µs cross-host p50 {:>8.0} µs p99 {:>8.0} µs errors {}",
                    run + 1,
                    r.deliveries_per_s,
                    r.latency.p50_us,
                    r.latency.p99_us,
                    r.cross_host_latency.p50_us,
                    r.cross_host_latency.p99_us,
                    r.errors
                );
                match (subs == plan.light_subscribers, rate) {
                    (true, _) => cell.light.push(r),
                    (false, 0) => cell.unpaced.push(r),
                    (false, _) => cell.paced.push(r),
                }
            }
        }
        cells.push(cell);
        drop(servers);
        drop(redis);
    }
    Ok(cells)
}

/// The generated section of `BENCHMARKS.md`.
pub fn markdown(cells: &[Cell], plan: &Plan, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(
        s,
        "_Generated by `{command}`: subscribers on `/broadcast` spread evenly over the hosts, the publisher on the \
         first host, 64-byte messages, medians of {} runs of {} s. Latency is from publish to delivery, paced at {} \
         messages/s; \"cross-host\" counts only the subscribers on another host than the publisher. Unpaced: as fast \
         as every subscriber takes them (32 in flight). All processes (hosts, redis-server, the load generator) share \
         this machine's 2 cores, unpinned._\n",
        plan.runs, plan.secs, plan.paced_rate
    );
    let _ = writeln!(
        s,
        "| setup | hosts | {light} subs p50 / p99 | {light} subs cross-host p50 / p99 | {n} subs p50 / p99 | {n} subs cross-host p50 / p99 | {n} subs unpaced deliveries/s | vs one host (memory) |",
        light = plan.light_subscribers,
        n = plan.subscribers
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let single = cells.first().map_or(0.0, |c| med(&c.unpaced, |r| r.deliveries_per_s));
    let pair = |runs: &[BroadcastResult], p50: fn(&BroadcastResult) -> f64, p99: fn(&BroadcastResult) -> f64| {
        format!("{} / {}", us(med(runs, p50)), us(med(runs, p99)))
    };
    for c in cells {
        let cross = |runs: &[BroadcastResult]| {
            if c.hosts > 1 {
                pair(runs, |r| r.cross_host_latency.p50_us, |r| r.cross_host_latency.p99_us)
            } else {
                "–".into()
            }
        };
        let rate = med(&c.unpaced, |r| r.deliveries_per_s);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            if c.store == "memory" { "one host, memory store" } else { "Redis" },
            c.hosts,
            pair(&c.light, |r| r.latency.p50_us, |r| r.latency.p99_us),
            cross(&c.light),
            pair(&c.paced, |r| r.latency.p50_us, |r| r.latency.p99_us),
            cross(&c.paced),
            thousands(rate),
            ratio(rate, single),
        );
    }
    let _ = writeln!(s, "{END}");
    s
}
