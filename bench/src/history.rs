//! `make bench-history`: what channel history costs, in one run. The chat
//! example's fan-out (one publisher, many members of `room`, unpaced) on
//! four hosts side by side: the memory and the embedded store, each with
//! `room` keeping history and without; and how long a client that missed
//! 100 messages of a `rooms` room takes to get them, from the start of its
//! reconnection to the last recovered message. Medians written to
//! `BENCHMARKS.md` between its own markers.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::load::{self, BroadcastResult, CHAT, Window};
use crate::matrix::med;
use crate::server::Server;

/// Where the generated section starts in `BENCHMARKS.md`.
pub const BEGIN: &str = "<!-- make bench-history: begin -->";
/// Where it ends.
pub const END: &str = "<!-- make bench-history: end -->";
/// Longest one recovered message may take.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// How much to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Runs per point (interleaved over the hosts).
    pub runs: usize,
    /// Measured seconds per fan-out run.
    pub secs: f64,
    /// Members of the room.
    pub subs: usize,
    /// Messages a reconnecting client missed.
    pub missed: usize,
    /// The core the hosts are pinned to, if any.
    pub server_core: Option<usize>,
}

impl Plan {
    /// The points.
    pub fn full(server_core: Option<usize>) -> Plan {
        Plan { runs: 3, secs: 3.0, subs: 1000, missed: 100, server_core }
    }

    /// A moment of each, to check the harness.
    pub fn quick(server_core: Option<usize>) -> Plan {
        Plan { runs: 1, secs: 0.5, subs: 50, missed: 100, server_core }
    }
}

/// Every run of every point.
#[derive(Debug, Serialize)]
pub struct Results {
    /// (host name, fan-out runs).
    pub fanout: Vec<(String, Vec<BroadcastResult>)>,
    /// (store, milliseconds to recover the missed messages, per run).
    pub recovery_ms: Vec<(String, Vec<f64>)>,
}

/// One host: the chat example on `/chat`, the rooms example on `/rooms`
/// (whose `room:*` channels keep history), and `room` of chat keeping
/// history when `history` says so.
fn host(
    dir: &Path,
    wharf: &Path,
    components: &Path,
    store: &str,
    history: bool,
    core: Option<usize>,
) -> anyhow::Result<Server> {
    let name = format!("{store}, history {}", if history { "on" } else { "off" });
    let data = dir.join(format!("{store}-{history}"));
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\nstore = \"{store}\"\ndata_dir = {:?}\n[admin]\nenabled = false\n\
         [limits]\nconnect_rate = 0\nmax_handshakes_per_ip = 1024\nmax_connections = 20000\noutbound_queue = 100000\n\
         [plugins.chat]\ncomponent = {:?}\n[plugins.rooms]\ncomponent = {:?}\n\
         [[routes]]\npath = \"/chat\"\nplugin = \"chat\"\n[[routes]]\npath = \"/rooms\"\nplugin = \"rooms\"\n\
         [[channels]]\nmatch = \"room:*\"\nnamespace = \"rooms\"\nhistory_size = 1000\nhistory_ttl_ms = 600000\n",
        data.display().to_string(),
        components.join("chat.wasm").display().to_string(),
        components.join("rooms.wasm").display().to_string(),
    );
    if history {
        text += "[[channels]]\nmatch = \"room\"\nnamespace = \"chat\"\nhistory_size = 100\nhistory_ttl_ms = 600000\n";
    }
    let file = dir.join(format!("{store}-{history}.toml"));
    std::fs::write(&file, text)?;
    let config = file.to_str().unwrap_or_default();
    Server::start(&name, wharf, &["serve", "--config", config], core, "wharf listening addr=")
}

/// The next text message of `ws`, within [`RECV_TIMEOUT`].
async fn next_text(ws: &mut load::Ws) -> anyhow::Result<String> {
    load::next_text(ws, RECV_TIMEOUT).await
}

/// A rooms client's next message, parsed.
async fn next_json(ws: &mut load::Ws) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_str(&next_text(ws).await?)?)
}

