//! `make soak`: mixed traffic for 30 minutes against two `wharf serve`
//! processes side by side, one on the embedded store and one on a durable
//! Redis that is killed and restarted midway. The traffic: echo, chat
//! fan-out, counter increments, connections that open and close, a hot
//! reload every minute, and a handler made to misbehave every few seconds.
//! The host's resident memory is sampled every 10 s. A run passes when,
//! after warm-up, memory stays within 10 % of its lowest sample, no
//! acknowledged write is lost, every accepted connection got exactly one
//! `on-close`, every answer was the right one, and the host never panicked.
//! The figures go to `BENCHMARKS.md` between its own markers.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

use crate::load::Ws;
use crate::procfs;
use crate::redis::Redis;

/// Where the generated section starts in `BENCHMARKS.md`.
pub const BEGIN: &str = "<!-- make soak: begin -->";
/// Where it ends.
pub const END: &str = "<!-- make soak: end -->";

/// The admin token of the soaked hosts.
const TOKEN: &str = "soak-token";
/// Longest any one answer may take.
const ANSWER: Duration = Duration::from_secs(10);
/// How much the memory may grow over its lowest sample after warm-up.
const RSS_SPREAD: f64 = 0.10;
/// What the misbehaving connections ask of the `faulty` handler, in turn.
const MISDEEDS: [&str; 4] = ["panic", "spin", "bomb", "recurse"];

/// How long, and how often each thing happens.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The whole run.
    pub duration: Duration,
    /// Memory samples are this far apart.
    pub sample_every: Duration,
    /// Samples before this are not held to the spread.
    pub warmup: Duration,
    /// A hot reload this often.
    pub reload_every: Duration,
    /// A misbehaving handler this often.
    pub misbehave_every: Duration,
}

impl Plan {
    /// The full soak: 30 minutes.
    pub fn full(minutes: u64) -> Plan {
        Plan {
            duration: Duration::from_secs(minutes * 60),
            sample_every: Duration::from_secs(10),
            warmup: Duration::from_secs(300.min(minutes * 60 / 4)),
            reload_every: Duration::from_secs(60),
            misbehave_every: Duration::from_secs(3),
        }
    }

    /// Two minutes of the same, to try the harness.
    pub fn quick() -> Plan {
        Plan {
            duration: Duration::from_secs(120),
            sample_every: Duration::from_secs(5),
            warmup: Duration::from_secs(30),
            reload_every: Duration::from_secs(20),
            misbehave_every: Duration::from_secs(2),
        }
    }
}

/// What the soak needs on disk.
pub struct Programs {
    /// The `wharf` binary.
    pub wharf: PathBuf,
    /// The directory of the compiled components (examples and test guests).
    pub components: PathBuf,
}

/// What one host's run measured and whether it held.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    /// `embedded` or `redis`.
    pub store: String,
    /// Minutes of traffic.
    pub minutes: f64,
    /// Resident memory samples: (minutes since the start, MiB).
    pub rss_mib: Vec<(f64, f64)>,
    /// Lowest and highest sample after warm-up, MiB.
    pub rss_after_warmup: (f64, f64),
    /// Echo round trips answered correctly, and wrongly or not at all.
    pub echo_ok: u64,
    /// See [`Outcome::echo_ok`].
    pub echo_bad: u64,
    /// Answers from each version of the hot-reloaded handler, and wrong ones.
    pub versioned_v1: u64,
    /// See [`Outcome::versioned_v1`].
    pub versioned_v2: u64,
    /// See [`Outcome::versioned_v1`].
    pub versioned_bad: u64,
    /// Hot reloads that swapped, and that failed.
    pub reloads: u64,
    /// See [`Outcome::reloads`].
    pub reloads_failed: u64,
    /// Chat messages sent, each to every member.
    pub chat_sent: u64,
    /// Deliveries expected and received, and ones out of order.
    pub chat_expected: u64,
    /// See [`Outcome::chat_expected`].
    pub chat_received: u64,
    /// See [`Outcome::chat_expected`].
    pub chat_out_of_order: u64,
    /// Increments answered with their new value, and answered with an error
    /// or not at all.
    pub counter_acked: u64,
    /// See [`Outcome::counter_acked`].
    pub counter_errors: u64,
    /// The counter's value at the end (one more increment than all before).
    pub counter_final: i64,
    /// Connections opened and closed by the churn, and misbehaving ones
    /// closed with 1011 (of how many).
    pub churned: u64,
    /// See [`Outcome::churned`].
    pub misbehaved_1011: u64,
    /// See [`Outcome::churned`].
    pub misbehaved: u64,
    /// Connections the `faulty` route accepted, and `on-close` calls it ran
    /// (the host's metrics).
    pub faulty_accepted: u64,
    /// See [`Outcome::faulty_accepted`].
    pub faulty_closes: u64,
    /// Host log lines reporting a panic of the host itself.
    pub host_panics: u64,
    /// Redis restarts made.
    pub redis_restarts: u64,
    /// Every check that failed, in words; empty when the run held.
    pub failures: Vec<String>,
}

