//! `make bench-languages`: the `echo` and `chat` examples in Rust,
//! JavaScript and Python, each language on its own host, side by side in one
//! run (the languages alternate within every run, so drift hits all);
//! medians of several runs, written to `BENCHMARKS.md` between its own
//! markers.
//!
//! Per language: the cold start (both components compiled, empty compile
//! cache) and the cached start; echo at 100 connections and chat with 100
//! members (msgs/s, server CPU per message, p99); the host's resident memory
//! with the components loaded, and per idle connection after every
//! connection has sent a message (the instance pool filled); and, from the
//! `invoke` criterion bench, one warm `on-message`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::load::{self, BroadcastResult, EchoResult, Window};
use crate::matrix::med;
use crate::procfs;
use crate::report::{thousands, us};
use crate::server::Server;

/// Where the generated section starts in `BENCHMARKS.md`.
pub const BEGIN: &str = "<!-- make bench-languages: begin -->";
/// Where it ends.
pub const END: &str = "<!-- make bench-languages: end -->";

/// How much to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Runs per measurement.
    pub runs: usize,
    /// Measured seconds per run (after one second of warm-up).
    pub secs: u64,
    /// Echo connections, and chat members (one of them publishes).
    pub conns: usize,
    /// Idle connections of the memory runs.
    pub idle_conns: usize,
    /// The core the hosts are pinned to, if any.
    pub server_core: Option<usize>,
}

impl Plan {
    /// The measurements of the issue.
    pub fn full(server_core: Option<usize>) -> Plan {
        Plan { runs: 3, secs: 4, conns: 100, idle_conns: 1000, server_core }
    }

    /// A second of everything, to check the harness.
    pub fn quick(server_core: Option<usize>) -> Plan {
        Plan { runs: 1, secs: 1, conns: 10, idle_conns: 50, server_core }
    }
}

/// One guest language and its two example components.
#[derive(Clone, Copy, Debug)]
pub struct Lang {
    /// The name the criterion bench uses (`rust`, `js`, `python`).
    pub key: &'static str,
    /// The name in the report.
    pub name: &'static str,
    /// The echo component, relative to the repository root.
    pub echo: &'static str,
    /// The chat component.
    pub chat: &'static str,
}

/// The languages, Rust first (the reference).
pub const LANGS: [Lang; 3] = [
    Lang {
        key: "rust",
        name: "Rust",
        echo: "target/wasm32-wasip2/release/echo.wasm",
        chat: "target/wasm32-wasip2/release/chat.wasm",
    },
    Lang {
        key: "js",
        name: "JavaScript",
        echo: "target/components/js-echo.wasm",
        chat: "target/components/js-chat.wasm",
    },
    Lang {
        key: "python",
        name: "Python",
        echo: "target/components/py-echo.wasm",
        chat: "target/components/py-chat.wasm",
    },
];

/// Resident memory of a host holding idle connections that have each sent
/// one message.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IdleMemory {
    /// The host's RSS before connecting, in bytes.
    pub rss_before: u64,
    /// With every connection open, after each sent one message and got its
    /// answer, then held idle for two seconds.
    pub rss_after: u64,
    /// (after − before) ÷ connections.
    pub bytes_per_connection: f64,
}

/// Everything measured for one language.
#[derive(Clone, Debug, Serialize)]
pub struct LangResult {
    /// The language.
    pub lang: String,
    /// The echo component's size, in bytes.
    pub echo_bytes: u64,
    /// From start to listening, both components compiled (empty cache), s.
    pub cold_start_s: Vec<f64>,
    /// The same with the compile cache filled, s.
    pub cached_start_s: Vec<f64>,
    /// Echo runs.
    pub echo: Vec<EchoResult>,
    /// Chat runs (unpaced).
    pub chat: Vec<BroadcastResult>,
    /// Idle-memory runs.
    pub idle: Vec<IdleMemory>,
    /// One warm `on-message` of echo (criterion median), ns.
    pub invoke_ns: Option<f64>,
}

/// Where the programs and components are.
#[derive(Clone, Debug)]
pub struct Programs {
    /// The `wharf` binary.
    pub wharf: PathBuf,
    /// The repository root (the components are under `target/`).
    pub root: PathBuf,
}

