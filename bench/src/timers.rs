//! `make bench-timers`: how late timers fire and how many one host fires a
//! second, on the memory, embedded and Redis stores side by side (release
//! hosts of the `timers` test guest). Lateness: 10,000 timers pending, due
//! one a millisecond over 10 s; each firing sends `fired NAME` to the
//! client that set it, which notes when it arrived against the timer's due
//! time (one clock: the same machine). Rate: 20,000 timers due at one
//! instant; from that instant to the last firing's message. Medians of the
//! runs written to `BENCHMARKS.md` between its own markers.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::SinkExt;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::load;
use crate::matrix::med;
use crate::redis::Redis;
use crate::server::Server;

/// Where the generated section starts in `BENCHMARKS.md`.
pub const BEGIN: &str = "<!-- make bench-timers: begin -->";
/// Where it ends.
pub const END: &str = "<!-- make bench-timers: end -->";
/// Timers one command sets: each is a store call (a script on Redis), and
/// one event must stay well within its 100 ms.
const PER_COMMAND: usize = 250;
/// Longest the client waits for one message.
const RECV_TIMEOUT: Duration = Duration::from_secs(30);

/// How much to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Runs per store (interleaved).
    pub runs: usize,
    /// Timers pending in the lateness run.
    pub pending: usize,
    /// Over how many seconds they are due.
    pub spread_secs: u64,
    /// Timers due at one instant in the rate run.
    pub burst: usize,
    /// The core the hosts are pinned to, if any.
    pub server_core: Option<usize>,
}

impl Plan {
    /// The points.
    pub fn full(server_core: Option<usize>) -> Plan {
        Plan { runs: 3, pending: 10_000, spread_secs: 10, burst: 20_000, server_core }
    }

    /// A moment of each, to check the harness.
    pub fn quick(server_core: Option<usize>) -> Plan {
        Plan { runs: 1, pending: 2_000, spread_secs: 2, burst: 2_000, server_core }
    }
}

/// One lateness run.
#[derive(Debug, Serialize)]
pub struct Lateness {
    /// Milliseconds from due to the firing's message arriving.
    pub p50_ms: f64,
    /// The 99th percentile.
    pub p99_ms: f64,
    /// The latest.
    pub max_ms: f64,
}

/// Every run of every store.
#[derive(Debug, Serialize)]
pub struct Results {
    /// (store, runs).
    pub lateness: Vec<(String, Vec<Lateness>)>,
    /// (store, firings per second, per run).
    pub rate: Vec<(String, Vec<f64>)>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Now, in Unix milliseconds with their fraction.
fn now_ms_f64() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn host(dir: &Path, wharf: &Path, timers: &Path, store: &str, core: Option<usize>) -> anyhow::Result<Server> {
    let data = dir.join(store.replace([':', '/'], "_"));
    let store_line = if store.starts_with("redis://") {
        format!("[store]\nbackend = {store:?}\n")
    } else {
        format!("store = \"{store}\"\ndata_dir = {:?}\n", data.display().to_string())
    };
    let text = format!(
        "listen = \"127.0.0.1:0\"\n{store_line}[admin]\nenabled = false\n\
         [limits]\nmax_timers = 1000000\ntimer_firings_per_second = 1000000\noutbound_queue = 1000000\n\
         outbound_queue_bytes = 1073741824\n\
         [plugins.timers]\ncomponent = {:?}\n[[routes]]\npath = \"/timers\"\nplugin = \"timers\"\n",
        timers.display().to_string(),
    );
    let name = if store.starts_with("redis://") { "redis" } else { store };
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text)?;
    Server::start(name, wharf, &["serve", "--config", file.to_str().unwrap_or_default()], core, "wharf listening addr=")
}

/// The next text message of `ws`, within [`RECV_TIMEOUT`].
async fn next_text(ws: &mut load::Ws) -> anyhow::Result<String> {
    load::next_text(ws, RECV_TIMEOUT).await
}

/// Sets `count` timers named `{prefix}{i}` due at `start + i * step`
/// through `ws`, [`PER_COMMAND`] per command; the due time of each name.
async fn spread(
    ws: &mut load::Ws,
    prefix: &str,
    count: usize,
    start: u64,
    step: u64,
) -> anyhow::Result<HashMap<String, u64>> {
    let mut due = HashMap::with_capacity(count);
    let mut at = 0;
    let mut chunk = 0;
    while at < count {
        let n = PER_COMMAND.min(count - at);
        let first = start + at as u64 * step;
        let p = format!("{prefix}{chunk}-");
        ws.send(Message::text(format!("spread {p} {n} {first} {step}"))).await?;
        let answer = next_text(ws).await?;
        anyhow::ensure!(answer == "ok", "setting timers: {answer}");
        for i in 0..n {
            due.insert(format!("fired {p}{i}"), first + i as u64 * step);
        }
        at += n;
        chunk += 1;
    }
    Ok(due)
}

