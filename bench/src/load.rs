//! The load modes. Every mode targets loopback only and is bounded in time
//! and in count; each returns what it measured.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use crate::procfs;
use crate::stats::Latency;

/// A client connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Most connections any mode opens (the open-file limit is 20,000).
pub const MAX_CONNECTIONS: usize = 19_500;
/// Longest any mode runs.
pub const MAX_RUN: Duration = Duration::from_secs(600);
/// Longest one reply may take before it counts as an error.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once while connecting.
const CONNECT_CONCURRENCY: usize = 256;

/// Refuses anything but a loopback `ws://` URL.
pub fn check_target(url: &str) -> anyhow::Result<()> {
    let host = url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow::anyhow!("not a ws:// URL: {url}"))?
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    anyhow::ensure!(
        name.starts_with("127.") || name == "localhost" || name == "[::1]",
        "only loopback targets are allowed: {url}"
    );
    Ok(())
}

/// Timing shared by the modes: warm-up, then the measured window.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Not measured.
    pub warmup: Duration,
    /// Measured.
    pub measure: Duration,
}

/// What the server process (and any processes below it) spent during a
/// measured window.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct ServerCost {
    /// CPU time (user + system) in the window, in microseconds.
    pub cpu_us: f64,
    /// Resident memory at the end, in bytes.
    pub rss_bytes: u64,
}

/// Reads the server's CPU before and after a window.
struct CpuMeter {
    pid: Option<u32>,
    start: Duration,
}

impl CpuMeter {
    fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter { pid, start: pid.and_then(|p| procfs::tree_cpu_time(p).ok()).unwrap_or_default() }
    }

    fn stop(self) -> ServerCost {
        let Some(pid) = self.pid else { return ServerCost::default() };
        let cpu = procfs::tree_cpu_time(pid).unwrap_or_default().saturating_sub(self.start);
        ServerCost { cpu_us: cpu.as_secs_f64() * 1e6, rss_bytes: procfs::rss_bytes(pid).unwrap_or(0) }
    }
}

/// The next text message of `ws`, within `timeout`.
pub async fn next_text(ws: &mut Ws, timeout: Duration) -> anyhow::Result<String> {
    loop {
        match tokio::time::timeout(timeout, ws.next()).await {
            Err(_) => anyhow::bail!("no message within {timeout:?}"),
            Ok(None) => anyhow::bail!("the connection closed"),
            Ok(Some(m)) => {
                if let Message::Text(t) = m? {
                    return Ok(t.to_string());
                }
            }
        }
    }
}

/// Opens `n` connections, at most [`CONNECT_CONCURRENCY`] handshakes at a
/// time; the connections and each handshake's duration.
pub async fn connect_many(url: &str, n: usize) -> anyhow::Result<(Vec<Ws>, Vec<Duration>)> {
    check_target(url)?;
    anyhow::ensure!(n <= MAX_CONNECTIONS, "at most {MAX_CONNECTIONS} connections");
    let mut out = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut pending = futures_util::stream::iter((0..n).map(|_| async {
        let t = Instant::now();
        let (ws, _) = tokio::time::timeout(REPLY_TIMEOUT, connect_async(url)).await??;
        anyhow::Ok((ws, t.elapsed()))
    }))
    .buffer_unordered(CONNECT_CONCURRENCY);
    while let Some(r) = pending.next().await {
        let (ws, t) = r?;
        out.push(ws);
        times.push(t);
    }
    Ok((out, times))
}

/// Result of the echo mode.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EchoResult {
    /// Round trips per second in the measured window.
    pub msgs_per_s: f64,
    /// Round-trip latency.
    pub latency: Latency,
    /// Replies that did not come, or connections that failed.
    pub errors: u64,
    /// The server's cost in the window.
    pub server: ServerCost,
    /// Server CPU per round trip, in microseconds.
    pub cpu_us_per_msg: f64,
}