/// A config serving `lang`'s echo on `/echo` and chat on `/chat`, with its
/// compile cache in `cache`; like `bench/wharf.toml`, it lets one address
/// open connections as fast as the host takes them.
fn config(lang: &Lang, root: &Path, dir: &Path, cache: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{}.toml", lang.key));
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstore = \"memory\"\ndata_dir = {data:?}\ncache_dir = {cache:?}\n\
         [admin]\nenabled = false\n\
         [limits]\nconnect_rate = 0\nmax_handshakes_per_ip = 1024\n\
         [plugins.echo]\ncomponent = {echo:?}\n[plugins.chat]\ncomponent = {chat:?}\n\
         [[routes]]\npath = \"/echo\"\nplugin = \"echo\"\n[[routes]]\npath = \"/chat\"\nplugin = \"chat\"\n",
        data = dir.join(format!("data-{}", lang.key)).display().to_string(),
        cache = cache.display().to_string(),
        echo = root.join(lang.echo).display().to_string(),
        chat = root.join(lang.chat).display().to_string(),
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Starts a host on `config`; it and the seconds it took to listen.
fn host(p: &Programs, config: &Path, core: Option<usize>) -> anyhow::Result<(Server, f64)> {
    let config = config.display().to_string();
    let started = Instant::now();
    let server = Server::start("wharf", &p.wharf, &["serve", "--config", &config], core, "wharf listening addr=")?;
    Ok((server, started.elapsed().as_secs_f64()))
}

/// Opens `conns` connections to `url`; each sends one message and waits for
/// its echo, all at once (the pool fills as far as the load asks); then
/// they are held idle for two seconds and the host's RSS is read.
async fn idle_after_burst(url: &str, conns: usize, pid: u32) -> anyhow::Result<IdleMemory> {
    let rss_before = procfs::rss_bytes(pid)?;
    let (sockets, _) = load::connect_many(url, conns).await?;
    let mut tasks = Vec::with_capacity(conns);
    for mut ws in sockets {
        tasks.push(tokio::spawn(async move {
            ws.send(Message::text("x".repeat(64))).await?;
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(_)))) => anyhow::Ok(ws),
                other => anyhow::bail!("no echo: {other:?}"),
            }
        }));
    }
    let mut held = Vec::with_capacity(conns);
    for t in tasks {
        held.push(t.await??);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = procfs::rss_bytes(pid)?;
    drop(held);
    Ok(IdleMemory {
        rss_before,
        rss_after,
        bytes_per_connection: rss_after.saturating_sub(rss_before) as f64 / conns.max(1) as f64,
    })
}

/// Runs the plan; prints progress to stderr. `invoke` holds the criterion
/// medians (benchmark name, ns), if the bench ran.
pub async fn run(plan: &Plan, programs: &Programs, invoke: &[(String, f64)]) -> anyhow::Result<Vec<LangResult>> {
    let dir = tempfile::tempdir()?;
    let window = Window { warmup: Duration::from_secs(1), measure: Duration::from_secs(plan.secs) };
    let core = plan.server_core;
    let mut results: Vec<LangResult> = LANGS
        .iter()
        .map(|l| LangResult {
            lang: l.name.into(),
            echo_bytes: std::fs::metadata(programs.root.join(l.echo)).map(|m| m.len()).unwrap_or(0),
            cold_start_s: Vec::new(),
            cached_start_s: Vec::new(),
            echo: Vec::new(),
            chat: Vec::new(),
            idle: Vec::new(),
            invoke_ns: invoke.iter().find(|(n, _)| *n == format!("{} warm text 64 B", l.key)).map(|(_, ns)| *ns),
        })
        .collect();
    for l in &LANGS {
        anyhow::ensure!(
            programs.root.join(l.echo).is_file() && programs.root.join(l.chat).is_file(),
            "{} and {} must be built first: `make build`",
            l.echo,
            l.chat
        );
    }

    // Start-up: each run compiles into a new cache, then starts again on it.
    for run in 0..plan.runs {
        for (l, r) in LANGS.iter().zip(results.iter_mut()) {
            let cache = dir.path().join(format!("cache-{}-{run}", l.key));
            let cfg = config(l, &programs.root, dir.path(), &cache)?;
            let (cold, cold_s) = host(programs, &cfg, core)?;
            drop(cold);
            let (cached, cached_s) = host(programs, &cfg, core)?;
            drop(cached);
            eprintln!("start {:<10} run {}: cold {cold_s:.2} s, cached {cached_s:.2} s", l.name, run + 1);
            r.cold_start_s.push(cold_s);
            r.cached_start_s.push(cached_s);
        }
    }

    // Throughput: one host per language (cached), alive side by side.
    let cache = dir.path().join("cache");
    let mut hosts = Vec::new();
    for l in &LANGS {
        let cfg = config(l, &programs.root, dir.path(), &cache)?;
        hosts.push(host(programs, &cfg, core)?.0);
    }
    for run in 0..plan.runs {
        for ((l, r), h) in LANGS.iter().zip(results.iter_mut()).zip(&hosts) {
            let e = load::echo(&h.url("/echo"), plan.conns, 64, 1, window, Some(h.pid())).await?;
            eprintln!(
                "echo {:<10} conns={} run {}: {:>8.0} msg/s p99 {:>7.0} µs cpu {:.1} µs/msg errors {}",
                l.name,
                plan.conns,
                run + 1,
                e.msgs_per_s,
                e.latency.p99_us,
                e.cpu_us_per_msg,
                e.errors
            );
            r.echo.push(e);
            let subs = plan.conns.saturating_sub(1).max(1);
            let c = load::broadcast_across(&[&h.url("/chat")], load::CHAT, subs, 0, 64, window, Some(h.pid())).await?;
            eprintln!(
                "chat {:<10} members={} run {}: {:>8.0} deliveries/s ({:.0} messages/s) p99 {:>7.0} µs errors {}",
                l.name,
                subs + 1,
                run + 1,
                c.deliveries_per_s,
                c.published as f64 / plan.secs as f64,
                c.latency.p99_us,
                c.errors
            );
            r.chat.push(c);
        }
    }
    drop(hosts);

    // Memory: a fresh host per language and run, on the filled cache.
    for run in 0..plan.runs {
        for (l, r) in LANGS.iter().zip(results.iter_mut()) {
            let cfg = config(l, &programs.root, dir.path(), &cache)?;
            let (h, _) = host(programs, &cfg, core)?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let m = idle_after_burst(&h.url("/echo"), plan.idle_conns, h.pid()).await?;
            eprintln!(
                "idle {:<10} conns={} run {}: host {:.1} MiB, {:.2} KiB per connection",
                l.name,
                plan.idle_conns,
                run + 1,
                m.rss_before as f64 / (1 << 20) as f64,
                m.bytes_per_connection / 1024.0
            );
            r.idle.push(m);
        }
    }
    Ok(results)
}