/// Waits for every timer of `due` to fire; its due time and the arrival
/// time of its message (ms).
async fn arrivals(ws: &mut load::Ws, due: &HashMap<String, u64>) -> anyhow::Result<Vec<(u64, f64)>> {
    let mut got = Vec::with_capacity(due.len());
    while got.len() < due.len() {
        let t = next_text(ws).await?;
        let at = now_ms_f64();
        let Some(d) = due.get(&t) else { anyhow::bail!("an unexpected message: {t}") };
        got.push((*d, at));
    }
    Ok(got)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn lateness(server: &Server, plan: &Plan, run: usize) -> anyhow::Result<Lateness> {
    let (mut socks, _) = load::connect_many(&server.url("/timers"), 1).await?;
    let mut ws = socks.pop().expect("one connection");
    let step = (plan.spread_secs * 1000 / plan.pending as u64).max(1);
    // Time to set them all first: they are all pending when the first is due.
    let start = now_ms() + 3000;
    let due = spread(&mut ws, &format!("ql{run}-"), plan.pending, start, step).await?;
    anyhow::ensure!(now_ms() < start, "setting {} timers took longer than 3 s", plan.pending);
    let mut late: Vec<f64> = arrivals(&mut ws, &due).await?.iter().map(|(d, at)| at - *d as f64).collect();
    anyhow::ensure!(late.iter().all(|l| *l >= 0.0), "a timer fired before its time");
    late.sort_by(|a, b| a.total_cmp(b));
    Ok(Lateness { p50_ms: percentile(&late, 0.5), p99_ms: percentile(&late, 0.99), max_ms: percentile(&late, 1.0) })
}

async fn rate(server: &Server, plan: &Plan, run: usize) -> anyhow::Result<f64> {
    let (mut socks, _) = load::connect_many(&server.url("/timers"), 1).await?;
    let mut ws = socks.pop().expect("one connection");
    let at = now_ms() + 4000;
    let due = spread(&mut ws, &format!("qr{run}-"), plan.burst, at, 0).await?;
    anyhow::ensure!(now_ms() < at, "setting {} timers took longer than 4 s", plan.burst);
    let got = arrivals(&mut ws, &due).await?;
    let last = got.iter().map(|(_, a)| *a).fold(at as f64, f64::max);
    Ok(plan.burst as f64 / ((last - at as f64).max(1.0) / 1000.0))
}

/// Runs the plan with the `wharf` binary and the `timers` test guest.
pub async fn run(plan: &Plan, wharf: &Path, timers: &Path) -> anyhow::Result<Results> {
    let dir = tempfile::tempdir()?;
    let redis = Redis::start(dir.path())?;
    let stores = ["memory".to_string(), "embedded".to_string(), redis.url.clone()];
    let hosts: Vec<Server> =
        stores.iter().map(|s| host(dir.path(), wharf, timers, s, plan.server_core)).collect::<anyhow::Result<_>>()?;
    let mut results = Results {
        lateness: hosts.iter().map(|h| (h.name.clone(), Vec::new())).collect(),
        rate: hosts.iter().map(|h| (h.name.clone(), Vec::new())).collect(),
    };
    for run in 0..plan.runs {
        for (i, h) in hosts.iter().enumerate() {
            eprintln!("run {}/{}: timer lateness with {} pending on {}", run + 1, plan.runs, plan.pending, h.name);
            results.lateness[i].1.push(lateness(h, plan, run).await?);
            eprintln!("run {}/{}: {} timers due at once on {}", run + 1, plan.runs, plan.burst, h.name);
            results.rate[i].1.push(rate(h, plan, run).await?);
        }
    }
    drop(redis);
    Ok(results)
}

/// The generated section of `BENCHMARKS.md`.
pub fn markdown(r: &Results, plan: &Plan, machine: &str, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(
        s,
        "_Generated by `{command}` on {machine}: the `timers` test guest (release host, one per store, side by \
         side; `timer_firings_per_second` raised out of the way). Lateness: {} timers pending, due one every {} ms \
         over {} s, each firing sending a message to the client that set them; from its due time to that message's \
         arrival. Rate: {} timers due at one instant; from that instant to the last one's message. Medians of {} \
         interleaved runs._\n",
        plan.pending,
        (plan.spread_secs * 1000 / plan.pending as u64).max(1),
        plan.spread_secs,
        plan.burst,
        plan.runs
    );
    let _ = writeln!(s, "| store | lateness p50 ms | p99 ms | max ms | firings/s (one host) |");
    // Lateness includes the message's way to the client (tens of µs).
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: |");
    for ((name, late), (_, rate)) in r.lateness.iter().zip(&r.rate) {
        let _ = writeln!(
            s,
            "| {name} | {:.2} | {:.2} | {:.1} | {:.0} |",
            med(late, |x| x.p50_ms),
            med(late, |x| x.p99_ms),
            med(late, |x| x.max_ms),
            med(rate, |x| *x)
        );
    }
    let _ = writeln!(s, "\n{END}");
    s
}