/// A `wharf serve` process logging to a file, killed when dropped.
struct Host {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Host {
    fn start(dir: &Path, store: &str, p: &Programs) -> anyhow::Result<Host> {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let component = |name: &str| p.components.join(format!("{name}.wasm")).display().to_string();
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {data:?}\nstore = {store:?}\n\
             [admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n\
             [limits]\nmemory_mib = 32\n",
            data = dir.join("data").display().to_string(),
        );
        for (name, file) in
            [("echo", "echo"), ("chat", "chat"), ("counter", "counter"), ("faulty", "faulty"), ("versioned", "echo_v1")]
        {
            text += &format!(
                "[plugins.{name}]\ncomponent = {:?}\n[[routes]]\npath = \"/{name}\"\nplugin = \"{name}\"\n",
                component(file)
            );
        }
        let config = dir.join("wharf.toml");
        std::fs::write(&config, text)?;
        let log = dir.join("host.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(&p.wharf)
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", p.wharf.display()))?;
        let mut host = Host { child, addr: "127.0.0.1:1".parse()?, admin, log };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(&host.log).unwrap_or_default();
            if let Some(rest) = text.split("wharf listening addr=").nth(1) {
                let addr: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
                host.addr = addr.parse()?;
                return Ok(host);
            }
            if let Some(status) = host.child.try_wait()? {
                anyhow::bail!("wharf exited with {status}: {text}");
            }
            anyhow::ensure!(Instant::now() < deadline, "wharf did not report its address: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// One admin request with the token: the status and the body.
    async fn admin(&self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(self.admin).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n",
            self.admin,
            body.len()
        );
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(body).await?;
        let mut resp = Vec::new();
        tokio::time::timeout(ANSWER, tcp.read_to_end(&mut resp)).await??;
        let resp = String::from_utf8_lossy(&resp).into_owned();
        let (head, body) = resp.split_once("\r\n\r\n").ok_or_else(|| anyhow::anyhow!("a partial answer"))?;
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok((status, body.to_string()))
    }

    /// The sum of the samples of metric `name` whose labels include all of `labels`.
    async fn metric(&self, name: &str, labels: &[&str]) -> anyhow::Result<f64> {
        let (_, text) = self.admin("GET", "/metrics", b"").await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

async fn open(url: &str) -> anyhow::Result<Ws> {
    Ok(tokio::time::timeout(ANSWER, connect_async(url)).await??.0)
}

/// The next text message, skipping control frames; `None` on close, error
/// or timeout.
async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match tokio::time::timeout(ANSWER, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            _ => return None,
        }
    }
}

/// The close code the server sends next (skipping anything else).
async fn close_code(ws: &mut Ws) -> Option<u16> {
    let deadline = Instant::now() + ANSWER;
    while let Ok(Some(frame)) = tokio::time::timeout_at(deadline.into(), ws.next()).await {
        match frame {
            Ok(Message::Close(Some(c))) => return Some(u16::from(c.code)),
            Ok(Message::Close(None)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
    None
}

struct Counts(Vec<AtomicU64>);

impl Counts {
    fn new(n: usize) -> Arc<Counts> {
        Arc::new(Counts((0..n).map(|_| AtomicU64::new(0)).collect()))
    }
    fn add(&self, i: usize) {
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }
    fn get(&self, i: usize) -> u64 {
        self.0[i].load(Ordering::Relaxed)
    }
}

/// Round trips on `conns` connections to `path`, one every `every`, until
/// `end`; `check(sent, answer)` classifies each answer (an index into the
/// counts, or `None` for a wrong one, counted last).
async fn round_trips(
    host: &Host,
    path: &str,
    conns: usize,
    every: Duration,
    end: Instant,
    kinds: usize,
    check: fn(&str, &str) -> Option<usize>,
) -> anyhow::Result<Arc<Counts>> {
    let counts = Counts::new(kinds + 1);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (url, counts) = (host.url(path), counts.clone());
        tasks.push(tokio::spawn(async move {
            let mut ws = open(&url).await?;
            let mut n = 0u64;
            while Instant::now() < end {
                let sent = format!("c{c}-{n}");
                n += 1;
                ws.send(Message::text(sent.clone())).await?;
                match next_text(&mut ws).await {
                    Some(got) => counts.add(check(&sent, &got).unwrap_or(kinds)),
                    None => {
                        counts.add(kinds);
                        ws = open(&url).await?;
                    }
                }
                tokio::time::sleep(every).await;
            }
            let _ = ws.close(None).await;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(counts)
}

/// Chat: `members` connections; one message every `every` from each in
/// turn, which every member must receive once, in order.
async fn chat(host: &Host, members: usize, every: Duration, end: Instant) -> anyhow::Result<(u64, u64, u64)> {
    let mut sinks = Vec::new();
    let mut readers = Vec::new();
    let out_of_order = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    for _ in 0..members {
        let (sink, mut stream) = open(&host.url("/chat")).await?.split();
        sinks.push(sink);
        let (out_of_order, received) = (out_of_order.clone(), received.clone());
        readers.push(tokio::spawn(async move {
            let mut last: Option<u64> = None;
            // Until the sender is done and nothing more arrives.
            while let Ok(Some(Ok(msg))) = tokio::time::timeout(ANSWER, stream.next()).await {
                let Message::Text(t) = msg else { continue };
                let seq = t.strip_prefix("anonymous: m").and_then(|s| s.parse::<u64>().ok());
                match (seq, last) {
                    (Some(s), Some(l)) if s != l + 1 => _ = out_of_order.fetch_add(1, Ordering::Relaxed),
                    (None, _) => _ = out_of_order.fetch_add(1, Ordering::Relaxed),
                    _ => {}
                }
                last = seq.or(last);
                received.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Each member joined the room in its on-open, before its handshake ended.
    let mut sent = 0u64;
    while Instant::now() < end {
        sinks[(sent as usize) % members].send(Message::text(format!("m{sent}"))).await?;
        sent += 1;
        tokio::time::sleep(every).await;
    }
    for r in readers {
        let _ = r.await;
    }
    for mut s in sinks {
        let _ = s.close().await;
    }
    Ok((sent, received.load(Ordering::Relaxed), out_of_order.load(Ordering::Relaxed)))
}

/// Connections that open, ask who they are and close, one every `every`;
/// and every `misbehave_every` one that makes the handler fail, which must
/// be closed with 1011. (churned, misbehaved, closed with 1011)
async fn churn(
    host: &Host,
    every: Duration,
    misbehave_every: Duration,
    end: Instant,
) -> anyhow::Result<(u64, u64, u64)> {
    let (mut churned, mut misbehaved, mut closed_1011) = (0, 0, 0);
    let mut next_misdeed = Instant::now() + misbehave_every;
    while Instant::now() < end {
        let mut ws = open(&host.url("/faulty")).await?;
        if Instant::now() >= next_misdeed {
            ws.send(Message::text(MISDEEDS[misbehaved as usize % MISDEEDS.len()])).await?;
            misbehaved += 1;
            if close_code(&mut ws).await == Some(1011) {
                closed_1011 += 1;
            }
            next_misdeed += misbehave_every;
        } else {
            ws.send(Message::text("whoami")).await?;
            anyhow::ensure!(next_text(&mut ws).await.is_some_and(|t| t.parse::<u64>().is_ok()), "whoami went wrong");
            ws.close(None).await?;
            while let Ok(Some(Ok(_))) = tokio::time::timeout(ANSWER, ws.next()).await {}
            churned += 1;
        }
        tokio::time::sleep(every).await;
    }
    Ok((churned, misbehaved, closed_1011))
}

/// Swaps the `versioned` plugin between its two versions every `every`.
async fn reloads(host: &Host, p: &Programs, every: Duration, end: Instant) -> anyhow::Result<(u64, u64)> {
    let versions =
        [std::fs::read(p.components.join("echo_v2.wasm"))?, std::fs::read(p.components.join("echo_v1.wasm"))?];
    let (mut ok, mut failed) = (0, 0);
    let mut next = Instant::now() + every;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        match host.admin("PUT", "/plugins/versioned", &versions[(ok + failed) as usize % 2]).await {
            Ok((200, _)) => ok += 1,
            other => {
                eprintln!("soak: a hot reload failed: {other:?}");
                failed += 1;
            }
        }
        next += every;
    }
    Ok((ok, failed))
}

/// Samples the host's resident memory every `every` until `end`.
async fn sample_rss(pid: u32, start: Instant, every: Duration, end: Instant) -> Vec<(f64, f64)> {
    let mut samples = Vec::new();
    let mut next = Instant::now();
    while next <= end {
        tokio::time::sleep_until(next.into()).await;
        if let Ok(rss) = procfs::rss_bytes(pid) {
            samples.push((start.elapsed().as_secs_f64() / 60.0, rss as f64 / (1 << 20) as f64));
        }
        next += every;
    }
    samples
}

/// Soaks one host on `store` (`embedded`, or `redis`: a durable Redis
/// killed and restarted halfway).
pub async fn run_one(plan: &Plan, p: &Programs, store: &str) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let mut redis = if store == "redis" { Some(Redis::start_durable(dir.path())?) } else { None };
    let backend = redis.as_ref().map_or("embedded".to_string(), |r| r.url.clone());
    let host = Host::start(dir.path(), &backend, p)?;
    let pid = host.child.id();
    let start = Instant::now();
    let end = start + plan.duration;
    eprintln!("soak {store}: host {pid} on {}, for {:?}", host.addr, plan.duration);

    let restart = async {
        let Some(redis) = redis.as_mut() else { return anyhow::Ok(0) };
        tokio::time::sleep(plan.duration / 2).await;
        eprintln!("soak {store}: killing redis-server, and starting it again 2 s later");
        redis.kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        redis.start_again()?;
        Ok(1)
    };
    let echo_check: fn(&str, &str) -> Option<usize> = |sent, got| (sent == got).then_some(0);
    let counter_check: fn(&str, &str) -> Option<usize> = |_, got| got.parse::<i64>().ok().map(|_| 0);
    let versioned_check: fn(&str, &str) -> Option<usize> = |sent, got| match got.split_once(':') {
        Some(("v1", rest)) if rest == sent => Some(0),
        Some(("v2", rest)) if rest == sent => Some(1),
        _ => None,
    };
    let (echo, versioned, chat, counter, churn, reloads, rss, restarts) = tokio::join!(
        round_trips(&host, "/echo", 20, Duration::from_millis(50), end, 1, echo_check),
        round_trips(&host, "/versioned", 5, Duration::from_millis(200), end, 2, versioned_check),
        chat(&host, 10, Duration::from_millis(100), end),
        round_trips(&host, "/counter", 4, Duration::from_millis(100), end, 1, counter_check),
        churn(&host, Duration::from_millis(200), plan.misbehave_every, end),
        reloads(&host, p, plan.reload_every, end),
        sample_rss(pid, start, plan.sample_every, end),
        restart,
    );
    let (echo, versioned, chat, counter, churn, reloads, restarts) =
        (echo?, versioned?, chat?, counter?, churn?, reloads?, restarts?);
    // An answer that is no number is an increment that was not acknowledged.
    let (counter_acked, counter_errors) = (counter.get(0), counter.get(1));

    // One more increment shows every acknowledged one.
    let mut ws = open(&host.url("/counter")).await?;
    ws.send(Message::text("x")).await?;
    let counter_final = next_text(&mut ws).await.and_then(|t| t.parse::<i64>().ok()).unwrap_or(-1);
    ws.close(None).await?;

    // Every faulty connection closed: each must have had one on-close.
    let accepted = host.metric("wharf_connections_total", &["route=\"/faulty\""]).await? as u64;
    let closes = || host.metric("wharf_handler_duration_seconds_count", &["plugin=\"faulty\"", "event=\"close\""]);
    let deadline = Instant::now() + ANSWER;
    let mut faulty_closes = closes().await? as u64;
    while faulty_closes < accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        faulty_closes = closes().await? as u64;
    }
    let log = std::fs::read_to_string(&host.log)?;
    let host_panics = log.lines().filter(|l| l.contains("panicked") && !l.contains("wharf::guest")).count() as u64;

    let after: Vec<f64> =
        rss.iter().filter(|(m, _)| *m * 60.0 >= plan.warmup.as_secs_f64()).map(|(_, mib)| *mib).collect();
    let lo = after.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = after.iter().copied().fold(0.0, f64::max);
    let mut o = Outcome {
        store: store.to_string(),
        minutes: plan.duration.as_secs_f64() / 60.0,
        rss_mib: rss,
        rss_after_warmup: (lo, hi),
        echo_ok: echo.get(0),
        echo_bad: echo.get(1),
        versioned_v1: versioned.get(0),
        versioned_v2: versioned.get(1),
        versioned_bad: versioned.get(2),
        reloads: reloads.0,
        reloads_failed: reloads.1,
        chat_sent: chat.0,
        chat_expected: chat.0 * 10,
        chat_received: chat.1,
        chat_out_of_order: chat.2,
        counter_acked,
        counter_errors,
        counter_final,
        churned: churn.0,
        misbehaved: churn.1,
        misbehaved_1011: churn.2,
        faulty_accepted: accepted,
        faulty_closes,
        host_panics,
        redis_restarts: restarts,
        failures: Vec::new(),
    };
    o.failures = judge(&o);
    Ok(o)
}

/// The checks a run must pass, each failure in words.
pub fn judge(o: &Outcome) -> Vec<String> {
    let mut f = Vec::new();
    let (lo, hi) = o.rss_after_warmup;
    if !(lo.is_finite() && hi <= lo * (1.0 + RSS_SPREAD)) {
        f.push(format!(
            "memory after warm-up went from {lo:.1} to {hi:.1} MiB (more than {:.0} %)",
            RSS_SPREAD * 100.0
        ));
    }
    if o.echo_bad > 0 || o.echo_ok == 0 {
        f.push(format!("{} echo round trips went wrong ({} right)", o.echo_bad, o.echo_ok));
    }
    if o.versioned_bad > 0 || (o.reloads >= 2 && (o.versioned_v1 == 0 || o.versioned_v2 == 0)) {
        f.push(format!(
            "the reloaded handler answered v1 {}, v2 {}, wrongly {}",
            o.versioned_v1, o.versioned_v2, o.versioned_bad
        ));
    }
    if o.reloads_failed > 0 {
        f.push(format!("{} hot reloads failed", o.reloads_failed));
    }
    if o.chat_received != o.chat_expected || o.chat_out_of_order > 0 {
        f.push(format!(
            "chat delivered {} of {} ({} out of order)",
            o.chat_received, o.chat_expected, o.chat_out_of_order
        ));
    }
    if o.counter_final < o.counter_acked as i64 + 1 {
        f.push(format!("the counter ended at {} after {} acknowledged increments", o.counter_final, o.counter_acked));
    }
    if o.faulty_closes != o.faulty_accepted {
        f.push(format!("{} connections accepted, {} on-close calls", o.faulty_accepted, o.faulty_closes));
    }
    if o.misbehaved_1011 != o.misbehaved {
        f.push(format!("{} of {} misbehaving handlers closed with 1011", o.misbehaved_1011, o.misbehaved));
    }
    if o.host_panics > 0 {
        f.push(format!("the host logged {} panics", o.host_panics));
    }
    f
}

/// The section of `BENCHMARKS.md`.
pub fn markdown(outcomes: &[Outcome], plan: &Plan, command: &str, machine: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(s, "## Soak (`{command}`)\n");
    let _ = writeln!(
        s,
        "Generated by `{command}` on {machine}: {:.0} minutes of mixed traffic against each host, side by side \
         (20 echo connections at 20 round trips/s each, 10 chat members with 10 messages/s fanned out to all, \
         4 counter clients at 10 increments/s each, a connection opened and closed every 200 ms, a handler made \
         to panic, spin, exhaust its memory or its stack every {} s, a hot reload every {} s; instances capped at \
         32 MiB). The Redis host's `redis-server` (append-only, fsync on every write) is killed and restarted \
         halfway. Memory is the host's resident set, sampled every {} s; warm-up is the first {} s.\n",
        outcomes.first().map_or(0.0, |o| o.minutes),
        plan.misbehave_every.as_secs(),
        plan.reload_every.as_secs(),
        plan.sample_every.as_secs(),
        plan.warmup.as_secs(),
    );
    let _ = write!(s, "| | ");
    let _ = writeln!(s, "{} |", outcomes.iter().map(|o| o.store.as_str()).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(outcomes.len()));
    let row = |s: &mut String, name: &str, f: &dyn Fn(&Outcome) -> String| {
        let cells: Vec<String> = outcomes.iter().map(f).collect();
        let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
    };
    row(&mut s, "verdict", &|o| if o.failures.is_empty() { "held".into() } else { o.failures.join("; ") });
    row(&mut s, "resident memory after warm-up, lowest – highest (MiB)", &|o| {
        format!("{:.1} – {:.1} (+{:.1} %)", o.rss_after_warmup.0, o.rss_after_warmup.1, spread(o))
    });
    row(&mut s, "resident memory, first and last sample (MiB)", &|o| {
        let first = o.rss_mib.first().map_or(0.0, |x| x.1);
        let last = o.rss_mib.last().map_or(0.0, |x| x.1);
        format!("{first:.1}, {last:.1}")
    });
    row(&mut s, "echo round trips right / wrong", &|o| format!("{} / {}", o.echo_ok, o.echo_bad));
    row(&mut s, "chat deliveries received / expected (out of order)", &|o| {
        format!("{} / {} ({})", o.chat_received, o.chat_expected, o.chat_out_of_order)
    });
    row(&mut s, "counter: acknowledged increments, errors, final value", &|o| {
        format!("{}, {}, {}", o.counter_acked, o.counter_errors, o.counter_final)
    });
    row(&mut s, "hot reloads (failed); answers v1 / v2 / wrong", &|o| {
        format!("{} ({}); {} / {} / {}", o.reloads, o.reloads_failed, o.versioned_v1, o.versioned_v2, o.versioned_bad)
    });
    row(&mut s, "connections opened and closed; misbehaving ones closed 1011", &|o| {
        format!("{}; {} of {}", o.churned, o.misbehaved_1011, o.misbehaved)
    });
    row(&mut s, "`faulty` connections accepted / `on-close` calls", &|o| {
        format!("{} / {}", o.faulty_accepted, o.faulty_closes)
    });
    row(&mut s, "host panics; Redis restarts", &|o| format!("{}; {}", o.host_panics, o.redis_restarts));
    let _ = writeln!(s, "\nMemory samples (minute: MiB):\n");
    for o in outcomes {
        let samples: Vec<String> = o.rss_mib.iter().step_by(6).map(|(m, mib)| format!("{m:.0}: {mib:.1}")).collect();
        let _ = writeln!(s, "- {}: {}", o.store, samples.join(", "));
    }
    let _ = writeln!(s, "{END}");
    s
}

fn spread(o: &Outcome) -> f64 {
    let (lo, hi) = o.rss_after_warmup;
    if lo > 0.0 { (hi / lo - 1.0) * 100.0 } else { 0.0 }
}

/// The CPU model, for the report.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{} ({cores} cores)", model.unwrap_or("an unknown CPU"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> Outcome {
        Outcome {
            store: "embedded".into(),
            rss_after_warmup: (40.0, 43.0),
            echo_ok: 10,
            versioned_v1: 3,
            versioned_v2: 3,
            reloads: 2,
            chat_sent: 5,
            chat_expected: 50,
            chat_received: 50,
            counter_acked: 9,
            counter_final: 10,
            misbehaved: 4,
            misbehaved_1011: 4,
            faulty_accepted: 20,
            faulty_closes: 20,
            ..Outcome::default()
        }
    }

    #[test]
    fn a_run_holds_only_when_every_check_does() {
        assert_eq!(judge(&held()), Vec::<String>::new());
        type Break = fn(&mut Outcome);
        let broken: [(&str, Break); 9] = [
            ("memory", |o| o.rss_after_warmup.1 = 45.0),
            ("echo", |o| o.echo_bad = 1),
            ("reloaded", |o| o.versioned_v2 = 0),
            ("hot reloads", |o| o.reloads_failed = 1),
            ("chat", |o| o.chat_received = 49),
            ("counter", |o| o.counter_final = 9),
            ("on-close", |o| o.faulty_closes = 21),
            ("1011", |o| o.misbehaved_1011 = 3),
            ("panics", |o| o.host_panics = 1),
        ];
        for (what, breaks) in broken {
            let mut o = held();
            breaks(&mut o);
            let failures = judge(&o);
            assert_eq!(failures.len(), 1, "{what}: {failures:?}");
            assert!(failures[0].contains(what), "{what}: {failures:?}");
        }
        // Increments applied but answered with an error (a deadline) are no loss.
        assert!(judge(&Outcome { counter_final: 15, ..held() }).is_empty());
    }
}