/// Room `room` gets `missed` messages from a writer; then a client that had
/// seen the position before them reconnects: milliseconds from the start
/// of its connection to its last recovered message.
async fn recovery(server: &Server, room: &str, missed: usize) -> anyhow::Result<f64> {
    let (mut socks, _) = load::connect_many(&server.url(&format!("/rooms?room={room}&name=w")), 1).await?;
    let mut writer = socks.pop().expect("one connection");
    let welcome = next_json(&mut writer).await?;
    let (offset, epoch) =
        (welcome["offset"].as_u64().unwrap_or(0), welcome["epoch"].as_str().unwrap_or("").to_string());
    for i in 0..missed {
        writer.feed(Message::text(format!("{{\"text\":\"missed {i} {}\"}}", "x".repeat(40)))).await?;
    }
    writer.flush().await?;
    for _ in 0..missed {
        next_json(&mut writer).await?;
    }
    let started = Instant::now();
    let url = server.url(&format!("/rooms?room={room}&name=r&since={offset}&epoch={epoch}"));
    let (mut socks, _) = load::connect_many(&url, 1).await?;
    let mut reader = socks.pop().expect("one connection");
    let mut got = 0;
    while got < missed {
        let m = next_json(&mut reader).await?;
        anyhow::ensure!(m["type"] == "say", "a replay has every missed message first: {m}");
        got += 1;
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let welcome = next_json(&mut reader).await?;
    anyhow::ensure!(welcome["recovered"] == true && welcome["replayed"] == missed, "recovered everything: {welcome}");
    Ok(ms)
}

/// Runs the plan with the `wharf` binary and the components in `components`.
pub async fn run(plan: &Plan, wharf: &Path, components: &Path) -> anyhow::Result<Results> {
    let dir = tempfile::tempdir()?;
    let mut hosts = Vec::new();
    for store in ["memory", "embedded"] {
        for history in [false, true] {
            hosts.push(host(dir.path(), wharf, components, store, history, plan.server_core)?);
        }
    }
    let window = Window { warmup: Duration::from_millis(500), measure: Duration::from_secs_f64(plan.secs) };
    let mut fanout: Vec<(String, Vec<BroadcastResult>)> = hosts.iter().map(|h| (h.name.clone(), Vec::new())).collect();
    let mut recovery_ms: Vec<(String, Vec<f64>)> = vec![("memory".into(), Vec::new()), ("embedded".into(), Vec::new())];
    for run in 0..plan.runs {
        for (i, h) in hosts.iter().enumerate() {
            eprintln!("run {}/{}: fan-out to {} on {}", run + 1, plan.runs, plan.subs, h.name);
            let r = load::broadcast_across(&[&h.url("/chat")], CHAT, plan.subs, 0, 64, window, Some(h.pid())).await?;
            anyhow::ensure!(r.errors == 0, "{}: {} subscribers failed", h.name, r.errors);
            fanout[i].1.push(r);
        }
        for (j, h) in [&hosts[1], &hosts[3]].into_iter().enumerate() {
            recovery_ms[j].1.push(recovery(h, &format!("r{run}"), plan.missed).await?);
        }
    }
    Ok(Results { fanout, recovery_ms })
}

/// The generated section of `BENCHMARKS.md`.
pub fn markdown(r: &Results, plan: &Plan, machine: &str, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(
        s,
        "_Generated by `{command}` on {machine}: the chat example (release host), one publisher sending 64 B \
         messages to `room` as fast as its {} members take them (at most 32 in flight), on four hosts side by side; \
         medians of {} interleaved runs of {} s. \"history on\": `room` keeps its last 100 publications. Recovery: a \
         `rooms` client that missed {} messages reconnects with its last position; from the start of its connection \
         to the last recovered message._\n",
        plan.subs, plan.runs, plan.secs, plan.missed
    );
    let _ = writeln!(
        s,
        "| fan-out to {} | deliveries/s | vs history off | CPU µs per delivery | p99 latency ms |",
        plan.subs
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: |");
    for (i, (name, runs)) in r.fanout.iter().enumerate() {
        let base = med(&r.fanout[i - i % 2].1, |x| x.deliveries_per_s);
        let rate = med(runs, |x| x.deliveries_per_s);
        let _ = writeln!(
            s,
            "| {name} | {rate:.0} | {:.2}× | {:.2} | {:.1} |",
            rate / base,
            med(runs, |x| x.cpu_us_per_delivery),
            med(runs, |x| x.latency.p99_us / 1000.0)
        );
    }
    let _ = writeln!(s, "\n| recovery of {} missed messages | ms |", plan.missed);
    let _ = writeln!(s, "| --- | ---: |");
    for (store, runs) in &r.recovery_ms {
        let _ = writeln!(s, "| {store} | {:.1} |", med(runs, |x| *x));
    }
    let _ = writeln!(s, "\n{END}");
    s
}