/// The generated section of `BENCHMARKS.md`.
pub fn markdown(results: &[LangResult], plan: &Plan, machine: &str, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(
        s,
        "_Generated by `{command}` on {machine}: the `echo` and `chat` examples in each language on its own host \
         (release build, memory store), the languages alternating within each run; medians of {} runs of {} s. \
         Echo: {} connections, one 64-byte message in flight each. Chat: {} members of one room, one of them \
         publishing 64-byte messages as fast as the others take them (32 in flight); a delivery is one message \
         to one member; CPU is the host's, per published message. Memory: {} connections, each sends one \
         message and gets its echo, then all are idle._\n",
        plan.runs, plan.secs, plan.conns, plan.conns, plan.idle_conns
    );
    let mut header = "| | ".to_string();
    header += &results.iter().map(|r| r.lang.as_str()).collect::<Vec<_>>().join(" | ");
    let _ = writeln!(s, "{header} |");
    let _ = writeln!(s, "|---|{}", "---:|".repeat(results.len()));
    let row = |s: &mut String, name: &str, f: &dyn Fn(&LangResult) -> String| {
        let cells: Vec<String> = results.iter().map(f).collect();
        let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
    };
    let mb = |b: f64| format!("{:.1} MiB", b / (1 << 20) as f64);
    row(&mut s, "echo component", &|r| format!("{:.2} MB", r.echo_bytes as f64 / 1e6));
    row(&mut s, "cold start (echo + chat compiled)", &|r| format!("{:.2} s", med(&r.cold_start_s, |x| *x)));
    row(&mut s, "start from the compile cache", &|r| format!("{:.2} s", med(&r.cached_start_s, |x| *x)));
    row(&mut s, "echo: round trips/s", &|r| thousands(med(&r.echo, |x| x.msgs_per_s)));
    row(&mut s, "echo: host CPU per message", &|r| format!("{:.1} µs", med(&r.echo, |x| x.cpu_us_per_msg)));
    row(&mut s, "echo: p99", &|r| us(med(&r.echo, |x| x.latency.p99_us)));
    row(&mut s, "chat: deliveries/s", &|r| thousands(med(&r.chat, |x| x.deliveries_per_s)));
    row(&mut s, "chat: host CPU per published message", &|r| {
        format!("{:.1} µs", med(&r.chat, |x| if x.published > 0 { x.server.cpu_us / x.published as f64 } else { 0.0 }))
    });
    row(&mut s, "chat: p99 (publish to delivery)", &|r| us(med(&r.chat, |x| x.latency.p99_us)));
    row(&mut s, "host RSS, components loaded", &|r| mb(med(&r.idle, |x| x.rss_before as f64)));
    row(&mut s, &format!("RSS per idle connection ({} after a burst)", plan.idle_conns), &|r| {
        format!("{:.1} KiB", med(&r.idle, |x| x.bytes_per_connection) / 1024.0)
    });
    let rust = results.first().and_then(|r| r.invoke_ns);
    row(&mut s, "one warm on-message (criterion)", &|r| {
        r.invoke_ns.map_or("–".into(), |ns| format!("{:.2} µs", ns / 1000.0))
    });
    row(&mut s, "per-event cost over Rust", &|r| match (r.invoke_ns, rust) {
        (Some(ns), Some(base)) if r.lang != "Rust" => format!("{:.2} µs", (ns - base) / 1000.0),
        _ => "–".into(),
    });
    let _ = writeln!(s, "{END}");
    s
}