/// Echo: `conns` connections each keep `depth` messages of `size` bytes in
/// flight (closed loop), for the warm-up and then the measured window.
pub async fn echo(
    url: &str,
    conns: usize,
    size: usize,
    depth: usize,
    window: Window,
    pid: Option<u32>,
) -> anyhow::Result<EchoResult> {
    echo_text(url, conns, "x".repeat(size), depth, window, pid).await
}

/// [`echo`] of text `payload`.
pub async fn echo_text(
    url: &str,
    conns: usize,
    payload: String,
    depth: usize,
    window: Window,
    pid: Option<u32>,
) -> anyhow::Result<EchoResult> {
    anyhow::ensure!(window.warmup + window.measure <= MAX_RUN, "runs are bounded to {MAX_RUN:?}");
    let depth = depth.clamp(1, 64);
    let (sockets, _) = connect_many(url, conns).await?;
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + window.warmup;
    let stop_at = measure_from + window.measure;
    let mut tasks = Vec::with_capacity(conns);
    for mut ws in sockets {
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let mut samples = Vec::new();
            let mut errors = 0u64;
            let mut sent: VecDeque<Instant> = VecDeque::with_capacity(depth);
            for _ in 0..depth {
                sent.push_back(Instant::now());
                ws.feed(Message::text(payload.clone())).await?;
            }
            ws.flush().await?;
            while Instant::now() < stop_at {
                match tokio::time::timeout(REPLY_TIMEOUT, ws.next()).await {
                    Ok(Some(Ok(Message::Text(_) | Message::Binary(_)))) => {}
                    Ok(Some(Ok(_))) => continue,
                    _ => {
                        errors += 1;
                        break;
                    }
                }
                let t = sent.pop_front().unwrap_or_else(Instant::now);
                if t >= measure_from && t < stop_at {
                    samples.push(t.elapsed());
                }
                sent.push_back(Instant::now());
                ws.send(Message::text(payload.clone())).await?;
            }
            let _ = ws.close(None).await;
            anyhow::Ok((samples, errors))
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let meter = CpuMeter::start(pid);
    tokio::time::sleep_until(stop_at.into()).await;
    let server = meter.stop();
    let (mut samples, mut errors) = (Vec::new(), 0);
    for t in tasks {
        match t.await? {
            Ok((s, e)) => {
                samples.extend(s);
                errors += e;
            }
            Err(_) => errors += 1,
        }
    }
    let n = samples.len() as f64;
    Ok(EchoResult {
        msgs_per_s: n / window.measure.as_secs_f64(),
        latency: Latency::of(&mut samples),
        errors,
        server,
        cpu_us_per_msg: if n > 0.0 { server.cpu_us / n } else { 0.0 },
    })
}

/// Result of the broadcast mode.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BroadcastResult {
    /// Messages delivered to subscribers per second in the measured window.
    pub deliveries_per_s: f64,
    /// Messages the publisher sent in the measured window.
    pub published: u64,
    /// From publish to delivery (sampled on every 16th subscriber).
    pub latency: Latency,
    /// The same, for subscribers on another host than the publisher (zero
    /// with one host).
    pub cross_host_latency: Latency,
    /// Subscribers that failed.
    pub errors: u64,
    /// The server's cost in the window.
    pub server: ServerCost,
    /// Server CPU per delivery, in microseconds.
    pub cpu_us_per_delivery: f64,
}

/// How a fan-out route delivers what the publisher sends.
#[derive(Clone, Copy, Debug)]
pub struct Fanout {
    /// What comes before the publisher's text in a delivered message.
    pub marker: &'static str,
    /// Whether the route greets each connection on open (the publisher
    /// waits for its greeting before publishing).
    pub greets: bool,
}

/// The `broadcast` example: a greeting, then `<id> says: <text>` to every
/// other connection.
pub const BROADCAST: Fanout = Fanout { marker: " says: ", greets: true };

/// The `chat` example: `anonymous: <text>` to every member of the room, the
/// sender too (the publisher's own copies are read and not counted).
pub const CHAT: Fanout = Fanout { marker: "anonymous: ", greets: false };

/// Broadcast fan-out: `subs` subscribers and one publisher on a route that
/// sends each message to every other connection. Paced: `rate` messages
/// per second; unpaced (`rate` = 0): as fast as the subscribers take them,
/// with at most `window` messages not yet delivered to everyone.
pub async fn broadcast(
    url: &str,
    subs: usize,
    rate: u32,
    size: usize,
    window: Window,
    pid: Option<u32>,
) -> anyhow::Result<BroadcastResult> {
    broadcast_across(&[url], BROADCAST, subs, rate, size, window, pid).await
}

/// [`broadcast`] with the subscribers spread evenly over several hosts of
/// one application (`urls`, one per host), on a route that delivers as
/// `fanout` says; the publisher is on the first.
pub async fn broadcast_across(
    urls: &[&str],
    fanout: Fanout,
    subs: usize,
    rate: u32,
    size: usize,
    window: Window,
    pid: Option<u32>,
) -> anyhow::Result<BroadcastResult> {
    const IN_FLIGHT: u64 = 32;
    anyhow::ensure!(window.warmup + window.measure <= MAX_RUN, "runs are bounded to {MAX_RUN:?}");
    anyhow::ensure!(!urls.is_empty(), "one host at least");
    let hosts = urls.len();
    let (mut publisher, _) = connect_many(urls[0], 1).await?;
    let mut publisher = publisher.pop().expect("one connection");
    // Subscriber i is on host i % hosts.
    let mut per_host = Vec::with_capacity(hosts);
    for (h, url) in urls.iter().enumerate() {
        let n = (h..subs).step_by(hosts).count();
        per_host.push(connect_many(url, n).await?.0.into_iter());
    }
    let sockets: Vec<(usize, Ws)> =
        (0..subs).map(|i| (i % hosts, per_host[i % hosts].next().expect("connected above"))).collect();
    let base = Instant::now();
    let start = base + Duration::from_millis(200);
    let measure_from = start + window.warmup;
    let stop_at = measure_from + window.measure;
    let delivered = Arc::new(AtomicU64::new(0));
    let delivered_in_window = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(subs);
    for (i, (host, mut ws)) in sockets.into_iter().enumerate() {
        let (delivered, in_window) = (delivered.clone(), delivered_in_window.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let sampled = (i / hosts).is_multiple_of(16);
            let end = stop_at + Duration::from_millis(500);
            while let Ok(Some(msg)) = tokio::time::timeout_at(end.into(), ws.next()).await {
                let Message::Text(t) = msg? else { continue };
                // "<marker><nanos since base> <padding>"; a greeting has no marker.
                let Some((_, body)) = t.as_str().split_once(fanout.marker) else { continue };
                let sent_ns: u64 = body.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
                delivered.fetch_add(1, Ordering::Relaxed);
                let sent = base + Duration::from_nanos(sent_ns);
                if sent >= measure_from && sent < stop_at {
                    in_window.fetch_add(1, Ordering::Relaxed);
                    if sampled {
                        samples.push(sent.elapsed());
                    }
                }
            }
            let _ = ws.close(None).await;
            anyhow::Ok((host, samples))
        }));
    }
    // Wait for the publisher's greeting to pass, then publish.
    if fanout.greets {
        let _ = tokio::time::timeout(REPLY_TIMEOUT, publisher.next()).await;
    }
    let (mut publisher, mut own) = publisher.split();
    // What the publisher gets back (its own messages, in a room) is read,
    // so that its queue never fills; it counts for nothing.
    let drain = tokio::spawn(async move {
        let end = stop_at + Duration::from_millis(500);
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(end.into(), own.next()).await {}
    });
    tokio::time::sleep_until(start.into()).await;
    let pad = "p".repeat(size.saturating_sub(24));
    let mut sent = 0u64;
    let mut published = 0u64;
    let mut meter = None;
    let interval = (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64));
    let mut next = Instant::now();
    while Instant::now() < stop_at {
        if meter.is_none() && Instant::now() >= measure_from {
            meter = Some(CpuMeter::start(pid));
        }
        match interval {
            Some(every) => {
                tokio::time::sleep_until(next.into()).await;
                next += every;
            }
            None => {
                // Closed loop: wait while too much is undelivered.
                while delivered.load(Ordering::Relaxed) + IN_FLIGHT * subs as u64 <= sent * subs as u64
                    && Instant::now() < stop_at
                {
                    tokio::task::yield_now().await;
                }
            }
        }
        let now = Instant::now();
        publisher.send(Message::text(format!("{} {pad}", (now - base).as_nanos()))).await?;
        sent += 1;
        if now >= measure_from && now < stop_at {
            published += 1;
        }
    }
    let server = meter.unwrap_or_else(|| CpuMeter::start(pid)).stop();
    let (mut samples, mut cross) = (Vec::new(), Vec::new());
    let mut errors = 0;
    for t in tasks {
        match t.await? {
            Ok((host, s)) => {
                if host != 0 {
                    cross.extend_from_slice(&s);
                }
                samples.extend(s);
            }
            Err(_) => errors += 1,
        }
    }
    let _ = publisher.close().await;
    drain.abort();
    let n = delivered_in_window.load(Ordering::Relaxed) as f64;
    Ok(BroadcastResult {
        deliveries_per_s: n / window.measure.as_secs_f64(),
        published,
        latency: Latency::of(&mut samples),
        cross_host_latency: Latency::of(&mut cross),
        errors,
        server,
        cpu_us_per_delivery: if n > 0.0 { server.cpu_us / n } else { 0.0 },
    })
}

/// Result of the burst mode.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct BurstResult {
    /// Messages the publisher sent.
    pub published: u64,
    /// Deliveries a lossless host makes: published × subscribers.
    pub expected: u64,
    /// Deliveries the subscribers received.
    pub delivered: u64,
    /// Subscribers the server closed (any close code) before they had all.
    pub closed: u64,
    /// Subscribers that failed otherwise (or timed out).
    pub errors: u64,
    /// Seconds from the first publish to the last delivery.
    pub secs: f64,
    /// Deliveries per second over that time.
    pub deliveries_per_s: f64,
    /// Publish to delivery, the slowest of all.
    pub max_latency_us: f64,
    /// The server's cost from the first publish to the last delivery.
    pub server: ServerCost,
    /// Server CPU per delivery, in microseconds.
    pub cpu_us_per_delivery: f64,
}

/// An unpaced burst: `messages` messages of `size` bytes published as fast
/// as the publisher can write them to the broadcast route, every one meant
/// for `subs` subscribers; counts what arrives (a subscriber stops at all
/// of them, at a close from the server, or after `quiet` without one).
pub async fn burst(
    url: &str,
    subs: usize,
    messages: u64,
    size: usize,
    quiet: Duration,
    pid: Option<u32>,
) -> anyhow::Result<BurstResult> {
    let (mut publisher, _) = connect_many(url, 1).await?;
    let mut publisher = publisher.pop().expect("one connection");
    let (sockets, _) = connect_many(url, subs).await?;
    let base = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(subs);
    for mut ws in sockets {
        let delivered = delivered.clone();
        tasks.push(tokio::spawn(async move {
            // (received, closed by the server, slowest, last arrival)
            let (mut got, mut closed, mut slowest, mut last) = (0u64, false, Duration::ZERO, base);
            let give_up = Instant::now() + MAX_RUN;
            while got < messages && Instant::now() < give_up {
                let msg = match tokio::time::timeout(quiet, ws.next()).await {
                    Ok(Some(Ok(m))) => m,
                    Ok(Some(Err(_)) | None) => break,
                    Err(_) => anyhow::bail!("nothing for {quiet:?} after {got} of {messages}"),
                };
                match msg {
                    Message::Text(t) => {
                        let Some((_, body)) = t.as_str().split_once(BROADCAST.marker) else { continue };
                        let sent_ns: u64 = body.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
                        last = Instant::now();
                        slowest = slowest.max(last - (base + Duration::from_nanos(sent_ns)));
                        got += 1;
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Message::Close(_) => {
                        closed = true;
                        break;
                    }
                    _ => {}
                }
            }
            let _ = ws.close(None).await;
            anyhow::Ok((got, closed, slowest, last))
        }));
    }
    let _ = tokio::time::timeout(REPLY_TIMEOUT, publisher.next()).await;
    let (mut publisher, mut own) = publisher.split();
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = own.next().await {} });
    let pad = "p".repeat(size.saturating_sub(24));
    let meter = CpuMeter::start(pid);
    let first = Instant::now();
    for _ in 0..messages {
        publisher.feed(Message::text(format!("{} {pad}", (Instant::now() - base).as_nanos()))).await?;
    }
    publisher.flush().await?;
    let mut result = BurstResult { published: messages, expected: messages * subs as u64, ..Default::default() };
    let mut last = first;
    for t in tasks {
        match t.await? {
            Ok((got, closed, slowest, at)) => {
                result.closed += u64::from(closed && got < messages);
                result.max_latency_us = result.max_latency_us.max(slowest.as_secs_f64() * 1e6);
                last = last.max(at);
            }
            Err(_) => result.errors += 1,
        }
    }
    result.server = meter.stop();
    let _ = publisher.close().await;
    drain.abort();
    result.delivered = delivered.load(Ordering::Relaxed);
    result.secs = (last - first).as_secs_f64();
    if result.secs > 0.0 {
        result.deliveries_per_s = result.delivered as f64 / result.secs;
    }
    if result.delivered > 0 {
        result.cpu_us_per_delivery = result.server.cpu_us / result.delivered as f64;
    }
    Ok(result)
}

/// Result of the idle mode.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IdleResult {
    /// Connections held.
    pub connections: usize,
    /// Handshakes per second while opening them (the connect storm).
    pub connects_per_s: f64,
    /// Handshake latency.
    pub connect_latency: Latency,
    /// Server RSS before connecting, in bytes.
    pub rss_before: u64,
    /// Server RSS with every connection open and idle, in bytes.
    pub rss_after: u64,
    /// (after − before) ÷ connections.
    pub bytes_per_connection: f64,
    /// before + 1,000,000 × bytes per connection.
    pub projected_1m_bytes: f64,
}

/// Connect storm, then idle: opens `conns` connections as fast as the
/// server takes them, holds them idle for `hold`, and reads the server's
/// RSS before and after.
pub async fn idle(url: &str, conns: usize, hold: Duration, pid: u32) -> anyhow::Result<IdleResult> {
    anyhow::ensure!(hold <= MAX_RUN, "runs are bounded to {MAX_RUN:?}");
    let rss_before = procfs::rss_bytes(pid)?;
    let t = Instant::now();
    let (held, mut times) = connect_many(url, conns).await?;
    let connects_per_s = conns as f64 / t.elapsed().as_secs_f64();
    tokio::time::sleep(hold).await;
    let rss_after = procfs::rss_bytes(pid)?;
    let per = rss_after.saturating_sub(rss_before) as f64 / conns.max(1) as f64;
    drop(held);
    Ok(IdleResult {
        connections: conns,
        connects_per_s,
        connect_latency: Latency::of(&mut times),
        rss_before,
        rss_after,
        bytes_per_connection: per,
        projected_1m_bytes: rss_before as f64 + per * 1e6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        assert!(check_target("ws://127.0.0.1:8080/echo").is_ok());
        assert!(check_target("ws://localhost:1/x").is_ok());
        assert!(check_target("ws://[::1]:1/x").is_ok());
        assert!(check_target("ws://example.com/echo").is_err());
        assert!(check_target("ws://10.0.0.1:80/").is_err());
        assert!(check_target("http://127.0.0.1/").is_err());
    }
}
